//! simsweep's dataflow: the actix actors that run a job.
//!
//! | module | actor / what |
//! | --- | --- |
//! | [`batcher`] | Batcher: releases bounded batches, records commits, reports progress |
//! | [`sim_worker`] | SimWorker ×W: runs the model on a SyncArbiter thread |
//! | [`aggregator`] | Aggregator: replicates → one loss per parameter set and target |
//! | [`parquet_writer`] | ParquetWriter: buffers a batch's rows, commits its files |
//! | [`messages`] | every message between the actors; each actor depends on it, not on the others |
//! | [`error`] | [`RunError`] |
//!
//! [`run_dataflow`] wires them and runs them to the end on an actix `System` of its own.
//!
//! ```text
//!  Batcher ──RunChunk──► SimWorker ×W ──Replicates──► Aggregator ──PointsScored──► ParquetWriter
//!     ▲                        └─────────────────Replicates─────────────────────────►   │
//!     └──────────────────────────────── BatchFlushed ─────────────────────────────────┘
//! ```
//!
//! Tasks travel in chunks (`RunOptions::tasks_per_chunk`, one message per chunk each way), so
//! the per-message cost — a thread hand-off — is paid per chunk, not per simulation.
//!
//! Bounds: the Batcher hands out at most `RunOptions::max_tasks_in_flight` tasks and keeps at
//! most `max_open_batches` batches open; the Aggregator's and the writer's mailboxes hold at
//! most `mailbox_capacity` messages and every send to them waits for room. Replicate outputs
//! held at any time ≤ `max_open_batches × batch_size × R` (open batches in the writer; the
//! Aggregator holds a subset of the same, shared, buffers) — independent of the sweep's size.

pub mod aggregator;
pub mod batcher;
pub mod error;
pub mod messages;
pub mod parquet_writer;
pub mod sim_worker;

use std::sync::Arc;

use actix::prelude::*;
use simsweep_engine::output::{Manifest, OutputLayout};
use simsweep_engine::plan::Planner;
use simsweep_engine::progress::{
    CancelToken, InFlightCounters, Progress, ProgressObserver, RunOptions,
};
use simsweep_engine::spec::Job;

pub use batcher::Outcome;
pub use error::RunError;

/// Runs `job` from where `manifest` says it is to the end (or until `cancel`), on an actix
/// `System` started for the purpose on the calling thread.
///
/// `planner` must already know the committed ranges of `manifest`. Call from a thread that is
/// not inside an async runtime (in an async host: `spawn_blocking`).
///
/// # Errors
/// [`RunError::System`] when the actor system cannot run. Failures inside the dataflow are in
/// [`Outcome::error`], with the manifest as last committed.
pub fn run_dataflow(
    job: Arc<Job>,
    layout: OutputLayout,
    manifest: Manifest,
    planner: Planner,
    progress: Progress,
    options: &RunOptions,
    observer: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
) -> Result<Outcome, RunError> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    // Each SimWorker holds a sender; all dropped = every worker thread has released what it held.
    let (alive_tx, alive_rx) = crossbeam_channel::bounded::<()>(0);
    let simulator = job.simulator().clone();
    let hard_stop = cancel.clone();
    // The caller's `job` span: every actor enters it, so every log line names the job.
    let span = tracing::Span::current();
    let watchdog: Arc<std::sync::Mutex<Option<&'static str>>> = Arc::default();
    let system = System::new();
    let options = options.clone();
    let watched = watchdog.clone();
    system.block_on(async move {
        let batcher_ctx: Context<batcher::Batcher> = Context::new();
        let batcher_addr = batcher_ctx.address();
        let capacity = options.mailbox_capacity.get();
        let counters = Arc::new(InFlightCounters::default());

        let writer_job = job.clone();
        let writer_layout = layout.clone();
        let flushed = batcher_addr.clone().recipient();
        let failed = batcher_addr.clone().recipient();
        let writer_options = options.clone();
        let writer_counters = counters.clone();
        let writer_span = span.clone();
        // Outputs begun by engines of manifest format 2 or older have no `loss_se` column.
        let loss_se = manifest.format_version >= 3;
        let writer =
            parquet_writer::ParquetWriter::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                parquet_writer::ParquetWriter::new(
                    &writer_job,
                    writer_layout,
                    flushed,
                    failed,
                    capacity,
                    &writer_options,
                    writer_counters,
                    writer_span,
                    loss_se,
                )
            });
        let agg_job = job.clone();
        let agg_writer = writer.clone().recipient();
        let agg_counters = counters.clone();
        let agg_span = span.clone();
        let panic_in = options.panic_in;
        let aggregator =
            aggregator::Aggregator::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                aggregator::Aggregator::new(
                    agg_job,
                    agg_writer,
                    capacity,
                    agg_counters,
                    panic_in,
                    agg_span,
                )
            });
        watch(
            &watched,
            [
                (
                    "the Batcher",
                    Box::new({
                        let a = batcher_addr.clone();
                        move || a.connected()
                    }) as Box<dyn Fn() -> bool>,
                ),
                (
                    "the Aggregator",
                    Box::new({
                        let a = aggregator.clone();
                        move || a.connected()
                    }),
                ),
                (
                    "the ParquetWriter",
                    Box::new({
                        let a = writer.clone();
                        move || a.connected()
                    }),
                ),
            ],
        );
        let worker_job = job.clone();
        let worker_counters = counters.clone();
        let worker_cancel = cancel.clone();
        let workers = SyncArbiter::start_with_thread_builder(
            options.workers.get(),
            || std::thread::Builder::new().name("simsweep-sim-worker".into()),
            move || {
                sim_worker::SimWorker::new(
                    worker_job.clone(),
                    aggregator.clone().recipient(),
                    writer.clone().recipient(),
                    worker_counters.clone(),
                    worker_cancel.clone(),
                    panic_in,
                    alive_tx.clone(),
                    span.clone(),
                )
            },
        );
        batcher_ctx.run(batcher::Batcher::new(batcher::BatcherParts {
            job,
            planner,
            workers: workers.recipient(),
            layout,
            manifest,
            observer,
            cancel,
            max_in_flight: options.max_tasks_in_flight(),
            chunk_len: options.chunk_len(),
            max_buffer_bytes: options.max_buffer_bytes,
            counters,
            workers_count: options.workers.get(),
            progress,
            done: done_tx,
            panic_in,
            job_id: options.job_id.as_deref().unwrap_or_default().into(),
        }));
    });
    system.run().map_err(RunError::System)?;
    let died = watchdog.lock().unwrap_or_else(|e| e.into_inner()).take();
    let outcome = done_rx.try_recv();
    // The system has stopped: its worker threads end once idle, each releasing what it held
    // (an external model's worker process). Wait for them, so nothing of the run outlives it —
    // except, after a hard stop or a failure, a simulation that cannot be killed (a built-in
    // one): its thread ends on its own, its result discarded.
    let clean = matches!(&outcome, Ok(o) if o.error.is_none()) && !hard_stop.is_cancelled_now();
    if !clean {
        simulator.abort();
    }
    let wait = if clean { WORKERS_END_WAIT } else { WORKERS_END_WAIT_HARD };
    if alive_rx.recv_timeout(wait) != Err(crossbeam_channel::RecvTimeoutError::Disconnected) {
        tracing::warn!(
            seconds = wait.as_secs_f64(),
            "a simulation thread has not ended; it is left to end on its own"
        );
    }
    let internal = |part: &'static str| RunError::Internal {
        part,
        message: "it stopped unexpectedly (a panic; its message is on stderr)".to_string(),
    };
    match outcome {
        // A stage that died shows in the outcome as an unreachable mailbox: name it.
        Ok(mut outcome) => {
            if let (Some(RunError::Mailbox(_)), Some(part)) = (&outcome.error, died) {
                outcome.error = Some(internal(part));
            }
            Ok(outcome)
        }
        Err(_) => Err(internal(died.unwrap_or("the Batcher"))),
    }
}

/// After a run that ended cleanly, the longest wait for its worker threads to end (they are idle;
/// each gives its external worker process up to its shutdown grace).
const WORKERS_END_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The same after a hard stop or a failure (the rest of
/// [`simsweep_engine::progress::HARD_STOP_SECONDS`]).
const WORKERS_END_WAIT_HARD: std::time::Duration = std::time::Duration::from_millis(500);

/// How often the watchdog looks at the stages.
const WATCHDOG_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Watches the stages from the system's own arbiter: when one stops without the run ending (a
/// panic inside it — tokio keeps the runtime going), records which and stops the system, so
/// that `run` returns an error within [`WATCHDOG_INTERVAL`] instead of waiting forever.
fn watch<const N: usize>(
    died: &Arc<std::sync::Mutex<Option<&'static str>>>,
    stages: [(&'static str, Box<dyn Fn() -> bool>); N],
) {
    let died = died.clone();
    actix::spawn(async move {
        loop {
            actix::clock::sleep(WATCHDOG_INTERVAL).await;
            if let Some((part, _)) = stages.iter().find(|(_, alive)| !alive()) {
                let mut slot = died.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(part);
                System::current().stop();
                return;
            }
        }
    });
}
