//! The messages between the actors, in one place: each actor depends on this module (and
//! sends to [`Recipient`]s of these messages), never on another actor's module. Only
//! [`crate::run_dataflow`] knows all the actors, to wire them.
//!
//! Data moves in chunks: one message carries the returns of one worker chunk (or the losses
//! they completed), so the cost of a message — a thread hand-off — is paid per chunk, not per
//! simulation.

use actix::prelude::*;
use simsweep_engine::collect::{PointLosses, SimReturn, SimTask};
use simsweep_engine::output::Dataset;
use simsweep_engine::plan::BatchRange;
use simsweep_engine::progress::TargetSummary;
use simsweep_engine::EngineError;

/// Run a chunk of replicates, in order. Answered once their returns are in the Aggregator's and
/// the ParquetWriter's mailboxes (not yet handled); the answer says whether both took them and
/// lists the batches whose tasks were skipped because the run is being stopped (those batches
/// cannot complete).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<u32>, StageStopped>")]
pub struct RunChunk(pub Vec<SimTask>);

/// Batch `batch` is committed: its files are in place and synced.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchFlushed {
    /// The batch.
    pub batch: BatchRange,
    /// Rows written per dataset.
    pub rows: Vec<(Dataset, u64)>,
    /// The batch's best parameter sets per target (for its commit record).
    pub best: Vec<TargetSummary>,
    /// Replicates in the batch.
    pub simulations: u64,
    /// Failed replicates in the batch.
    pub failed: u64,
    /// Time spent writing and committing, in seconds.
    pub seconds: f64,
}

/// Committing a batch failed; the run stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchFailed(pub EngineError);

/// The returns of one chunk of tasks, sent by a SimWorker to the Aggregator and to the
/// ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Replicates(pub Vec<SimReturn>);

/// The losses of the parameter sets that one [`Replicates`] message completed, sent by the
/// Aggregator to the ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PointsScored(pub Vec<PointLosses>);

/// A stage's mailbox closed while the run still needed it: the stage stopped (it panicked, or
/// the run is being torn down). Names the stage, e.g. `the Aggregator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageStopped(pub &'static str);

/// Puts `msg` in the bounded mailbox of the actor behind `to` without waiting for it to be
/// handled; blocks the calling thread only while that mailbox is full, until there is room.
///
/// This is the dataflow's backpressure: a sender is held up by a stage that is behind, not by
/// the thread hand-off of every message. The mailbox holds at most its capacity plus one
/// message per sender (actix's channel accepts the message that fills it, then parks that
/// sender until there is room). (`Addr::send` would wait for the handler to finish,
/// and the sender — a worker — would sit idle for a scheduling round trip per chunk.)
///
/// Returns once the message is in the mailbox (not once it is handled). Call it from a thread
/// that is not an actor's async arbiter (a SyncArbiter worker): blocking there would stall
/// that arbiter's other actors.
///
/// # Errors
/// [`MailboxError::Closed`] when the actor has stopped (before or while waiting for room).
pub fn deliver_blocking<M>(to: &Recipient<M>, msg: M) -> Result<(), MailboxError>
where
    M: Message<Result = ()> + Send + 'static,
{
    match to.try_send(msg) {
        Ok(()) => Ok(()),
        Err(SendError::Full(msg)) => futures_executor::block_on(to.send(msg)),
        Err(SendError::Closed(_)) => Err(MailboxError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    const CAPACITY: usize = 2;
    const MESSAGES: usize = 10;

    /// Handles one message per token received on `gate`.
    struct Gated {
        gate: crossbeam_channel::Receiver<()>,
        started: crossbeam_channel::Sender<()>,
        handled: Arc<AtomicUsize>,
    }

    impl Actor for Gated {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(CAPACITY);
            let _ = self.started.send(());
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Work;

    impl Handler<Work> for Gated {
        type Result = ();

        fn handle(&mut self, _msg: Work, _ctx: &mut Context<Self>) {
            let _ = self.gate.recv();
            self.handled.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits (up to 30 s) until `counter` reaches `at_least`.
    fn reaches(counter: &AtomicUsize, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counter.load(Ordering::SeqCst) < at_least {
            assert!(Instant::now() < deadline, "stuck at {}", counter.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn delivery_waits_only_while_the_mailbox_is_full() {
        let system = System::new();
        system.block_on(async {
            let (open, gate) = crossbeam_channel::unbounded();
            let (started_tx, started) = crossbeam_channel::bounded(1);
            let handled = Arc::new(AtomicUsize::new(0));
            let counted = handled.clone();
            let addr: Addr<Gated> = Gated::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                Gated { gate, started: started_tx, handled: counted }
            });
            started.recv_timeout(Duration::from_secs(10)).expect("the actor starts");
            let delivered = Arc::new(AtomicUsize::new(0));
            let counter = delivered.clone();
            let addr = addr.recipient();
            let sender = std::thread::spawn(move || {
                for _ in 0..MESSAGES {
                    deliver_blocking(&addr, Work).expect("the actor is alive");
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            // Nothing is handled yet: the sender gets as far as the mailbox lets it (the mailbox
            // full; one message in the handler, one more accepted as the sender parks) — an
            // event, waited for — and no further: a while later it has not passed that (a slow
            // machine can only make this check pass more easily, never fail it).
            reaches(&delivered, CAPACITY);
            std::thread::sleep(Duration::from_millis(300));
            let stalled = delivered.load(Ordering::SeqCst);
            assert_eq!(handled.load(Ordering::SeqCst), 0);
            assert!((CAPACITY..=CAPACITY + 2).contains(&stalled), "delivered {stalled}");
            // Once messages are handled, the sender goes on and every message gets through.
            for _ in 0..MESSAGES {
                open.send(()).unwrap();
            }
            sender.join().expect("the sender finishes");
            assert_eq!(delivered.load(Ordering::SeqCst), MESSAGES);
            let deadline = Instant::now() + Duration::from_secs(10);
            while handled.load(Ordering::SeqCst) < MESSAGES && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(handled.load(Ordering::SeqCst), MESSAGES);
        });
    }
}
