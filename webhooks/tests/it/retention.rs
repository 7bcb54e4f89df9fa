//! Retention of deliveries: `hookspool.deliveries` gets the options' periods at every open
//! (done 3 days and dead 30 days by default), and the retention pass removes delivered and
//! dead deliveries once those periods are over, counted by phase. The store's manual clock
//! steps through the days.

use std::time::Duration;

use hookspool::{Phase, QueueId, Retain};
use hookspool_webhooks::{
    DEFAULT_DELIVERIES_RETAIN, DELIVERIES_QUEUE, Hooks, HooksOptions, OutcomeKind, SubscribeOptions,
};

use crate::delivery::{config, start_with};
use crate::support::receiver;

#[tokio::test]
async fn delivered_and_dead_deliveries_go_after_their_periods() {
    let mut ok = receiver(200).await;
    let mut refusing = receiver(400).await;
    let mut cfg = config(&[5]);
    cfg.retry_client_errors = false;
    let mut run = start_with(cfg, HooksOptions::default()).await;
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let store = run.hooks.store().clone();
    assert_eq!(
        store.queue(&deliveries).await.unwrap().unwrap().retain,
        DEFAULT_DELIVERIES_RETAIN
    );
    for (event, url) in [("a.done", &ok.url), ("b.dead", &refusing.url)] {
        run.hooks
            .subscribe(event, url, SubscribeOptions::default())
            .await
            .unwrap();
        run.hooks.fire(event, b"{}".to_vec()).await.unwrap();
    }
    let mut kinds = vec![run.outcome().await.kind, run.outcome().await.kind];
    kinds.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kinds, [OutcomeKind::Dead, OutcomeKind::Delivered]);
    ok.next().await;
    refusing.next().await;
    run.stop().await;

    let count = async |phase: &Phase| store.count_phase(&deliveries, phase).await.unwrap();
    assert_eq!(
        (count(&Phase::DONE).await, count(&Phase::DEAD).await),
        (1, 1)
    );
    run.clock
        .advance(Duration::from_hours(72) - Duration::from_secs(1));
    assert_eq!(store.prune_all().await.unwrap(), 0, "not 3 days yet");
    run.clock.advance(Duration::from_secs(1));
    assert_eq!(
        store.prune_all().await.unwrap(),
        1,
        "3 days after it was delivered"
    );
    assert_eq!(
        (count(&Phase::DONE).await, count(&Phase::DEAD).await),
        (0, 1)
    );
    run.clock.advance(Duration::from_hours(720 - 72));
    assert_eq!(store.prune_all().await.unwrap(), 1, "30 days after it died");
    assert_eq!(store.count(&deliveries).await.unwrap(), 0);
    let pruned = store.pruned(&deliveries);
    assert_eq!(
        (pruned.get(&Phase::DONE), pruned.get(&Phase::DEAD)),
        (Some(&1), Some(&1))
    );

    // Opening again with other periods sets them on the queue; a bad one is refused.
    let options = HooksOptions {
        deliveries_retain: Retain::FOREVER,
        ..HooksOptions::default()
    };
    Hooks::open_with(store.clone(), options).await.unwrap();
    assert!(
        store
            .queue(&deliveries)
            .await
            .unwrap()
            .unwrap()
            .retain
            .is_forever()
    );
    let too_short = HooksOptions {
        callbacks_retain: Retain {
            done: Some(Duration::from_millis(10)),
            ..Retain::FOREVER
        },
        ..HooksOptions::default()
    };
    let err = Hooks::open_with(store.clone(), too_short)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("retain_done"), "{err}");
}
