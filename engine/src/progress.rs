//! What a run reports while it goes and when it ends, and how a caller stops it.
//!
//! The same types serve the command line (a progress bar), an embedding host, and later the
//! daemon: a [`ProgressObserver`] receives [`ProgressEvent`]s, a [`CancelToken`] asks the run to
//! stop, and the run returns a [`Report`].

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::params::ParamValue;

/// Default number of parameter sets per batch.
pub const DEFAULT_BATCH_SIZE: usize = 200;
/// Default number of batches that may be open (released, not yet committed) at once: one
/// computing while the previous one is written. 3 was measured side by side
/// (`benches/scale.rs`, jobs `*-open3`): no gain beyond the noise, and 30% more peak memory.
pub const DEFAULT_MAX_OPEN_BATCHES: usize = 2;
/// Default number of tasks handed to the workers but not yet returned, per worker: two chunks,
/// one running and one waiting, so a worker never waits for the Batcher.
pub const DEFAULT_TASKS_IN_FLIGHT_PER_WORKER: usize = 2 * DEFAULT_TASKS_PER_CHUNK;
/// Default number of tasks in one message to a worker (and of returns in one message from it).
///
/// Each message costs a thread hand-off (tens of µs on a busy machine); a chunk makes that cost
/// per chunk, not per simulation.
pub const DEFAULT_TASKS_PER_CHUNK: usize = 64;
/// Default of [`RunOptions::max_buffer_bytes`]: 1 GiB. The default batch (200 sets × 10
/// replicates of a few hundred rows of a few columns) holds a few MB; a model with hundreds of
/// output columns reaches this at batch sizes in the hundreds, and is then held to one batch
/// at a time.
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 1 << 30;
/// Default capacity of the Aggregator's and ParquetWriter's mailboxes, in messages.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 64;

/// An actor of the dataflow, for [`RunOptions::panic_in`]. Test support only.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicPoint {
    /// The Batcher, on a batch's commit.
    Batcher,
    /// A SimWorker, on a chunk of tasks.
    SimWorker,
    /// The Aggregator, on returns.
    Aggregator,
    /// The ParquetWriter, on returns.
    ParquetWriter,
}

impl PanicPoint {
    /// Panics (test support) when `at` is this point and `batch` is 2 or later.
    pub fn check(at: Option<PanicPoint>, this: PanicPoint, batch: u32) {
        if at == Some(this) && batch >= 2 {
            panic!("injected panic in {this:?} at batch {batch} (test support)");
        }
    }
}

/// How a run is executed; none of this changes its results (`restart` only decides what
/// happens to an earlier run's results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Parameter sets per batch: the unit of commit and of resume. Used as given: a job's own
    /// `batch_size` applies only through [`RunOptions::for_job`].
    pub batch_size: NonZeroUsize,
    /// Simulation worker threads.
    pub workers: NonZeroUsize,
    /// Batches open at once (see [`DEFAULT_MAX_OPEN_BATCHES`]).
    pub max_open_batches: NonZeroUsize,
    /// Tasks handed out but not returned, per worker.
    pub tasks_in_flight_per_worker: NonZeroUsize,
    /// Capacity of the Aggregator's and ParquetWriter's mailboxes, in messages.
    pub mailbox_capacity: NonZeroUsize,
    /// Start over: delete an earlier run's results in the output directory (simsweep's own
    /// files only), whatever job they belong to, instead of resuming or refusing them.
    pub restart: bool,
    /// Test support: make the commit fail at this point (at this batch, or any if `None`), as
    /// a crash would. Not part of the stable interface.
    #[doc(hidden)]
    pub fault: Option<(crate::output::FaultPoint, Option<u32>)>,
    /// Tasks per message to a worker (see [`DEFAULT_TASKS_PER_CHUNK`]).
    pub tasks_per_chunk: NonZeroUsize,
    /// Test support: make this actor panic when it handles work of batch 2 or later, as a
    /// defect would. Not part of the stable interface.
    #[doc(hidden)]
    pub panic_in: Option<PanicPoint>,
    /// Test support: every batch commit takes this much longer, as on a slow disk. Not part of
    /// the stable interface.
    #[doc(hidden)]
    pub slow_commit: Option<Duration>,
    /// Run only this shard of the sweep, into `<output>/shard=I-of-K/` (see
    /// [`crate::plan::Shard`]); `None` runs the whole sweep into `<output>/`.
    pub shard: Option<crate::plan::Shard>,
    /// The id the run's log lines (a `job` span with field `id`) and events
    /// ([`ProgressEvent::job_id`]) carry, so that a process running several jobs can tell them
    /// apart: a daemon's job id, say. `None`: the output directory (unique among the runs of one
    /// machine, since each holds its lock).
    pub job_id: Option<String>,
    /// The most bytes of model outputs the run holds in memory (open batches and the batch being
    /// committed), see [`DEFAULT_MAX_BUFFER_BYTES`]. No new batch is released while it is
    /// reached (one batch always is); a batch larger than it is warned about, with the batch
    /// size that would fit; a replicate whose output alone is larger stops the run with
    /// [`crate::EngineError::OptionInvalid`].
    pub max_buffer_bytes: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        RunOptions {
            batch_size: nz(DEFAULT_BATCH_SIZE),
            workers: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            max_open_batches: nz(DEFAULT_MAX_OPEN_BATCHES),
            tasks_in_flight_per_worker: nz(DEFAULT_TASKS_IN_FLIGHT_PER_WORKER),
            mailbox_capacity: nz(DEFAULT_MAILBOX_CAPACITY),
            restart: false,
            fault: None,
            tasks_per_chunk: nz(DEFAULT_TASKS_PER_CHUNK),
            shard: None,
            panic_in: None,
            slow_commit: None,
            job_id: None,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
        }
    }
}

impl RunOptions {
    /// The default options with the job's `batch_size` when its spec sets one: what the
    /// `simsweep` command starts from. ([`RunOptions::default`] ignores the job: its batch size
    /// is always [`DEFAULT_BATCH_SIZE`].)
    pub fn for_job(job: &crate::spec::Job) -> RunOptions {
        let mut options = RunOptions::default();
        if let Some(batch_size) = job.batch_size() {
            options.batch_size = batch_size;
        }
        options
    }

    /// The most tasks handed to workers and not yet returned.
    ///
    /// Together with `max_open_batches` this bounds what a run holds: at most
    /// `max_open_batches × batch_size × R` replicates' outputs are buffered (in the Aggregator
    /// and the ParquetWriter, for the open batches), whatever the number of parameter sets.
    pub fn max_tasks_in_flight(&self) -> usize {
        self.workers.get() * self.tasks_in_flight_per_worker.get()
    }

    /// Tasks per message to a worker: [`Self::tasks_per_chunk`], but never more than the
    /// in-flight bound allows.
    pub fn chunk_len(&self) -> usize {
        self.tasks_per_chunk.get().min(self.tasks_in_flight_per_worker.get())
    }
}

/// What is in flight in a run, as plain numbers: a snapshot of [`InFlightCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// Tasks handed out by the Batcher whose returns it has not been told of: bounded by
    /// [`RunOptions::max_tasks_in_flight`].
    pub tasks_in_flight: u64,
    /// Tasks handed out by the Batcher that no worker has started.
    pub tasks_queued: u64,
    /// Tasks a worker is running.
    pub tasks_running: u64,
    /// Replicates held by the Aggregator, waiting for the rest of their parameter set.
    pub replicates_awaiting_aggregation: u64,
    /// Model-output rows held by the ParquetWriter (open batches and batches being committed).
    pub rows_buffered: u64,
    /// Bytes of Arrow memory those rows hold (bounded by [`RunOptions::max_buffer_bytes`]).
    pub bytes_buffered: u64,
}

impl InFlight {
    /// `(name, value)` pairs, the names used in the manifest's `peak_in_flight`.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("tasks_in_flight", self.tasks_in_flight),
            ("bytes_buffered", self.bytes_buffered),
            ("tasks_queued", self.tasks_queued),
            ("tasks_running", self.tasks_running),
            ("replicates_awaiting_aggregation", self.replicates_awaiting_aggregation),
            ("rows_buffered", self.rows_buffered),
        ]
    }
}

/// One counter: its current value and the highest it reached.
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    /// Subtracts `n` (saturating at 0).
    pub fn sub(&self, n: u64) {
        let _ = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
    /// Sets the value (for a stage that knows what it holds).
    pub fn set(&self, n: u64) {
        self.now.store(n, Ordering::Relaxed);
        self.peak.fetch_max(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
    /// Highest value so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// The in-flight counters of one run, shared by its actors (each writes its own gauges; nobody
/// waits on them). Owned by the run, never global.
#[derive(Debug, Default)]
pub struct InFlightCounters {
    /// See [`InFlight::tasks_in_flight`].
    pub tasks_in_flight: Gauge,
    /// See [`InFlight::tasks_queued`].
    pub tasks_queued: Gauge,
    /// See [`InFlight::tasks_running`].
    pub tasks_running: Gauge,
    /// See [`InFlight::replicates_awaiting_aggregation`].
    pub replicates_awaiting_aggregation: Gauge,
    /// See [`InFlight::rows_buffered`].
    pub rows_buffered: Gauge,
    /// See [`InFlight::bytes_buffered`].
    pub bytes_buffered: Gauge,
    /// Bytes of model outputs the writer has taken in this run, and of how many replicates
    /// (failed ones included, with no bytes): the mean size of a replicate's outputs, for the
    /// Batcher's memory budget.
    pub output_bytes_taken: AtomicU64,
    /// See `output_bytes_taken`.
    pub outputs_taken: AtomicU64,
    /// Nanoseconds the workers spent inside the model, summed over workers: with the run's wall
    /// time and worker count it gives the workers' idle fraction.
    pub worker_busy_ns: AtomicU64,
    /// Simulations the workers finished in this run (see
    /// [`ProgressEvent::InFlight::simulations_finished`]).
    pub simulations_finished: AtomicU64,
    /// Nanoseconds of the chunks that size the next ones: as `worker_busy_ns`, without each
    /// worker's first chunk (which may include starting an external model's process).
    pub task_time_ns: AtomicU64,
    /// Tasks of the chunks counted in `task_time_ns`.
    pub tasks_timed: AtomicU64,
    /// Batch commits started by the writer and not yet reported to the Batcher: a run does not
    /// end (and release its output directory) while one still writes.
    pub commits_running: Gauge,
    /// Set by the Batcher when it is about to end the run: no commit may start after it.
    commits_closed: AtomicBool,
}

impl InFlightCounters {
    /// Current values.
    pub fn now(&self) -> InFlight {
        InFlight {
            tasks_in_flight: self.tasks_in_flight.get(),
            tasks_queued: self.tasks_queued.get(),
            tasks_running: self.tasks_running.get(),
            replicates_awaiting_aggregation: self.replicates_awaiting_aggregation.get(),
            rows_buffered: self.rows_buffered.get(),
            bytes_buffered: self.bytes_buffered.get(),
        }
    }
    /// Highest values so far.
    pub fn peaks(&self) -> InFlight {
        InFlight {
            tasks_in_flight: self.tasks_in_flight.peak(),
            tasks_queued: self.tasks_queued.peak(),
            tasks_running: self.tasks_running.peak(),
            replicates_awaiting_aggregation: self.replicates_awaiting_aggregation.peak(),
            rows_buffered: self.rows_buffered.peak(),
            bytes_buffered: self.bytes_buffered.peak(),
        }
    }
    /// Counts a commit as running, unless the run is ending ([`Self::close_commits`]): returns
    /// whether the commit may start. A commit that starts must end with
    /// `commits_running.sub(1)`.
    pub fn begin_commit(&self) -> bool {
        self.commits_running.add(1);
        // With the fence in `close_commits`: either the Batcher sees this commit running, or
        // this sees the run closed (the two sides of Dekker's handshake).
        fence(Ordering::SeqCst);
        if self.commits_closed.load(Ordering::SeqCst) {
            self.commits_running.sub(1);
            return false;
        }
        true
    }

    /// Lets no further commit start; returns whether none is running (then the run may end:
    /// no commit can outlive it).
    pub fn close_commits(&self) -> bool {
        self.commits_closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.commits_running.get() == 0
    }

    /// Time the workers spent in the model so far, summed over workers.
    pub fn worker_busy(&self) -> Duration {
        Duration::from_nanos(self.worker_busy_ns.load(Ordering::Relaxed))
    }
}

/// How far a run is. Counts only committed work, so they never go backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Batches committed, including those committed by an earlier run that this one resumed.
    pub batches_committed: u32,
    /// Batches in the whole sweep.
    pub batches_planned: u32,
    /// Simulations (replicates) committed.
    pub simulations_committed: u64,
    /// Simulations in the whole sweep.
    pub simulations_planned: u64,
    /// Failed replicates among those committed in this run.
    pub failed: u64,
}

/// An event of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The run started; `progress` counts what earlier runs already committed.
    Started {
        /// The run's id ([`RunOptions::job_id`]).
        job_id: Arc<str>,
        /// Progress at start.
        progress: Progress,
        /// Where the files go.
        output_dir: PathBuf,
    },
    /// Batch `index` was committed (its files are in place and the manifest lists it).
    BatchCommitted {
        /// The run's id ([`RunOptions::job_id`]).
        job_id: Arc<str>,
        /// Batch index.
        index: u32,
        /// Progress after the commit.
        progress: Progress,
        /// Time since this run started.
        elapsed: Duration,
    },
    /// What is in flight, sent every [`IN_FLIGHT_REPORT_INTERVAL`] and once at the end of the
    /// dataflow. Diagnostic: unlike [`ProgressEvent::BatchCommitted`] it says nothing about what
    /// is durable.
    InFlight {
        /// The run's id ([`RunOptions::job_id`]).
        job_id: Arc<str>,
        /// Current values.
        now: InFlight,
        /// Highest values since this run started.
        peaks: InFlight,
        /// Time the workers spent in the model, summed over workers.
        worker_busy: Duration,
        /// Simulation workers of the run.
        workers: usize,
        /// Time since this run started.
        elapsed: Duration,
        /// Simulations this run finished (returned by a worker, committed or not yet): the
        /// progress within open batches, for a display. Not durable, see `BatchCommitted`.
        simulations_finished: u64,
    },
}

impl ProgressEvent {
    /// The id of the run that sent it ([`RunOptions::job_id`]).
    pub fn job_id(&self) -> &str {
        match self {
            ProgressEvent::Started { job_id, .. }
            | ProgressEvent::BatchCommitted { job_id, .. }
            | ProgressEvent::InFlight { job_id, .. } => job_id,
        }
    }
}

/// How often [`ProgressEvent::InFlight`] is sent.
pub const IN_FLIGHT_REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Receives a run's events. Called from the run's threads: keep it quick.
pub trait ProgressObserver: Send + Sync {
    /// One event.
    fn on_event(&self, event: &ProgressEvent);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressObserver for NoProgress {
    fn on_event(&self, _event: &ProgressEvent) {}
}

/// Asks a run to stop. Clones share one state.
///
/// - [`cancel`](Self::cancel), the graceful stop: no new work is released, the simulations
///   running finish, open batches that complete are committed, the others are dropped.
/// - [`cancel_now`](Self::cancel_now), the hard stop: also kills the simulations running (an
///   external model's worker process groups, see [`Simulator::abort`]); their batches are
///   dropped, and the run returns within [`HARD_STOP_SECONDS`].
///
/// Either way the run returns a [`Report`] with `cancelled` set, and the output stays
/// resumable: only committed batches count.
///
/// [`Simulator::abort`]: crate::model::Simulator::abort
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    now: AtomicBool,
}

/// The longest a run takes to return after [`CancelToken::cancel_now`], in seconds. A built-in
/// simulation still running then (it cannot be killed; they take milliseconds) is left to end
/// on its own thread and its result is discarded.
pub const HARD_STOP_SECONDS: f64 = 2.0;

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the run to stop gracefully (see the type's docs).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
    /// Asks the run to stop at once (see the type's docs); also a graceful stop already under
    /// way.
    pub fn cancel_now(&self) {
        self.0.now.store(true, Ordering::SeqCst);
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
    /// Whether [`cancel`](Self::cancel) or [`cancel_now`](Self::cancel_now) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }
    /// Whether [`cancel_now`](Self::cancel_now) was called.
    pub fn is_cancelled_now(&self) -> bool {
        self.0.now.load(Ordering::SeqCst)
    }
}

/// One of the best parameter sets of a target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestParameterSet {
    /// Its `param_id`.
    pub param_id: String,
    /// Its position in the sweep.
    pub point: u64,
    /// Parameter name → value, in the target file's column order.
    pub parameters: Vec<(String, ParamValue)>,
    /// The loss. In JSON a finite loss is a number and a non-finite one a string, `"inf"`,
    /// `"-inf"` or `"NaN"` (JSON has no such numbers; `null` would read as "no loss").
    #[serde(with = "loss_json")]
    pub loss: f64,
    /// The loss's Monte Carlo standard error over replicates (the target table's `loss_se`;
    /// see [`crate::loss::aggregate_with_se`]); `None` when there is none (one replicate, a
    /// non-finite loss, an output written before standard errors were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_loss_json")]
    pub loss_se: Option<f64>,
    /// Failed replicates among its replicates.
    pub n_failed: u32,
}

/// The best parameter sets of one target, smallest loss first; non-finite losses rank after
/// every finite one (+inf after finite, NaN and null not ranked), and are counted.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetSummary {
    /// Target name.
    pub target: String,
    /// Up to `k` parameter sets; ties broken by sweep position.
    pub best: Vec<BestParameterSet>,
    /// Parameter sets scored so far (rows of the committed target files).
    pub rows: u64,
    /// Of those, how many have no loss (null): no replicate succeeded, or the model's output
    /// could not be aligned with the observations (the log says why).
    pub null_losses: u64,
    /// Of those, how many have a NaN loss: the loss was computed but is undefined (e.g. a
    /// model output that is NaN). Not ranked.
    #[serde(default)]
    pub nan_losses: u64,
    /// Of those, how many have an infinite loss: infinitely bad (e.g. a zero prediction where
    /// cases were observed, under a Poisson or negative-binomial likelihood). Ranked after every
    /// finite loss.
    #[serde(default)]
    pub infinite_losses: u64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The output directory.
    pub output_dir: PathBuf,
    /// Progress at the end.
    pub progress: Progress,
    /// Batches already committed when this run started (resumed).
    pub batches_resumed: u32,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// True when stopped by a [`CancelToken`] before the sweep was complete.
    pub cancelled: bool,
    /// Best parameter sets per target (over all committed batches), by their sweep losses.
    pub summary: Vec<TargetSummary>,
    /// The refine step, when the job has one and the sweep has finished (see
    /// [`crate::spec::RefineSpec`]).
    pub refined: Option<RefineReport>,
}

/// What the refine step of a run did: its best parameter sets by refined loss.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineReport {
    /// Its output directory, `<output>/refine`.
    pub output_dir: PathBuf,
    /// Parameter sets refined (the union of each target's `top_k`).
    pub parameter_sets: u64,
    /// Replicates per refined set.
    pub replicates: u32,
    /// Number of the first refine replicate of each set (the sweep's replicates: the seeds are
    /// ones the sweep did not use).
    pub first_replicate: u32,
    /// False when the run was cancelled before every refined set was committed.
    pub finished: bool,
    /// Best parameter sets per target by refined loss, with their standard errors.
    pub summary: Vec<TargetSummary>,
    /// The refined parameter sets with their sweep losses, per target (in sweep order; a set
    /// whose sweep loss is null is left out), to set beside the refined ones.
    pub sweep: Vec<TargetSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_commit_starts_after_the_run_closes_commits() {
        let counters = InFlightCounters::default();
        assert!(counters.begin_commit());
        assert_eq!(counters.commits_running.get(), 1);
        assert!(!counters.close_commits(), "a commit is running: the run may not end yet");
        assert!(!counters.begin_commit(), "closed: no new commit");
        assert_eq!(counters.commits_running.get(), 1, "the refused commit is not counted");
        counters.commits_running.sub(1);
        assert!(counters.close_commits(), "nothing running: the run may end");
    }

    #[test]
    fn gauges_keep_their_peak() {
        let g = Gauge::default();
        g.add(3);
        g.sub(2);
        g.set(2);
        g.sub(5);
        assert_eq!((g.get(), g.peak()), (0, 3));
    }
}

/// JSON for a loss that may be infinite: finite as a number, else `"inf"`, `"-inf"`, `"NaN"`.
mod loss_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(loss: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match *loss {
            x if x.is_finite() => serializer.serialize_f64(x),
            x if x.is_nan() => serializer.serialize_str("NaN"),
            x if x > 0.0 => serializer.serialize_str("inf"),
            _ => serializer.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Loss {
            Number(f64),
            Text(String),
        }
        match Loss::deserialize(deserializer)? {
            Loss::Number(x) => Ok(x),
            Loss::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a loss (a number, \"inf\", \"-inf\" or \"NaN\")"
                ))),
            },
        }
    }

    #[cfg(test)]
    mod tests {
        use crate::progress::BestParameterSet;

        #[test]
        fn non_finite_losses_round_trip_as_strings() {
            for (loss, json) in [
                (f64::INFINITY, "\"inf\""),
                (f64::NEG_INFINITY, "\"-inf\""),
                (2.5, "2.5"),
                (0.1 + 0.2, "0.30000000000000004"),
            ] {
                let b = BestParameterSet {
                    param_id: "p".into(),
                    point: 3,
                    parameters: vec![],
                    loss,
                    loss_se: None,
                    n_failed: 0,
                };
                let text = serde_json::to_string(&b).unwrap();
                assert!(text.contains(&format!("\"loss\":{json}")), "{text}");
                let back: BestParameterSet = serde_json::from_str(&text).unwrap();
                assert_eq!(back, b);
            }
            let nan: BestParameterSet = serde_json::from_str(
                r#"{"param_id":"p","point":0,"parameters":[],"loss":"NaN","n_failed":0}"#,
            )
            .unwrap();
            assert!(nan.loss.is_nan());
            let bad = serde_json::from_str::<BestParameterSet>(
                r#"{"param_id":"p","point":0,"parameters":[],"loss":"big","n_failed":0}"#,
            );
            assert!(bad.unwrap_err().to_string().contains("`big` is not a loss"));
        }
    }
}

/// [`loss_json`] for an optional value (`+∞` standard errors are written as `"inf"`).
mod opt_loss_json {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::loss_json::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::loss_json")] f64);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
    }
}
