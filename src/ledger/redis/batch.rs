//! Debits against one Redis are batched: callers queue them, and one task
//! sends whatever queued while earlier calls were in flight as a single
//! script call (each debit in it still atomic and in order). Under load this
//! turns dozens of script calls, replies and wake-ups into one; a lone debit
//! goes out at once. A Redis Cluster gets one debit per call (a script may
//! only touch one slot), so it has no batcher.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::debit::{DebitArgs, Failure};
use super::Core;
use crate::ledger::{DebitOutcome, LedgerError, LimitTable, PlanTable};

/// Debits per script call, at most.
const MAX_BATCH: usize = 64;
/// Batches in flight at once; further debits queue and form the next batch.
const MAX_IN_FLIGHT: usize = 4;

/// The plan table and the plans' extra windows a debit was checked against.
#[derive(Default, PartialEq)]
pub(super) struct Tables {
    pub plans: PlanTable,
    pub limits: LimitTable,
}

struct PendingDebit {
    args: DebitArgs,
    plans: Arc<Tables>,
    reply: oneshot::Sender<Result<DebitOutcome, Failure>>,
}

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<PendingDebit>,
    /// The plan table of recent debits, shared by queued debits so a batch
    /// can check they agree without comparing tables.
    plans: Mutex<Arc<Tables>>,
}

impl Batcher {
    /// Starts the task that sends batches; it ends when the batcher is dropped.
    pub(super) fn start(core: Arc<Core>) -> Batcher {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(core, queued));
        Batcher {
            queue,
            plans: Mutex::new(Arc::default()),
        }
    }

    /// Queues one debit and waits for its outcome. `timeout` is the ledger's
    /// per-call timeout: the batch call has its own, this wait also covers
    /// the wait for a free slot. A debit given up on here that Redis runs
    /// later is refused by its deadline.
    pub(super) async fn submit(
        &self,
        args: DebitArgs,
        plans: &PlanTable,
        limits: &LimitTable,
        timeout: Duration,
    ) -> Result<DebitOutcome, Failure> {
        let plans = self.shared_plans(plans, limits);
        let (reply, replied) = oneshot::channel();
        self.queue
            .send(PendingDebit { args, plans, reply })
            .map_err(|_| {
                Failure::Answer(LedgerError::Unavailable("the debit queue is closed".into()))
            })?;
        match tokio::time::timeout(timeout * 2, replied).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Failure::Call(LedgerError::Unavailable(
                "the debit batch was dropped".into(),
            ))),
            Err(_) => Err(Failure::Call(LedgerError::Timeout)),
        }
    }

    /// The table behind an `Arc` shared with other debits that used an equal one.
    fn shared_plans(&self, plans: &PlanTable, limits: &LimitTable) -> Arc<Tables> {
        let mut current = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if current.plans != *plans || current.limits != *limits {
            *current = Arc::new(Tables {
                plans: plans.clone(),
                limits: limits.clone(),
            });
        }
        current.clone()
    }
}

/// Sends queued debits as batches until the ledger is dropped.
async fn run_batches(core: Arc<Core>, mut queued: mpsc::UnboundedReceiver<PendingDebit>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        // While every slot is busy, arrivals queue up and join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            run_batch(&core, batch).await;
            drop(slot);
        });
    }
}

async fn run_batch(core: &Core, mut batch: Vec<PendingDebit>) {
    // A caller that gave up has already answered its client: skip it.
    batch.retain(|pending| !pending.reply.is_closed());
    // Debits queued across a config reload may carry different tables.
    while !batch.is_empty() {
        let same_table = batch
            .iter()
            .take_while(|p| Arc::ptr_eq(&p.plans, &batch[0].plans))
            .count();
        let rest = batch.split_off(same_table);
        let group = std::mem::replace(&mut batch, rest);
        let args: Vec<&DebitArgs> = group.iter().map(|p| &p.args).collect();
        let tables = &group[0].plans;
        match core.run_debits(&args, &tables.plans, &tables.limits).await {
            Ok(outcomes) => {
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(outcome.map_err(Failure::Answer));
                }
            }
            Err(error) => {
                for pending in group {
                    let _ = pending.reply.send(Err(Failure::Call(error.clone())));
                }
            }
        }
    }
}
