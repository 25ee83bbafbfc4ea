//! Aggregator: holds a parameter set's replicates until all have returned, scores every
//! target, sends the losses on, and drops the replicates.

use std::sync::Arc;

use actix::prelude::*;
use simsweep_engine::collect::ReplicateCollector;
use simsweep_engine::spec::Job;

use crate::messages::{PointScored, Replicate};
use crate::parquet_writer::ParquetWriter;

/// The aggregator of replicates into losses.
pub struct Aggregator {
    job: Arc<Job>,
    collector: ReplicateCollector,
    writer: Addr<ParquetWriter>,
    mailbox_capacity: usize,
}

impl Aggregator {
    /// An aggregator for `job` sending losses to `writer`.
    pub fn new(job: Arc<Job>, writer: Addr<ParquetWriter>, mailbox_capacity: usize) -> Self {
        Aggregator { job, collector: ReplicateCollector::new(), writer, mailbox_capacity }
    }
}

impl Actor for Aggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Replicate> for Aggregator {
    // Atomic: the next replicate is not taken until the losses have a place in the writer's
    // mailbox, so a slow writer slows the aggregator, which slows the workers.
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Replicate, _ctx: &mut Context<Self>) -> Self::Result {
        let job = &self.job;
        let scored = self.collector.add(msg.0, &job.sweep, job.replicates, &job.targets);
        let Some(losses) = scored else {
            return AtomicResponse::new(Box::pin(fut::ready(())));
        };
        let send = self.writer.send(PointScored(losses));
        AtomicResponse::new(Box::pin(send.into_actor(self).map(|result, _act, ctx| {
            if let Err(error) = result {
                // The writer is gone: the run is failing; stop taking replicates.
                tracing::error!(%error, "parquet writer unreachable; aggregator stops");
                ctx.stop();
            }
        })))
    }
}
