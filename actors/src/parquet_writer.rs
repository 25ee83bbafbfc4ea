//! ParquetWriter: keeps the rows of each open batch and, once a batch is complete, writes and
//! commits its files (temporary name, fsync, rename, fsync directory), then tells the Batcher
//! with [`BatchFlushed`].
//!
//! Rows are held until their batch is complete and written sorted by (parameter set,
//! replicate), so the files do not depend on which worker finished first. What it holds is
//! reported by [`BatchAssembler::rows_buffered`]; it is bounded by the open batches.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use simsweep_engine::collect::{oom_guidance, BatchAssembler, CompleteBatch};
use simsweep_engine::output::{commit_batch, OutputLayout};
use simsweep_engine::progress::RunOptions;
use simsweep_engine::spec::Job;
use simsweep_engine::EngineError;

use crate::batcher::{BatchFailed, BatchFlushed};
use crate::messages::{PointScored, Replicate};

/// The Parquet writer.
pub struct ParquetWriter {
    layout: OutputLayout,
    assembler: BatchAssembler,
    flushed: Recipient<BatchFlushed>,
    failed: Recipient<BatchFailed>,
    mailbox_capacity: usize,
    /// For the OOM guidance: the external model's memory limit, workers, batch size, replicates.
    oom_context: (Option<u64>, usize, usize, u32),
    /// Set after a failed commit: later rows are dropped, the run is ending.
    broken: bool,
}

impl ParquetWriter {
    /// A writer for `job` writing under `layout`, reporting commits to `flushed` and failures to
    /// `failed` (both the Batcher).
    pub fn new(
        job: &Job,
        layout: OutputLayout,
        flushed: Recipient<BatchFlushed>,
        failed: Recipient<BatchFailed>,
        mailbox_capacity: usize,
        options: &RunOptions,
    ) -> Self {
        let assembler = BatchAssembler::new(
            Arc::new(job.sweep.clone()),
            job.replicates,
            job.simulator.outputs(),
            &job.targets,
        )
        .with_model_outputs(&job.model_outputs);
        let oom_context = (
            job.model.external().and_then(|e| e.memory_limit_mb),
            options.workers.get(),
            options.batch_size.get(),
            job.replicates,
        );
        ParquetWriter {
            layout,
            assembler,
            flushed,
            failed,
            mailbox_capacity,
            oom_context,
            broken: false,
        }
    }

    /// Commits a complete batch and answers once the Batcher has been told.
    fn commit(
        &mut self,
        complete: Result<Option<CompleteBatch>, EngineError>,
    ) -> AtomicResponse<Self, ()> {
        let done = |()| AtomicResponse::new(Box::pin(fut::ready(())));
        let complete = match complete {
            Ok(Some(c)) => c,
            Ok(None) => return done(()),
            Err(error) => return self.fail(error),
        };
        let start = Instant::now();
        let index = complete.batch.index;
        let span = tracing::info_span!("commit", batch = index);
        let _entered = span.enter();
        if complete.oom_failures > 0 {
            let (limit, workers, batch_size, replicates) = self.oom_context;
            let guidance = oom_guidance(
                complete.oom_failures,
                limit,
                workers,
                batch_size,
                replicates,
            );
            tracing::warn!(oom_failures = complete.oom_failures, "{guidance}");
        }
        match commit_batch(&self.layout, index, complete.tables) {
            Ok(rows) => {
                let msg = BatchFlushed {
                    batch: complete.batch,
                    rows,
                    simulations: complete.simulations,
                    failed: complete.failed,
                    seconds: start.elapsed().as_secs_f64(),
                };
                tracing::debug!(seconds = msg.seconds, "batch committed");
                let send = self.flushed.send(msg);
                AtomicResponse::new(Box::pin(send.into_actor(self).map(|result, _act, ctx| {
                    if result.is_err() {
                        ctx.stop();
                    }
                })))
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: EngineError) -> AtomicResponse<Self, ()> {
        tracing::error!(%error, "commit failed; writer stops taking rows");
        self.broken = true;
        let send = self.failed.send(BatchFailed(error));
        AtomicResponse::new(Box::pin(
            send.into_actor(self).map(|_result, _act, _ctx| ()),
        ))
    }
}

impl Actor for ParquetWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Replicate> for ParquetWriter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Replicate, _ctx: &mut Context<Self>) -> Self::Result {
        if self.broken {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let complete = self.assembler.add_return(msg.0);
        self.commit(complete)
    }
}

impl Handler<PointScored> for ParquetWriter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: PointScored, _ctx: &mut Context<Self>) -> Self::Result {
        if self.broken {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let complete = self.assembler.add_losses(msg.0);
        self.commit(complete)
    }
}
