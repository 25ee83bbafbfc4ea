//! Batcher: owns the plan. Releases the tasks of at most `max_open_batches` batches, keeps at
//! most `max_tasks_in_flight` tasks handed to the workers (in chunks of `tasks_per_chunk`),
//! counts a batch done only when the ParquetWriter says it is committed ([`BatchFlushed`]),
//! then records it in the manifest and reports progress. Progress therefore never goes
//! backwards. It also reports the run's in-flight counters
//! ([`ProgressEvent::InFlight`]) and writes their peaks to the manifest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use simsweep_engine::collect::{tasks_of, SimTask};
use simsweep_engine::output::{utc_now_rfc3339, CommittedBatch, Manifest, OutputLayout};
use simsweep_engine::plan::Planner;
use simsweep_engine::progress::{
    CancelToken, InFlightCounters, PanicPoint, Progress, ProgressEvent, ProgressObserver,
    IN_FLIGHT_REPORT_INTERVAL,
};
use simsweep_engine::spec::Job;

use crate::error::RunError;
use crate::messages::{BatchFailed, BatchFlushed, RunChunk, StageStopped};

/// How often the Batcher looks at the cancel token when nothing else wakes it.
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// After a hard stop, how long the Batcher waits for the chunks in flight to come back (an
/// aborted external simulation returns in milliseconds; a built-in one cannot be killed) before
/// it ends the run without them. Part of [`HARD_STOP_SECONDS`].
///
/// [`HARD_STOP_SECONDS`]: simsweep_engine::progress::HARD_STOP_SECONDS
pub const HARD_STOP_WAIT: Duration = Duration::from_millis(1000);

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
    workers: Recipient<RunChunk>,
    layout: OutputLayout,
    manifest: Manifest,
    observer: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
    max_in_flight: usize,
    max_buffer_bytes: u64,
    chunk_len: usize,
    /// Tasks of the batch being released (for the chunk length, see `next_chunk_len`).
    batch_tasks: usize,
    panic_in: Option<PanicPoint>,
    pending: VecDeque<SimTask>,
    /// Tasks of each released batch still in `pending`.
    unreleased: BTreeMap<u32, usize>,
    /// Batches whose tasks have all been handed out and that are not committed yet: on a stop,
    /// their commit is waited for.
    fully_released: BTreeSet<u32>,
    in_flight: usize,
    counters: Arc<InFlightCounters>,
    workers_count: usize,
    progress: Progress,
    started: Instant,
    /// The run's id, for the events.
    job_id: Arc<str>,
    /// When the Batcher first saw a hard stop.
    hard_stop_seen: Option<Instant>,
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
    pub workers: Recipient<RunChunk>,
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
    /// Most tasks in one message to a worker.
    pub chunk_len: usize,
    /// `RunOptions::max_buffer_bytes`.
    pub max_buffer_bytes: u64,
    /// The run's in-flight counters.
    pub counters: Arc<InFlightCounters>,
    /// Number of workers (for the idle fraction in [`ProgressEvent::InFlight`]).
    pub workers_count: usize,
    /// Progress at start.
    pub progress: Progress,
    /// Where the outcome goes (capacity 1).
    pub done: crossbeam_channel::Sender<Outcome>,
    /// Test support: see `RunOptions::panic_in`.
    pub panic_in: Option<PanicPoint>,
    /// The run's id, for the events (`RunOptions::job_id`).
    pub job_id: Arc<str>,
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
            max_buffer_bytes: parts.max_buffer_bytes,
            chunk_len: parts.chunk_len.max(1),
            batch_tasks: 0,
            panic_in: parts.panic_in,
            pending: VecDeque::new(),
            unreleased: BTreeMap::new(),
            fully_released: BTreeSet::new(),
            in_flight: 0,
            counters: parts.counters,
            workers_count: parts.workers_count,
            progress: parts.progress,
            started: Instant::now(),
            hard_stop_seen: None,
            job_id: parts.job_id,
            error: None,
            done: Some(parts.done),
        }
    }

    fn winding_down(&self) -> bool {
        self.error.is_some() || self.cancel.is_cancelled()
    }

    /// Takes the next task to hand out, releasing a new batch when the bounds allow.
    fn next_task(&mut self) -> Option<SimTask> {
        if self.pending.is_empty() {
            if !self.fits_memory_budget() {
                return None;
            }
            let batch = self.planner.next_batch()?;
            tracing::debug!(batch = batch.index, points = ?batch.points, "batch released");
            let before = self.pending.len();
            self.pending.extend(tasks_of(&self.job.sweep, &batch, self.job.replicates));
            let tasks = self.pending.len() - before;
            self.unreleased.insert(batch.index, tasks);
            self.batch_tasks = tasks;
        }
        let task = self.pending.pop_front()?;
        let index = task.batch.index;
        if let Some(left) = self.unreleased.get_mut(&index) {
            *left -= 1;
            if *left == 0 {
                self.unreleased.remove(&index);
                self.fully_released.insert(index);
            }
        }
        Some(task)
    }

    /// The memory budget (`max_buffer_bytes`): another batch may be released when none is open
    /// (so the run always goes on), or when what the writer holds plus the next batch's
    /// expected outputs (its tasks × the mean bytes of a replicate's outputs so far) fits.
    /// Until a replicate has reached the writer there is no estimate: one batch at a time.
    fn fits_memory_budget(&self) -> bool {
        if self.planner.open() == 0 {
            return true;
        }
        let taken = self.counters.outputs_taken.load(Ordering::Relaxed);
        if taken == 0 {
            return false;
        }
        let mean = self.counters.output_bytes_taken.load(Ordering::Relaxed) / taken;
        let next_tasks = self.batch_tasks.max(1) as u64;
        let held = self.counters.bytes_buffered.get();
        held.saturating_add(mean.saturating_mul(next_tasks)) <= self.max_buffer_bytes
    }

    /// Releases chunks of tasks while the bounds allow, and ends the run when nothing is left
    /// to wait for.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.winding_down() {
            // Until a task has been timed, one probe task per worker; then the in-flight bound.
            let timed = self.counters.simulations_finished.load(Ordering::Relaxed) > 0;
            let limit = if timed {
                self.max_in_flight
            } else {
                self.workers_count.clamp(1, self.max_in_flight)
            };
            if self.in_flight >= limit {
                break;
            }
            let room = limit - self.in_flight;
            // Wait for a whole chunk's room while work is in flight: refilling each freed slot
            // with a chunk of one would keep chunks at one task for the rest of the run.
            if room < self.next_chunk_len() && self.in_flight > 0 {
                break;
            }
            // The first task first: it may release a batch, which the chunk length depends on.
            let Some(first) = self.next_task() else { break };
            let room = room.min(self.next_chunk_len());
            let chunk: Vec<SimTask> = std::iter::once(first)
                .chain(std::iter::from_fn(|| self.next_task()))
                .take(room)
                .collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            self.in_flight += n;
            self.counters.tasks_in_flight.add(n as u64);
            self.counters.tasks_queued.add(n as u64);
            self.workers
                .send(RunChunk(chunk))
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.in_flight -= n;
                    act.counters.tasks_in_flight.sub(n as u64);
                    let error = match result {
                        Ok(Ok(skipped)) => {
                            // Batches with tasks a stopping worker skipped will never complete:
                            // do not wait for their commit.
                            for index in skipped {
                                act.fully_released.remove(&index);
                            }
                            None
                        }
                        Ok(Err(StageStopped(part))) => Some(RunError::Internal {
                            part,
                            message: "it stopped unexpectedly (a panic; its message is on stderr)"
                                .to_string(),
                        }),
                        Err(e) => Some(RunError::Mailbox(e)),
                    };
                    if let Some(e) = error {
                        if act.error.is_none() {
                            act.error = Some(e);
                        }
                    }
                    act.pump(ctx);
                })
                .spawn(ctx);
        }
        let finished = self.planner.is_finished() && self.pending.is_empty();
        // On a stop, batches whose tasks have all run are still committed (unless a commit
        // already failed): wait for them.
        // On a hard stop they are not waited for either, nor (after HARD_STOP_WAIT) the chunks
        // still running.
        let hard = self.cancel.is_cancelled_now();
        let commits_due = self.error.is_none() && !self.fully_released.is_empty() && !hard;
        let abandon_in_flight = self.hard_stop_seen.is_some_and(|t| t.elapsed() >= HARD_STOP_WAIT);
        // Never end while a commit still writes: its files would outlive the run (and its lock).
        // Returns still in the stages' mailboxes may complete a batch later: once the run is
        // ending no new commit may start (`close_commits`), and one that started is waited for
        // (its `BatchFlushed` pumps again).
        let quiet =
            (self.in_flight == 0 || abandon_in_flight) && self.counters.commits_running.get() == 0;
        if quiet
            && (finished || (self.winding_down() && !commits_due))
            && self.counters.close_commits()
        {
            self.finish(ctx);
        }
    }

    /// Tasks in the next chunk: the dispatch policy of [`simsweep_engine::plan::chunk_len`]
    /// over the current batch and the time per task measured so far in this run.
    fn next_chunk_len(&self) -> usize {
        let finished = self.counters.simulations_finished.load(Ordering::Relaxed);
        let busy_ns = self.counters.worker_busy_ns.load(Ordering::Relaxed);
        let mean_task = (finished > 0).then(|| Duration::from_nanos(busy_ns / finished));
        simsweep_engine::plan::chunk_len(
            self.batch_tasks,
            self.workers_count,
            self.chunk_len,
            mean_task,
        )
    }

    fn report_in_flight(&self) {
        self.observer.on_event(&ProgressEvent::InFlight {
            job_id: self.job_id.clone(),
            now: self.counters.now(),
            peaks: self.counters.peaks(),
            worker_busy: self.counters.worker_busy(),
            workers: self.workers_count,
            elapsed: self.started.elapsed(),
            simulations_finished: self.counters.simulations_finished.load(Ordering::Relaxed),
        });
    }

    /// Copies the peaks of the counters into the manifest (keeping an earlier run's higher ones).
    fn record_peaks(&mut self) {
        for (name, value) in self.counters.peaks().named() {
            let peak = self.manifest.peak_in_flight.entry(name.to_string()).or_insert(0);
            *peak = (*peak).max(value);
        }
    }

    fn finish(&mut self, _ctx: &mut Context<Self>) {
        let Some(done) = self.done.take() else { return };
        let complete = self.planner.is_finished() && self.error.is_none();
        self.report_in_flight();
        // Compact the commit log into the manifest at every end: finished, stopped, or failed
        // (the manifest in memory holds exactly the committed batches, so this also drops a
        // torn record a failed append left). O(committed batches), once per run.
        self.record_peaks();
        if complete {
            self.manifest.finished = true;
        }
        self.manifest.updated_at = utc_now_rfc3339();
        if let Err(e) = self.manifest.write_atomic(&self.layout) {
            if self.error.is_none() {
                self.error = Some(RunError::Engine(e));
            } else {
                tracing::warn!(error = %e, "could not compact the commit log after the failure");
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
            if act.cancel.is_cancelled_now() {
                if act.hard_stop_seen.is_none() {
                    tracing::info!(in_flight = act.in_flight, "hard stop");
                    act.hard_stop_seen = Some(Instant::now());
                }
                // Again at every poll: a simulation may have started after the last call.
                if act.in_flight > 0 {
                    act.job.simulator.abort();
                }
            }
            if act.winding_down() {
                act.pump(ctx);
            }
        });
        ctx.run_interval(IN_FLIGHT_REPORT_INTERVAL, |act, _ctx| act.report_in_flight());
        self.pump(ctx);
    }
}

impl Handler<BatchFlushed> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: BatchFlushed, ctx: &mut Context<Self>) {
        let index = msg.batch.index;
        PanicPoint::check(self.panic_in, PanicPoint::Batcher, index);
        if let Err(e) = self.planner.on_committed(index) {
            tracing::error!(batch = index, error = %e, "commit of a batch that was not open");
        }
        self.fully_released.remove(&index);
        self.record_peaks();
        let rows: BTreeMap<String, u64> =
            msg.rows.iter().map(|(d, n)| (self.layout.dataset_name(d), *n)).collect();
        let batch = CommittedBatch {
            index,
            first_point: msg.batch.points.start,
            end_point: msg.batch.points.end,
            simulations: msg.simulations,
            failed: msg.failed,
            rows,
            committed_at: utc_now_rfc3339(),
            seconds: msg.seconds,
            best: msg.best,
        };
        // After a failed append the log may end in a torn record: nothing may follow it.
        if self.error.is_some() {
            tracing::debug!(batch = index, "run failing: batch not recorded");
        } else if let Err(e) = self.manifest.commit(&self.layout, batch) {
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
                job_id: self.job_id.clone(),
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
