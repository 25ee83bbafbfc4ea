//! Batcher: the adapter of the run's [`Dispatch`] state machine (which tasks go out, in what
//! chunks, and when the run may end: `simsweep_engine::dispatch`, tested there without a
//! runtime). It sends the chunks the dispatch gives to the workers and feeds back what happens:
//! chunks returned, batches committed (the ParquetWriter's [`BatchFlushed`], recorded in the
//! commit log, then progress reported: progress never goes backwards), stops and failures. It
//! also reports the run's in-flight counters ([`ProgressEvent::InFlight`]) and writes their peaks
//! to the manifest.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use simsweep_engine::dispatch::{Dispatch, DispatchLimits, Measured};
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
pub use simsweep_engine::dispatch::HARD_STOP_WAIT;

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
    dispatch: Dispatch,
    workers: Recipient<RunChunk>,
    layout: OutputLayout,
    manifest: Manifest,
    observer: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
    panic_in: Option<PanicPoint>,
    counters: Arc<InFlightCounters>,
    workers_count: usize,
    progress: Progress,
    started: Instant,
    /// The run's id, for the events.
    job_id: Arc<str>,
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
        let limits = DispatchLimits {
            workers: parts.workers_count,
            max_in_flight: parts.max_in_flight.max(1),
            chunk_cap: parts.chunk_len.max(1),
            max_buffer_bytes: parts.max_buffer_bytes,
        };
        let dispatch =
            Dispatch::new(parts.job.sweep().clone(), parts.job.replicates(), parts.planner, limits)
                .with_first_replicate(parts.job.first_replicate());
        Batcher {
            job: parts.job,
            dispatch,
            workers: parts.workers,
            layout: parts.layout,
            manifest: parts.manifest,
            observer: parts.observer,
            cancel: parts.cancel,
            panic_in: parts.panic_in,
            counters: parts.counters,
            workers_count: parts.workers_count,
            progress: parts.progress,
            started: Instant::now(),
            job_id: parts.job_id,
            error: None,
            done: Some(parts.done),
        }
    }

    /// Records the first error and tells the dispatch the run failed.
    fn set_error(&mut self, error: RunError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.dispatch.fail();
    }

    /// What the dataflow measured so far, from the run's counters.
    fn measured(&self) -> Measured {
        let c = &self.counters;
        let finished = c.tasks_timed.load(Ordering::Relaxed);
        let busy_ns = c.task_time_ns.load(Ordering::Relaxed);
        let taken = c.outputs_taken.load(Ordering::Relaxed);
        Measured {
            mean_task: (finished > 0).then(|| Duration::from_nanos(busy_ns / finished)),
            bytes_buffered: c.bytes_buffered.get(),
            mean_output_bytes: (taken > 0)
                .then(|| c.output_bytes_taken.load(Ordering::Relaxed) / taken),
        }
    }

    /// Sends the chunks the dispatch allows, and ends the run when it may.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.cancel.is_cancelled_now() {
            self.dispatch.stop_hard(Instant::now());
        } else if self.cancel.is_cancelled() {
            self.dispatch.stop_gracefully();
        }
        let measured = self.measured();
        while let Some(chunk) = self.dispatch.next_chunk(&measured) {
            let n = chunk.len();
            // The gauge mirrors the dispatch's count (its one source).
            self.counters.tasks_in_flight.set(self.dispatch.in_flight() as u64);
            self.counters.tasks_queued.add(n as u64);
            self.workers
                .send(RunChunk(chunk))
                .into_actor(self)
                .map(move |result, act, ctx| {
                    match result {
                        // Batches with tasks a stopping worker skipped cannot complete.
                        Ok(Ok(skipped)) => act.dispatch.chunk_returned(n, &skipped),
                        Ok(Err(StageStopped(part))) => {
                            act.dispatch.chunk_returned(n, &[]);
                            act.set_error(RunError::Internal {
                                part,
                                message: "it stopped unexpectedly (a panic; its message is on \
                                          stderr)"
                                    .to_string(),
                            });
                        }
                        Err(e) => {
                            act.dispatch.chunk_returned(n, &[]);
                            act.set_error(RunError::Mailbox(e));
                        }
                    }
                    act.counters.tasks_in_flight.set(act.dispatch.in_flight() as u64);
                    act.pump(ctx);
                })
                .spawn(ctx);
        }
        // Never end while a commit still writes; once the run is ending no commit may start
        // (`close_commits`), and one that started is waited for (its `BatchFlushed` pumps again).
        let commits_running = self.counters.commits_running.get();
        if self.dispatch.may_end(commits_running, Instant::now()) && self.counters.close_commits() {
            self.finish(ctx);
        }
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
        let complete = self.dispatch.is_complete() && self.error.is_none();
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
                if !act.dispatch.is_stopping_hard() {
                    tracing::info!(in_flight = act.dispatch.in_flight(), "hard stop");
                }
                // Again at every poll: a simulation may have started after the last call.
                if act.dispatch.in_flight() > 0 {
                    act.job.simulator().abort();
                }
            }
            if act.cancel.is_cancelled() || act.dispatch.is_winding_down() {
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
        if let Err(e) = self.dispatch.committed(index) {
            tracing::error!(batch = index, error = %e, "commit of a batch that was not open");
        }
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
            self.set_error(RunError::Engine(e));
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
        self.set_error(RunError::Engine(msg.0));
        self.pump(ctx);
    }
}
