//! Aggregator: holds a parameter set's replicates until all have returned, scores every
//! target, sends the losses on, and drops the replicates.

use std::sync::Arc;

use actix::prelude::*;
use simsweep_engine::collect::ReplicateCollector;
use simsweep_engine::progress::{InFlightCounters, PanicPoint};
use simsweep_engine::spec::Job;

use crate::messages::{PointsScored, Replicates};

/// The aggregator of replicates into losses.
pub struct Aggregator {
    job: Arc<Job>,
    collector: ReplicateCollector,
    writer: Recipient<PointsScored>,
    mailbox_capacity: usize,
    counters: Arc<InFlightCounters>,
    panic_in: Option<PanicPoint>,
    /// The run's `job` span, entered while handling (log lines name the job).
    span: tracing::Span,
}

impl Aggregator {
    /// An aggregator for `job` sending losses to `writer`, reporting the replicates it holds in
    /// `counters.replicates_awaiting_aggregation`.
    pub fn new(
        job: Arc<Job>,
        writer: Recipient<PointsScored>,
        mailbox_capacity: usize,
        counters: Arc<InFlightCounters>,
        panic_in: Option<PanicPoint>,
        span: tracing::Span,
    ) -> Self {
        Aggregator {
            job,
            collector: ReplicateCollector::new(),
            writer,
            mailbox_capacity,
            counters,
            panic_in,
            span,
        }
    }
}

impl Actor for Aggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Replicates> for Aggregator {
    // Atomic while the writer's mailbox is full: the next chunk is not taken until the losses
    // have a place there, so a slow writer slows the aggregator, which slows the workers.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Replicates, _ctx: &mut Context<Self>) -> Self::Result {
        let _entered = self.span.clone().entered();
        if let Some(ret) = msg.0.first() {
            PanicPoint::check(self.panic_in, PanicPoint::Aggregator, ret.task.batch.index);
        }
        let job = &self.job;
        let scored: Vec<_> = msg
            .0
            .into_iter()
            .filter_map(|ret| {
                self.collector.add(ret, &job.sweep(), job.replicates(), job.targets())
            })
            .collect();
        self.counters.replicates_awaiting_aggregation.set(self.collector.held_replicates() as u64);
        if scored.is_empty() {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        let send = match self.writer.try_send(PointsScored(scored)) {
            Ok(()) => return AtomicResponse::new(Box::pin(fut::ready(()))),
            Err(SendError::Full(msg)) => self.writer.send(msg),
            Err(SendError::Closed(_)) => {
                // The writer stopped: the run is ending (a stop, or a failure that the writer
                // or the Batcher reports); nothing to add here.
                tracing::debug!("parquet writer gone; aggregator stops");
                return AtomicResponse::new(Box::pin(
                    fut::ready(()).map(|(), _act: &mut Self, ctx: &mut Context<Self>| ctx.stop()),
                ));
            }
        };
        AtomicResponse::new(Box::pin(send.into_actor(self).map(|result, _act, ctx| {
            if let Err(error) = result {
                // The writer is gone: the run is ending; stop taking replicates.
                tracing::debug!(%error, "parquet writer gone; aggregator stops");
                ctx.stop();
            }
        })))
    }
}
