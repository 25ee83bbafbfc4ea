//! SimWorker: runs the model, one replicate per message, on a thread of its own.
//!
//! A failed replicate is run again when the job's retry policy (`[model] max_attempts`,
//! `retry`) says so; the return carries the failed attempts besides the last result.
//!
//! Simulation is CPU-bound and blocking, so workers run under a `SyncArbiter` (one OS thread
//! each), off the async arbiters. The SyncArbiter's inner queue is unbounded; it is bounded in
//! front by the Batcher, which never has more than `RunOptions::max_tasks_in_flight` tasks
//! handed out. A worker forwards each return with `send` and waits for it to be taken, so a
//! slow Aggregator or ParquetWriter makes the workers wait (backpressure) instead of queueing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::{Actor, Addr, Handler, Message, SyncContext};
use simsweep_engine::collect::{SimReturn, SimTask};
use simsweep_engine::model::{Attempts, OutputSpec, SimError, SimOutput};
use simsweep_engine::spec::Job;

use crate::aggregator::Aggregator;
use crate::messages::Replicate;
use crate::parquet_writer::ParquetWriter;

/// Run one replicate. Answered once the return has been handed to the Aggregator and the
/// ParquetWriter; the answer says whether both took it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), actix::MailboxError>")]
pub struct RunTask(pub SimTask);

/// A simulation worker.
pub struct SimWorker {
    job: Arc<Job>,
    outputs: Vec<OutputSpec>,
    aggregator: Addr<Aggregator>,
    writer: Addr<ParquetWriter>,
}

impl SimWorker {
    /// A worker running `job`'s simulator and sending returns to `aggregator` and `writer`.
    pub fn new(job: Arc<Job>, aggregator: Addr<Aggregator>, writer: Addr<ParquetWriter>) -> Self {
        let outputs = job.simulator.outputs();
        SimWorker {
            job,
            outputs,
            aggregator,
            writer,
        }
    }

    /// Runs the task's attempts per the job's retry policy.
    fn run(&self, task: &SimTask) -> Attempts {
        self.job.model.retry.run(|_attempt| self.simulate(task))
    }

    /// One attempt: the model under `catch_unwind`, then the output check.
    fn simulate(&self, task: &SimTask) -> Result<SimOutput, SimError> {
        let params = &self.job.sweep.points[task.point as usize].params;
        let simulator = &self.job.simulator;
        let output = catch_unwind(AssertUnwindSafe(|| simulator.simulate(params, task.seed)))
            .unwrap_or_else(|panic| Err(SimError::Panic(panic_message(panic.as_ref()))))?;
        check_outputs(&self.outputs, &output)?;
        Ok(output)
    }
}

/// A model must return its declared outputs with their declared columns; anything else is a
/// failure of that replicate, not of the job.
fn check_outputs(declared: &[OutputSpec], output: &SimOutput) -> Result<(), SimError> {
    if output.tables.len() != declared.len() {
        return Err(SimError::Model(format!(
            "returned {} output tables, the model declares {}",
            output.tables.len(),
            declared.len()
        )));
    }
    for (spec, table) in declared.iter().zip(&output.tables) {
        let same = Arc::ptr_eq(&spec.schema, &table.schema())
            || spec.schema.fields() == table.schema().fields();
        if !same {
            return Err(SimError::Model(format!(
                "output `{}` has columns {:?}, the model declares {:?}",
                spec.name,
                table.schema().fields(),
                spec.schema.fields()
            )));
        }
    }
    Ok(())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

impl Actor for SimWorker {
    type Context = SyncContext<Self>;
}

impl Handler<RunTask> for SimWorker {
    type Result = Result<(), actix::MailboxError>;

    fn handle(&mut self, msg: RunTask, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let task = msg.0;
        let Attempts {
            result,
            failed_attempts,
        } = self.run(&task);
        let ret = SimReturn {
            task,
            result,
            failed_attempts,
        };
        // Blocking sends from this worker thread: they wait while a mailbox is full.
        futures_executor::block_on(self.aggregator.send(Replicate(ret.clone())))?;
        futures_executor::block_on(self.writer.send(Replicate(ret)))?;
        Ok(())
    }
}
