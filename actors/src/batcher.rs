//! Batcher: owns the plan. Releases the tasks of at most `max_open_batches` batches, keeps at
//! most `max_tasks_in_flight` tasks handed to the workers, counts a batch done only when the
//! ParquetWriter says it is committed ([`BatchFlushed`]), then records it in the manifest and
//! reports progress. Progress therefore never goes backwards.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use simsweep_engine::collect::{tasks_of, SimTask};
use simsweep_engine::output::{utc_now_rfc3339, CommittedBatch, Dataset, Manifest, OutputLayout};
use simsweep_engine::plan::{BatchRange, Planner};
use simsweep_engine::progress::{CancelToken, Progress, ProgressEvent, ProgressObserver};
use simsweep_engine::spec::Job;
use simsweep_engine::EngineError;

use crate::sim_worker::{RunTask, SimWorker};
use crate::RunError;

/// How often the Batcher looks at the cancel token when nothing else wakes it.
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Batch `batch` is committed: its files are in place and synced.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BatchFlushed {
    /// The batch.
    pub batch: BatchRange,
    /// Rows written per dataset.
    pub rows: Vec<(Dataset, u64)>,
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

/// How the dataflow ended, sent once to the caller of the run.
#[derive(Debug)]
pub struct Outcome {
    /// Progress at the end.
    pub progress: Progress,
    /// The manifest as last written.
    pub manifest: Manifest,
    /// Stopped by the cancel token before the end.
    pub cancelled: bool,
    /// The error that stopped the run, if any.
    pub error: Option<RunError>,
}

/// The Batcher.
pub struct Batcher {
    job: Arc<Job>,
    planner: Planner,
    workers: Addr<SimWorker>,
    layout: OutputLayout,
    manifest: Manifest,
    observer: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
    max_in_flight: usize,
    pending: VecDeque<SimTask>,
    in_flight: usize,
    progress: Progress,
    started: Instant,
    error: Option<RunError>,
    done: Option<crossbeam_channel::Sender<Outcome>>,
}

/// What the Batcher starts from.
pub struct BatcherParts {
    /// The job.
    pub job: Arc<Job>,
    /// The plan (already told what an earlier run committed).
    pub planner: Planner,
    /// The workers.
    pub workers: Addr<SimWorker>,
    /// Where files go.
    pub layout: OutputLayout,
    /// The manifest to extend.
    pub manifest: Manifest,
    /// Progress receiver.
    pub observer: Arc<dyn ProgressObserver>,
    /// Stop request.
    pub cancel: CancelToken,
    /// Most tasks handed out and not returned.
    pub max_in_flight: usize,
    /// Progress at start.
    pub progress: Progress,
    /// Where the outcome goes (capacity 1).
    pub done: crossbeam_channel::Sender<Outcome>,
}

impl Batcher {
    /// A Batcher from its parts.
    pub fn new(parts: BatcherParts) -> Self {
        Batcher {
            job: parts.job,
            planner: parts.planner,
            workers: parts.workers,
            layout: parts.layout,
            manifest: parts.manifest,
            observer: parts.observer,
            cancel: parts.cancel,
            max_in_flight: parts.max_in_flight.max(1),
            pending: VecDeque::new(),
            in_flight: 0,
            progress: parts.progress,
            started: Instant::now(),
            error: None,
            done: Some(parts.done),
        }
    }

    fn winding_down(&self) -> bool {
        self.error.is_some() || self.cancel.is_cancelled()
    }

    /// Releases tasks while the bounds allow, and ends the run when nothing is left to wait for.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.winding_down() && self.in_flight < self.max_in_flight {
            let Some(task) = self.pending.pop_front() else {
                match self.planner.next_batch() {
                    Some(batch) => {
                        tracing::debug!(batch = batch.index, points = ?batch.points, "batch released");
                        self.pending.extend(tasks_of(&self.job.sweep, &batch, self.job.replicates));
                        continue;
                    }
                    None => break,
                }
            };
            self.in_flight += 1;
            self.workers
                .send(RunTask(task))
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.in_flight -= 1;
                    let error = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) | Err(e) => Some(e),
                    };
                    if let Some(e) = error {
                        if act.error.is_none() {
                            act.error = Some(RunError::Mailbox(e));
                        }
                    }
                    act.pump(ctx);
                })
                .spawn(ctx);
        }
        let finished = self.planner.is_finished() && self.pending.is_empty();
        if self.in_flight == 0 && (self.winding_down() || finished) {
            self.finish(ctx);
        }
    }

    fn finish(&mut self, _ctx: &mut Context<Self>) {
        let Some(done) = self.done.take() else { return };
        let complete = self.planner.is_finished() && self.error.is_none();
        if complete && !self.manifest.finished {
            self.manifest.finished = true;
            self.manifest.updated_at = utc_now_rfc3339();
            if let Err(e) = self.manifest.write_atomic(&self.layout) {
                self.error = Some(RunError::Engine(e));
            }
        }
        let outcome = Outcome {
            progress: self.progress,
            manifest: self.manifest.clone(),
            cancelled: !complete && self.error.is_none(),
            error: self.error.take(),
        };
        // Capacity 1 and sent once: cannot block. A dropped receiver means nobody waits.
        let _ = done.try_send(outcome);
        System::current().stop();
    }
}

impl Actor for Batcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(CANCEL_POLL_INTERVAL, |act, ctx| {
            if act.winding_down() {
                act.pump(ctx);
            }
        });
        self.pump(ctx);
    }
}

impl Handler<BatchFlushed> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: BatchFlushed, ctx: &mut Context<Self>) {
        let index = msg.batch.index;
        if let Err(e) = self.planner.on_committed(index) {
            tracing::error!(batch = index, error = %e, "commit of a batch that was not open");
        }
        let rows: BTreeMap<String, u64> =
            msg.rows.iter().map(|(d, n)| (self.layout.dataset_name(d), *n)).collect();
        self.manifest.record(CommittedBatch {
            index,
            first_point: msg.batch.points.start,
            end_point: msg.batch.points.end,
            simulations: msg.simulations,
            failed: msg.failed,
            rows,
            committed_at: utc_now_rfc3339(),
            seconds: msg.seconds,
        });
        if let Err(e) = self.manifest.write_atomic(&self.layout) {
            self.error = Some(RunError::Engine(e));
        } else {
            self.progress.batches_committed += 1;
            self.progress.simulations_committed += msg.simulations;
            self.progress.failed += msg.failed;
            tracing::info!(
                batch = index,
                committed = self.progress.batches_committed,
                planned = self.progress.batches_planned,
                failed = msg.failed,
                "batch committed"
            );
            self.observer.on_event(&ProgressEvent::BatchCommitted {
                index,
                progress: self.progress,
                elapsed: self.started.elapsed(),
            });
        }
        self.pump(ctx);
    }
}

impl Handler<BatchFailed> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: BatchFailed, ctx: &mut Context<Self>) {
        if self.error.is_none() {
            self.error = Some(RunError::Engine(msg.0));
        }
        self.pump(ctx);
    }
}
