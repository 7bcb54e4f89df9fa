//! `once`: a named write runs once per name, whatever runs at the same time.

use std::sync::Arc;
use std::time::Duration;

use super::{Factory, T0, at, ok};
use crate::{Backend, Error};

/// `once`: a backend shared by several processes offers it (one that is not may answer
/// `None`); the first caller's write runs and every caller, concurrent ones included, gets
/// its bytes; a failed write stores nothing; a name written `ttl` ago is written anew.
pub async fn once_runs_the_write_once_per_name<F: Factory>(f: &F) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let b = Arc::new(f.create().await);
    let ttl = Duration::from_mins(1);
    let probe = b
        .once("kit", "probe", ttl, T0, || async {
            Ok::<_, Error>(b"p".to_vec())
        })
        .await;
    let Some(first) = probe else {
        assert!(
            !b.capabilities().shared,
            "a backend shared by several processes must offer `once`"
        );
        return;
    };
    assert_eq!(
        ok(first, "once"),
        (b"p".to_vec(), false),
        "the first write runs"
    );

    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (b, runs) = (Arc::clone(&b), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            let write = || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Long enough for the others to arrive while it runs.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, Error>(vec![i])
            };
            b.once("kit", "shared", ttl, T0, write).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Some(r)) => answers.push(ok(r, "concurrent once")),
            Ok(None) => panic!("`once` answered None after answering Some"),
            Err(e) => panic!("a task panicked: {e}"),
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one write among 8 concurrent callers"
    );
    let value = answers[0].0.clone();
    assert!(
        answers.iter().all(|(v, _)| *v == value),
        "every caller gets the stored bytes"
    );
    assert_eq!(answers.iter().filter(|(_, replayed)| !replayed).count(), 1);

    let failed = b
        .once("kit", "fails", ttl, T0, || async {
            Err::<Vec<u8>, Error>(Error::invalid("the write failed"))
        })
        .await;
    assert_err!(
        failed.expect("offered"),
        Error::InvalidInput(_),
        "a failing write's error is returned"
    );
    let retried = b
        .once("kit", "fails", ttl, at(1), || async {
            Ok::<_, Error>(b"second".to_vec())
        })
        .await;
    assert_eq!(
        ok(retried.expect("offered"), "once after a failure"),
        (b"second".to_vec(), false),
        "a failed write stores nothing: the next caller writes"
    );

    let later = T0.saturating_add(ttl);
    let renewed = b
        .once("kit", "probe", ttl, later, || async {
            Ok::<_, Error>(b"q".to_vec())
        })
        .await;
    assert_eq!(
        ok(renewed.expect("offered"), "once after the ttl"),
        (b"q".to_vec(), false),
        "a name `ttl` old is written anew"
    );
    let other_space = b
        .once("kit2", "probe", ttl, later, || async {
            Ok::<_, Error>(b"r".to_vec())
        })
        .await;
    assert_eq!(
        ok(other_space.expect("offered"), "once in another space"),
        (b"r".to_vec(), false),
        "spaces are separate"
    );
}
