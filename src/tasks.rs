//! Work that holds money and may outlive its request: exchanges with
//! upstreams, refunds and settlements finished in the background.
//!
//! A client that leaves does not stop what its request owes the ledger (see
//! [`crate::charge`]), so that work runs where the request cannot cancel it.
//! [`Tasks`] counts it, so that a graceful shutdown waits for it instead of
//! letting the runtime's teardown drop it half-way:
//!
//! 1. until the drain timeout, shutdown waits for the count to reach zero
//!    ([`Tasks::idle`]);
//! 2. then it [cuts](Tasks::cut): exchanges still waiting for an upstream give
//!    up (their charges refund, docs/http-api.md "Shutdown");
//! 3. and it waits once more, at most [`SETTLE_AFTER_CUT`], for the refunds
//!    and settlements the cut started.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;

/// How long shutdown waits, after cutting, for the ledger calls the cut
/// started. Refunds retry for at most about this long (see
/// `charge::retry::RETRY`), so a reachable ledger finishes them all.
pub const SETTLE_AFTER_CUT: Duration = Duration::from_secs(5);

/// Counts money-holding work in flight; see the module doc.
pub struct Tasks {
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
    /// Set once shutdown waits: only then is reaching zero announced.
    draining: AtomicBool,
    idle: Notify,
    cut: watch::Sender<bool>,
}

impl Tasks {
    /// The count is also the `creditgate_charge_work_in_flight` gauge.
    pub fn new(metrics: Arc<Metrics>) -> Tasks {
        Tasks {
            metrics,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            cut: watch::Sender::new(false),
        }
    }

    /// Counts the caller's work until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.metrics.charge_work_started();
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Runs `work` on the runtime, counted until it ends. Returns false when
    /// there is no runtime left to run it (the process is tearing down).
    pub fn spawn<F>(self: &Arc<Self>, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let guard = self.enter();
        runtime.spawn(async move {
            work.await;
            drop(guard);
        });
        true
    }

    /// Resolves once nothing is in flight.
    pub async fn idle(&self) {
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Tells every exchange still waiting for its upstream to give up.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Resolves once [`Tasks::cut`] was called.
    pub fn cut_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut cut = self.cut.subscribe();
        async move {
            let _ = cut.wait_for(|cut| *cut).await;
        }
    }
}

/// One unit of work in flight; counted until dropped.
pub struct InFlight(Arc<Tasks>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let tasks = &self.0;
        tasks.metrics.charge_work_ended();
        if tasks.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && tasks.draining.load(Ordering::SeqCst)
        {
            tasks.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_guards_and_spawned_work() {
        let metrics = Arc::new(Metrics::default());
        let tasks = Arc::new(Tasks::new(metrics.clone()));
        tasks.idle().await;
        let guard = tasks.enter();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        assert!(tasks.spawn(async move {
            let _ = rx.await;
        }));
        assert_eq!(tasks.in_flight(), 2);
        assert!(metrics
            .render()
            .contains("creditgate_charge_work_in_flight 2"));
        let waiter = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.idle().await }
        });
        drop(guard);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        tx.send(()).unwrap();
        waiter.await.unwrap();
        assert_eq!(tasks.in_flight(), 0);
    }

    #[tokio::test]
    async fn cut_reaches_signals_taken_before_and_after() {
        let tasks = Arc::new(Tasks::new(Arc::default()));
        let before = tasks.cut_signal();
        assert!(!tasks.is_cut());
        tasks.cut();
        before.await;
        tasks.cut_signal().await;
        assert!(tasks.is_cut());
    }
}
