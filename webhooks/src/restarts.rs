//! How the background loops (deliveries, callbacks) live through a store that goes away: a
//! run that ended because the store was unavailable is started again after a wait (100 ms,
//! doubling up to 5 s), and the new run takes back the loop's own leases; shutdown and any
//! other error end the loop.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;

/// The restart policy of one loop.
pub(crate) struct Restarts {
    /// What the loop is, for logs ("delivery", "callback").
    what: &'static str,
    delay: Duration,
}

impl Restarts {
    pub(crate) fn new(what: &'static str) -> Self {
        Restarts {
            what,
            delay: Duration::from_millis(100),
        }
    }

    /// After a run that ended with `result`; `stopping` says it ended on shutdown (which
    /// has then completed and must not be polled again). `Some`: the loop ends with that;
    /// `None`: run again (the wait is over).
    pub(crate) async fn after(
        &mut self,
        result: Result<()>,
        stopping: bool,
        shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Option<Result<()>> {
        match result {
            // Stopping, and the store is gone: what the loop held stays leased to this
            // node, which takes it back when it starts again (or others once the leases
            // expire). Nothing is lost; the shutdown itself went as asked.
            Err(e) if stopping && e.is_unavailable() => {
                tracing::warn!(error = %e, "the {} loop stopped without giving back what it held: the store is unavailable", self.what);
                Some(Ok(()))
            }
            other if stopping => Some(other),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, retry_in = ?self.delay, "the store is unavailable; the {} loop waits", self.what);
                tokio::select! {
                    () = shutdown => return Some(Ok(())),
                    () = tokio::time::sleep(self.delay) => {}
                }
                self.delay = (self.delay * 2).min(Duration::from_secs(5));
                None
            }
            other => Some(other),
        }
    }
}
