//! ParquetWriter: keeps the rows of each open batch and, once a batch is complete, writes and
//! commits its files (temporary name, fsync, rename, fsync directory), then tells the Batcher
//! with [`BatchFlushed`].
//!
//! Rows are held until their batch is complete and written sorted by (parameter set,
//! replicate), so the files do not depend on which worker finished first.
//!
//! Building the tables of a complete batch, their encoding, compression and fsyncs run on a
//! blocking thread of the runtime, not on the writer's own thread: the writer keeps taking the
//! next batch's rows while the previous one is committed, so the workers do not stall between
//! batches. Commits run one at a time, in the order batches complete. This adds no buffer: a
//! batch being committed (or waiting for the running commit) is still open for the Batcher
//! (which releases a new batch only after [`BatchFlushed`]), so the writer holds at most
//! `max_open_batches` batches, open, queued or committing. What it holds is reported in
//! `InFlightCounters::rows_buffered`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use simsweep_engine::collect::{oom_guidance, BatchAssembler, CompleteBatch};
use simsweep_engine::commit_queue::CommitQueue;
use simsweep_engine::output::{commit_batch, OutputLayout};
use simsweep_engine::progress::{InFlightCounters, PanicPoint, RunOptions};
use simsweep_engine::spec::Job;
use simsweep_engine::summary::{batch_summaries, BEST_PER_TARGET};
use simsweep_engine::EngineError;

use crate::messages::{BatchFailed, BatchFlushed, PointsScored, Replicates};

/// The Parquet writer.
pub struct ParquetWriter {
    layout: OutputLayout,
    assembler: BatchAssembler,
    flushed: Recipient<BatchFlushed>,
    failed: Recipient<BatchFailed>,
    mailbox_capacity: usize,
    counters: Arc<InFlightCounters>,
    /// Model-output rows of the batches being committed or queued for commit.
    rows_committing: u64,
    /// Bytes of model outputs of those batches.
    bytes_committing: u64,
    /// `RunOptions::max_buffer_bytes`.
    max_buffer_bytes: u64,
    /// `RunOptions::slow_commit` (test support).
    slow_commit: Option<std::time::Duration>,
    /// The warning that a batch is over `max_buffer_bytes` was given.
    warned_batch_bytes: bool,
    /// Batch size and replicates, for that warning.
    batch_shape: (usize, u32),
    /// Complete batches: the one committing and those waiting for it (`engine::commit_queue`);
    /// broken after a failed commit (later rows are dropped, the run is ending).
    queue: CommitQueue<CompleteBatch>,
    /// For the OOM guidance: the external model's memory limit, workers, batch size, replicates.
    oom_context: (Option<u64>, usize, usize, u32),
    panic_in: Option<PanicPoint>,
    /// The run's `job` span, entered while handling (log lines name the job).
    span: tracing::Span,
}

impl ParquetWriter {
    /// A writer for `job` writing under `layout`, reporting commits to `flushed` and failures to
    /// `failed` (both the Batcher), and the rows it holds to `counters.rows_buffered`; `options`
    /// give the figures of the out-of-memory guidance. `loss_se`: the target tables have a
    /// `loss_se` column (false to resume an output of manifest format 2 or older, which has
    /// none).
    pub fn new(
        job: &Job,
        layout: OutputLayout,
        flushed: Recipient<BatchFlushed>,
        failed: Recipient<BatchFailed>,
        mailbox_capacity: usize,
        options: &RunOptions,
        counters: Arc<InFlightCounters>,
        span: tracing::Span,
        loss_se: bool,
    ) -> Self {
        let assembler = BatchAssembler::new(
            job.sweep().clone(),
            job.replicates(),
            job.simulator().outputs(),
            job.targets(),
        )
        .with_model_outputs(job.model_outputs())
        .with_loss_se(loss_se);
        let oom_context = (
            job.model().external().and_then(|e| e.memory_limit_mb),
            options.workers.get(),
            options.batch_size.get(),
            job.replicates(),
        );
        ParquetWriter {
            layout,
            assembler,
            flushed,
            failed,
            mailbox_capacity,
            counters,
            rows_committing: 0,
            bytes_committing: 0,
            max_buffer_bytes: options.max_buffer_bytes,
            slow_commit: options.slow_commit,
            warned_batch_bytes: false,
            batch_shape: (options.batch_size.get(), job.replicates()),
            queue: CommitQueue::new(),
            oom_context,
            panic_in: options.panic_in,
            span,
        }
    }

    fn report_rows(&self) {
        self.counters.rows_buffered.set(self.assembler.rows_buffered() + self.rows_committing);
        self.counters.bytes_buffered.set(self.assembler.bytes_buffered() + self.bytes_committing);
    }

    /// Queues a complete batch for commit and starts the next commit if none is running.
    fn commit(
        &mut self,
        complete: Result<Option<CompleteBatch>, EngineError>,
        ctx: &mut Context<Self>,
    ) {
        match complete {
            Ok(Some(c)) => {
                if self.queue.is_broken() {
                    return;
                }
                self.warn_if_over_budget(&c);
                self.rows_committing += c.model_output_rows;
                self.bytes_committing += c.model_output_bytes;
                if let Some(start) = self.queue.push(c) {
                    self.start_commit(start, ctx);
                }
            }
            Ok(None) => {}
            Err(error) => self.fail(error, ctx),
        }
    }

    /// Rows and bytes of batches the queue dropped are no longer held.
    fn release(&mut self, dropped: Vec<CompleteBatch>) {
        for b in dropped {
            self.rows_committing -= b.model_output_rows;
            self.bytes_committing -= b.model_output_bytes;
        }
    }

    /// Commits `complete` (handed out by the [`CommitQueue`]) on a blocking thread; tells the
    /// Batcher when done and starts the next queued commit.
    fn start_commit(&mut self, complete: CompleteBatch, ctx: &mut Context<Self>) {
        let start = Instant::now();
        if complete.oom_failures > 0 {
            let (limit, workers, batch_size, replicates) = self.oom_context;
            let guidance =
                oom_guidance(complete.oom_failures, limit, workers, batch_size, replicates);
            tracing::warn!(
                batch = complete.batch.index,
                oom_failures = complete.oom_failures,
                "{guidance}"
            );
        }
        let (batch, simulations, failed) =
            (complete.batch.clone(), complete.simulations, complete.failed);
        let rows = complete.model_output_rows;
        let bytes = complete.model_output_bytes;
        let layout = self.layout.clone();
        let index = batch.index;
        // The Batcher never sees a quiet dataflow while a commit still writes, and once it has
        // decided to end the run no commit starts.
        if !self.counters.begin_commit() {
            tracing::debug!(batch = index, "run ending: batch not committed");
            self.rows_committing -= rows;
            self.bytes_committing -= bytes;
            self.queue.not_started();
            return;
        }
        // Building the tables (concatenating the replicates' columns) is done off the writer's
        // thread too: the writer only sorts rows in, so workers are not held up by its mailbox.
        let job_span = self.span.clone();
        let slow_commit = self.slow_commit;
        let work = actix_rt::task::spawn_blocking(move || {
            let span = tracing::info_span!(parent: &job_span, "commit", batch = index);
            let _entered = span.enter();
            let first_point = complete.batch.points.start;
            let tables = complete.into_tables()?;
            // The batch's best per target travel in its commit record (status and the summary
            // never reopen batch files).
            let best = batch_summaries(&layout, &tables, first_point, BEST_PER_TARGET)?;
            if let Some(delay) = slow_commit {
                std::thread::sleep(delay);
            }
            let committed = commit_batch(&layout, index, tables).map(|rows| (rows, best));
            // The batch's rows are freed by now: give their pages back (see `memory`).
            simsweep_engine::memory::release_free_memory();
            committed
        });
        let done = fut::wrap_future::<_, Self>(work).map(move |joined, act, ctx| {
            let _entered = act.span.clone().entered();
            act.counters.commits_running.sub(1);
            act.rows_committing -= rows;
            act.bytes_committing -= bytes;
            let result = joined.unwrap_or_else(|join| {
                Err(EngineError::io(
                    act.layout.root(),
                    std::io::Error::other(format!("the commit of batch {index} panicked: {join}")),
                ))
            });
            let (next, dropped) = act.queue.done(result.is_ok());
            act.release(dropped);
            act.report_rows();
            match result {
                Ok((rows, best)) => {
                    let msg = BatchFlushed {
                        batch,
                        rows,
                        best,
                        simulations,
                        failed,
                        seconds: start.elapsed().as_secs_f64(),
                    };
                    tracing::debug!(batch = index, seconds = msg.seconds, "batch committed");
                    let send = act.flushed.send(msg);
                    ctx.spawn(send.into_actor(act).map(|result, _act, ctx| {
                        if result.is_err() {
                            ctx.stop();
                        }
                    }));
                }
                Err(error) => act.fail(error, ctx),
            }
            if let Some(next) = next {
                act.start_commit(next, ctx);
            }
        });
        ctx.spawn(done);
    }

    /// Once per run: a batch holds more than `max_buffer_bytes` (the Batcher then keeps one
    /// batch open at a time; memory is still over the budget by that batch).
    fn warn_if_over_budget(&mut self, complete: &CompleteBatch) {
        if self.warned_batch_bytes || complete.model_output_bytes <= self.max_buffer_bytes {
            return;
        }
        self.warned_batch_bytes = true;
        let (batch_size, replicates) = self.batch_shape;
        let points = complete.batch.points.end - complete.batch.points.start;
        let per_set = complete.model_output_bytes / points.max(1);
        let fits = (self.max_buffer_bytes / per_set.max(1)).max(1);
        tracing::warn!(
            batch = complete.batch.index,
            bytes = complete.model_output_bytes,
            max_buffer_bytes = self.max_buffer_bytes,
            "one batch of {batch_size} parameter sets × {replicates} replicates holds {} MB of \
             model outputs, over the {} MB buffer limit (max_buffer_bytes); batches now run one \
             at a time. A batch size of at most {fits} fits the limit; or select fewer model \
             outputs, or raise the limit if the machine has the memory",
            complete.model_output_bytes / 1_000_000,
            self.max_buffer_bytes / 1_000_000,
        );
    }

    /// A replicate whose outputs alone are over `max_buffer_bytes` stops the run: no batch
    /// size fits it.
    fn check_return_size(
        &self,
        ret: &simsweep_engine::collect::SimReturn,
        bytes: u64,
    ) -> Result<(), EngineError> {
        if bytes <= self.max_buffer_bytes {
            return Ok(());
        }
        Err(EngineError::OptionInvalid {
            option: "max_buffer_bytes".to_string(),
            message: format!(
                "one replicate (parameter set {}, replicate {}) returned {bytes} bytes of model \
                 outputs, more than the {} bytes the run may buffer; raise `max_buffer_bytes` \
                 above one replicate's outputs, or select fewer outputs (`model_outputs`)",
                ret.task.point, ret.task.replicate, self.max_buffer_bytes
            ),
        })
    }

    fn fail(&mut self, error: EngineError, ctx: &mut Context<Self>) {
        tracing::error!(%error, "the writer stops taking rows");
        let dropped = self.queue.break_off();
        self.release(dropped);
        let send = self.failed.send(BatchFailed(error));
        ctx.spawn(send.into_actor(self).map(|_result, _act, _ctx| ()));
    }
}

impl Actor for ParquetWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Replicates> for ParquetWriter {
    type Result = ();

    fn handle(&mut self, msg: Replicates, ctx: &mut Context<Self>) {
        let _entered = self.span.clone().entered();
        if let Some(ret) = msg.0.first() {
            PanicPoint::check(self.panic_in, PanicPoint::ParquetWriter, ret.task.batch.index);
        }
        for ret in msg.0 {
            if self.queue.is_broken() {
                return;
            }
            // Every return counts (a failed one with no bytes) for the mean size per replicate.
            // Counted as the assembler will hold them: the selected outputs only.
            let bytes = ret.result.as_ref().map_or(0, |o| self.assembler.held_bytes(o));
            if let Err(error) = self.check_return_size(&ret, bytes) {
                self.fail(error, ctx);
                return;
            }
            self.counters.output_bytes_taken.fetch_add(bytes, Ordering::Relaxed);
            self.counters.outputs_taken.fetch_add(1, Ordering::Relaxed);
            let complete = self.assembler.add_return(ret);
            self.commit(complete, ctx);
        }
        self.report_rows();
    }
}

impl Handler<PointsScored> for ParquetWriter {
    type Result = ();

    fn handle(&mut self, msg: PointsScored, ctx: &mut Context<Self>) {
        let _entered = self.span.clone().entered();
        for losses in msg.0 {
            if self.queue.is_broken() {
                return;
            }
            let complete = self.assembler.add_losses(losses);
            self.commit(complete, ctx);
        }
        self.report_rows();
    }
}
