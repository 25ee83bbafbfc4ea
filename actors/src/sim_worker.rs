//! SimWorker: runs the model, one chunk of replicates per message, on a thread of its own.
//!
//! The sweep stores parameter sets by column; a worker materialises the [`ParameterSet`] of the
//! point it runs and keeps it while the next tasks are of the same point (a chunk holds
//! consecutive replicates of a point), so that is one set per point, not per replicate.
//!
//! A failed replicate is run again when the job's retry policy (`[model] max_attempts`,
//! `retry`) says so; the return carries the failed attempts besides the last result.
//!
//! Simulation is CPU-bound and blocking, so workers run under a `SyncArbiter` (one OS thread
//! each), off the async arbiters. The SyncArbiter's inner queue is unbounded; it is bounded in
//! front by the Batcher, which never has more than `RunOptions::max_tasks_in_flight` tasks
//! handed out. A worker forwards the returns of a chunk in one message to each bounded mailbox
//! and waits only while a mailbox is full ([`deliver_blocking`]), so a slow Aggregator or
//! ParquetWriter makes the workers wait (backpressure) instead of queueing, and a fast one
//! costs them no wait at all.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Handler, Recipient, SyncContext};
use simsweep_engine::collect::{SimReturn, SimTask};
use simsweep_engine::model::{Attempts, OutputSpec, SimError, SimOutput};
use simsweep_engine::params::ParameterSet;
use simsweep_engine::progress::{CancelToken, InFlightCounters, PanicPoint};
use simsweep_engine::spec::Job;

use crate::messages::{deliver_blocking, Replicates, RunChunk, StageStopped};

/// A simulation worker.
pub struct SimWorker {
    job: Arc<Job>,
    outputs: Vec<OutputSpec>,
    aggregator: Recipient<Replicates>,
    writer: Recipient<Replicates>,
    counters: Arc<InFlightCounters>,
    cancel: CancelToken,
    /// The point whose parameter set `params` is (the last point run), if any.
    params_point: Option<u64>,
    /// The parameter set of `params_point`.
    params: ParameterSet,
    panic_in: Option<PanicPoint>,
    /// Whether this worker has run a chunk: its first is not used to size chunks (it may
    /// include starting an external model's process, hundreds of times a task's time).
    ran_a_chunk: bool,
    /// The run's `job` span, entered while handling (log lines name the job).
    span: tracing::Span,
    /// Dropped with the worker: the run waits for every worker's to be dropped (see
    /// [`crate::run_dataflow`]).
    _alive: crossbeam_channel::Sender<()>,
}

impl SimWorker {
    /// A worker running `job`'s simulator and sending returns to `aggregator` and `writer`,
    /// keeping `counters.tasks_queued`/`tasks_running`/`worker_busy_ns` up to date. Once
    /// `cancel` is set it starts no new task and no new attempt.
    pub fn new(
        job: Arc<Job>,
        aggregator: Recipient<Replicates>,
        writer: Recipient<Replicates>,
        counters: Arc<InFlightCounters>,
        cancel: CancelToken,
        panic_in: Option<PanicPoint>,
        alive: crossbeam_channel::Sender<()>,
        span: tracing::Span,
    ) -> Self {
        let outputs = job.simulator().outputs();
        SimWorker {
            job,
            outputs,
            aggregator,
            writer,
            counters,
            cancel,
            params_point: None,
            params: ParameterSet::new(),
            panic_in,
            ran_a_chunk: false,
            _alive: alive,
            span,
        }
    }

    /// Runs the task's attempts, with parameters `params`, per the job's retry policy (no retry
    /// once the run is stopping).
    fn run(&self, task: &SimTask, params: &ParameterSet) -> Attempts {
        let cancel = &self.cancel;
        self.job
            .model()
            .retry
            .run_while(|| !cancel.is_cancelled(), |_attempt| self.simulate(task, params))
    }

    /// Runs `tasks` in one [`Simulator::simulate_many`](simsweep_engine::model::Simulator::simulate_many)
    /// call, then the further attempts of those that failed per the retry policy, pushing their
    /// returns to `returns`. Returns the tasks still to run: all of them when the call failed as
    /// a whole (none has a result then), none otherwise.
    fn run_many(&self, tasks: Vec<SimTask>, returns: &mut Vec<SimReturn>) -> Vec<SimTask> {
        let counters = &self.counters;
        // The parameter sets of the chunk's points (a chunk holds consecutive replicates of a
        // point, so a few sets at most).
        let mut points: Vec<(u64, ParameterSet)> = Vec::new();
        let mut which = Vec::with_capacity(tasks.len());
        for task in &tasks {
            if points.last().map(|(p, _)| *p) != Some(task.point) {
                points.push((task.point, self.job.sweep().params(task.point as usize)));
            }
            which.push(points.len() - 1);
        }
        let calls: Vec<(&ParameterSet, u32)> =
            tasks.iter().zip(&which).map(|(task, &i)| (&points[i].1, task.seed)).collect();
        let simulator = self.job.simulator();
        counters.tasks_running.add(tasks.len() as u64);
        let results = catch_unwind(AssertUnwindSafe(|| simulator.simulate_many(&calls)))
            .unwrap_or_else(|panic| Err(SimError::Panic(panic_message(panic.as_ref()))));
        counters.tasks_running.sub(tasks.len() as u64);
        let results = match results {
            Ok(results) if results.len() == tasks.len() => results,
            Ok(results) => {
                tracing::warn!(
                    tasks = tasks.len(),
                    results = results.len(),
                    "simulate_many returned a result count unlike its task count; running the \
                     tasks one by one"
                );
                return tasks;
            }
            Err(error) => {
                if !self.cancel.is_cancelled() {
                    tracing::warn!(
                        %error,
                        tasks = tasks.len(),
                        "a call of several tasks failed as a whole; running them one by one"
                    );
                }
                return tasks;
            }
        };
        let cancel = &self.cancel;
        for ((task, result), &i) in tasks.into_iter().zip(results).zip(&which) {
            counters.tasks_queued.sub(1);
            let first = result.and_then(|output| {
                check_outputs(&self.outputs, &output)?;
                Ok(output)
            });
            let params = &points[i].1;
            let Attempts { result, failed_attempts } = self.job.model().retry.continue_while(
                first,
                || !cancel.is_cancelled(),
                |_attempt| self.simulate(&task, params),
            );
            returns.push(SimReturn { task, result, failed_attempts });
        }
        Vec::new()
    }

    fn simulate(&self, task: &SimTask, params: &ParameterSet) -> Result<SimOutput, SimError> {
        let simulator = &self.job.simulator();
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

impl Drop for SimWorker {
    /// Releases what this thread holds for the model (an external model's worker process), so
    /// that nothing the run started outlives it.
    fn drop(&mut self) {
        let _entered = self.span.clone().entered();
        self.job.simulator().release_thread();
    }
}

impl Handler<RunChunk> for SimWorker {
    type Result = Result<Vec<u32>, StageStopped>;

    fn handle(&mut self, msg: RunChunk, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let _entered = self.span.clone().entered();
        if let Some(task) = msg.0.first() {
            PanicPoint::check(self.panic_in, PanicPoint::SimWorker, task.batch.index);
        }
        let counters = &self.counters;
        let start = Instant::now();
        let mut returns = Vec::with_capacity(msg.0.len());
        let mut skipped: Vec<u32> = Vec::new();
        let mut tasks = msg.0;
        if self.job.simulator().runs_many() && tasks.len() > 1 && !self.cancel.is_cancelled() {
            // One call for the chunk; the tasks whose call failed as a whole (the worker
            // crashed, say) are run again one by one below, each with its own attempts.
            tasks = self.run_many(tasks, &mut returns);
        }
        for task in tasks {
            counters.tasks_queued.sub(1);
            if self.cancel.is_cancelled() {
                // Stopping: leave the rest of the chunk; its batches are dropped, not committed.
                if !skipped.contains(&task.batch.index) {
                    skipped.push(task.batch.index);
                }
                continue;
            }
            counters.tasks_running.add(1);
            if self.params_point != Some(task.point) {
                self.params = self.job.sweep().params(task.point as usize);
                self.params_point = Some(task.point);
            }
            let Attempts { result, failed_attempts } = self.run(&task, &self.params);
            counters.tasks_running.sub(1);
            returns.push(SimReturn { task, result, failed_attempts });
        }
        if self.cancel.is_cancelled_now() {
            // A hard stop: the simulations that ran may have been killed by it; their batches
            // are dropped, not committed.
            for r in returns.drain(..) {
                if !skipped.contains(&r.task.batch.index) {
                    skipped.push(r.task.batch.index);
                }
            }
            return Ok(skipped);
        }
        let busy = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counters.worker_busy_ns.fetch_add(busy, Ordering::Relaxed);
        counters.simulations_finished.fetch_add(returns.len() as u64, Ordering::Relaxed);
        if self.ran_a_chunk {
            counters.task_time_ns.fetch_add(busy, Ordering::Relaxed);
            counters.tasks_timed.fetch_add(returns.len() as u64, Ordering::Relaxed);
        }
        self.ran_a_chunk = true;
        // Into both mailboxes without waiting for the handlers: this thread blocks only while a
        // mailbox is full (a stage is behind), so the worker goes on to its next chunk at once.
        // The Aggregator stops when the writer it feeds has gone: name the writer then.
        deliver_blocking(&self.aggregator, Replicates(returns.clone())).map_err(|_| {
            StageStopped(if self.writer.connected() {
                "the Aggregator"
            } else {
                "the ParquetWriter"
            })
        })?;
        deliver_blocking(&self.writer, Replicates(returns))
            .map_err(|_| StageStopped("the ParquetWriter"))?;
        Ok(skipped)
    }
}
