//! Inbound callbacks: channel handlers run over their queues with retries, on tokio's paused
//! clock (the store reads it, so retry delays pass in no real time).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hookspool::{MemoryBackend, NewItem, Phase, QueueId, Store, Timestamp, TokioClock};
use hookspool_webhooks::{
    CallbackConfig, CallbackOutcome, CallbackResult, Error, Handler, HandlerError, Hooks, Inbound,
    RetrySchedule, handler_fn,
};
use tokio::sync::{broadcast, mpsc, oneshot};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY: Duration = Duration::from_hours(24);

async fn hooks() -> Hooks<MemoryBackend> {
    let store = Store::new(MemoryBackend::new()).with_clock(TokioClock::starting_at(T0));
    Hooks::open(store).await.unwrap()
}

/// No jitter; a long poll interval, so only `receive` and the loop's own retry timers wake it.
fn config(delays: &[u64]) -> CallbackConfig {
    CallbackConfig {
        schedule: RetrySchedule {
            delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter: 0.0,
            ..RetrySchedule::standard()
        },
        poll_interval: DAY,
        ..CallbackConfig::default()
    }
}

/// A running callback loop and the means to stop it.
struct Loop {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<hookspool_webhooks::Result<()>>,
}

impl Loop {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn run(hooks: &Hooks<MemoryBackend>, config: CallbackConfig, handler: impl Handler) -> Loop {
    let callbacks = hooks
        .callbacks(config)
        .unwrap()
        .handle("orders", handler)
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(callbacks.run(async {
        let _ = stopped.await;
    }));
    Loop {
        stop: Some(stop),
        task,
    }
}

async fn next(results: &mut broadcast::Receiver<CallbackResult>) -> CallbackResult {
    tokio::time::timeout(2 * DAY, results.recv())
        .await
        .expect("a handler result within two (virtual) days")
        .unwrap()
}

fn orders() -> QueueId {
    QueueId::new("orders").unwrap()
}

/// A handler that reports each call and answers from a script of results.
fn scripted(
    script: Vec<Result<(), HandlerError>>,
) -> (impl Handler, mpsc::UnboundedReceiver<Inbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let script = Arc::new(script);
    let handler = handler_fn(move |msg: Inbound| {
        let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
        let result = script.get(n).cloned().unwrap_or(Ok(()));
        let _ = tx.send(msg);
        async move { result }
    });
    (handler, rx)
}

#[tokio::test(start_paused = true)]
async fn a_received_callback_reaches_its_handler_with_its_headers() {
    let hooks = hooks().await;
    let mut results = hooks.callback_results();
    let (handler, mut calls) = scripted(vec![]);
    let lp = run(&hooks, config(&[1]), handler).await;
    let key = hooks
        .receive(
            &orders(),
            NewItem::new(br#"{"id":7}"#.to_vec())
                .with_metadata("webhook_id", "msg_abc")
                .with_metadata("content_type", "application/json"),
        )
        .await
        .unwrap();
    let r = next(&mut results).await;
    assert_eq!(
        (r.key, r.attempt, r.outcome),
        (key, 1, CallbackOutcome::Handled)
    );
    let msg = calls.recv().await.unwrap();
    assert_eq!(msg.channel, orders());
    assert_eq!(msg.payload, br#"{"id":7}"#);
    assert_eq!(msg.webhook_id.as_deref(), Some("msg_abc"));
    assert_eq!(msg.content_type.as_deref(), Some("application/json"));
    assert_eq!(msg.received_at, T0);
    let v: serde_json::Value = msg.json().unwrap();
    assert_eq!(v["id"], 7);
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, Phase::DONE);
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_handler_is_retried_on_the_schedule_then_succeeds() {
    let hooks = hooks().await;
    let mut results = hooks.callback_results();
    let (handler, mut calls) = scripted(vec![
        Err(HandlerError::retry("database down")),
        Err(HandlerError::retry("still down")),
    ]);
    let lp = run(&hooks, config(&[60, 600]), handler).await;
    let key = hooks
        .receive(&orders(), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    let first = next(&mut results).await;
    assert_eq!(first.error.as_deref(), Some("database down"));
    let CallbackOutcome::Retrying { at } = first.outcome else {
        panic!("{first:?}")
    };
    assert_eq!(at.as_millis() - T0.as_millis(), 60_000, "first delay 60 s");
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, Phase::PENDING);
    assert_eq!(item.last_error.as_deref(), Some("database down"));

    let second = next(&mut results).await;
    let CallbackOutcome::Retrying { at: at2 } = second.outcome else {
        panic!("{second:?}")
    };
    assert_eq!(second.attempt, 2);
    assert_eq!(
        at2.as_millis() - at.as_millis(),
        600_000,
        "second delay 600 s"
    );
    let third = next(&mut results).await;
    assert_eq!(
        (third.attempt, third.outcome),
        (3, CallbackOutcome::Handled)
    );
    let attempts: Vec<u32> = std::iter::from_fn(|| calls.try_recv().ok())
        .map(|m| m.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3], "the handler saw each attempt's number");
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((item.phase, item.attempts), (Phase::DONE, 3));
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_keeps_failing_ends_dead_and_can_be_replayed() {
    let hooks = hooks().await;
    let mut results = hooks.callback_results();
    let fails = Arc::new(AtomicU32::new(3));
    let f = Arc::clone(&fails);
    let handler = handler_fn(move |_msg| {
        let failing = f
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        async move {
            if failing {
                Err(HandlerError::retry("no"))
            } else {
                Ok(())
            }
        }
    });
    let lp = run(&hooks, config(&[1, 1]), handler).await;
    let key = hooks
        .receive(&orders(), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let r = next(&mut results).await;
        assert!(
            matches!(r.outcome, CallbackOutcome::Retrying { .. }),
            "{attempt}: {r:?}"
        );
    }
    let last = next(&mut results).await;
    assert_eq!((last.attempt, last.outcome), (3, CallbackOutcome::Dead));
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, Phase::DEAD);
    assert_eq!(item.last_error.as_deref(), Some("no"));
    assert_eq!(fails.load(Ordering::SeqCst), 0);

    // Replayed, it runs again (the loop polls: replay does not wake it, so step time).
    hooks.store().replay(&orders(), key).await.unwrap();
    let again = next(&mut results).await;
    assert_eq!(again.outcome, CallbackOutcome::Handled);
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_goes_to_dead_at_once() {
    let hooks = hooks().await;
    let mut results = hooks.callback_results();
    let handler =
        handler_fn(|msg: Inbound| async move { msg.json::<serde_json::Value>().map(drop) });
    let lp = run(&hooks, config(&[1, 1, 1]), handler).await;
    let key = hooks
        .receive(&orders(), NewItem::new(b"not json".to_vec()))
        .await
        .unwrap();
    let r = next(&mut results).await;
    assert_eq!((r.attempt, r.outcome), (1, CallbackOutcome::Dead));
    assert!(r.error.unwrap().contains("not the expected JSON"));
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((item.phase, item.attempts), (Phase::DEAD, 1));
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_or_hanging_handler_counts_as_a_retryable_failure() {
    let hooks = hooks().await;
    let mut results = hooks.callback_results();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let handler = handler_fn(move |_msg| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => panic!("handler bug"),
                1 => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    });
    let cfg = CallbackConfig {
        timeout: Duration::from_secs(5),
        ..config(&[1, 1])
    };
    let lp = run(&hooks, cfg, handler).await;
    hooks
        .receive(&orders(), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    let r = next(&mut results).await;
    assert_eq!(r.error.as_deref(), Some("the handler panicked"));
    let r = next(&mut results).await;
    assert!(r.error.unwrap().contains("did not finish within 5s"));
    assert_eq!(next(&mut results).await.outcome, CallbackOutcome::Handled);
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn items_left_in_flight_by_a_crash_are_handled_on_restart() {
    let hooks = hooks().await;
    let store = hooks.store().clone();
    store
        .create_queue(hookspool::QueueConfig::new(orders()))
        .await
        .unwrap();
    let key = store
        .push(&orders(), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    // A previous process claimed it and died: the lease is long, but the loop takes it back.
    let claimed = store
        .claim(&orders(), "hookspool-callbacks", 1, DAY)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mut results = hooks.callback_results();
    let (handler, _calls) = scripted(vec![]);
    let lp = run(&hooks, config(&[1]), handler).await;
    let r = tokio::time::timeout(Duration::from_secs(1), results.recv())
        .await
        .expect("handled at start, not when the lease runs out")
        .unwrap();
    assert_eq!(
        (r.key, r.attempt, r.outcome),
        (key, 2, CallbackOutcome::Handled)
    );
    lp.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_off_a_slow_handler_after_the_grace_and_keeps_its_item() {
    let hooks = hooks().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = handler_fn(move |_msg| {
        let _ = started_tx.send(());
        std::future::pending::<Result<(), HandlerError>>()
    });
    let cfg = CallbackConfig {
        shutdown_grace: Duration::from_secs(3),
        timeout: DAY,
        ..config(&[1])
    };
    let lp = run(&hooks, cfg, handler).await;
    let key = hooks
        .receive(&orders(), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    started.recv().await.unwrap();
    let before = tokio::time::Instant::now();
    lp.stop().await;
    assert!(
        before.elapsed() >= Duration::from_secs(3),
        "the grace was given"
    );
    let item = hooks
        .store()
        .fetch_key(&orders(), key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, Phase::PENDING, "back to pending, not lost");
    assert_eq!(item.last_error.as_deref(), Some("cut off by shutdown"));
}

#[tokio::test(start_paused = true)]
async fn channels_are_checked_when_handlers_are_registered() {
    let hooks = hooks().await;
    let (h1, _) = scripted(vec![]);
    let e = hooks
        .callbacks(CallbackConfig::default())
        .unwrap()
        .handle("hookspool.subscriptions", h1)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    let (h2, _) = scripted(vec![]);
    let (h3, _) = scripted(vec![]);
    let e = hooks
        .callbacks(CallbackConfig::default())
        .unwrap()
        .handle("orders", h2)
        .await
        .unwrap()
        .handle("orders", h3)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already has a handler"), "{e}");
    let (h4, _) = scripted(vec![]);
    assert!(
        hooks
            .callbacks(CallbackConfig::default())
            .unwrap()
            .handle("bad id!", h4)
            .await
            .is_err()
    );
    let zero = CallbackConfig {
        concurrency: 0,
        ..CallbackConfig::default()
    };
    assert!(hooks.callbacks(zero).is_err());
    let no_poll = CallbackConfig {
        poll_interval: Duration::ZERO,
        ..CallbackConfig::default()
    };
    assert!(hooks.callbacks(no_poll).is_err(), "a zero poll would spin");
    assert!(
        hooks.store().queue(&orders()).await.unwrap().is_some(),
        "registering a handler created the channel's queue"
    );
}
