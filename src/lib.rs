//! simsweep: bounded, resumable, deterministic sweeps of stochastic simulations, written to
//! Parquet batch by batch.
//!
//! A sweep runs N parameter sets × R replicates of a model, scores each parameter set against
//! observed data (one loss per target), and commits its results batch by batch, so memory is
//! set by the batch size, never by N. The same entry point, [`run`], serves the `simsweep`
//! command, a host application embedding the engine, and (later) the daemon.
//!
//! | item | what |
//! | --- | --- |
//! | [`load_job`] / [`parse_job`] | read and validate a job spec (TOML) into a [`Job`] |
//! | [`run`] | run a job to the end, resuming what an earlier run committed |
//! | [`RunOptions`] | batch size, workers, bounds (none of them change results) |
//! | [`ProgressObserver`], [`ProgressEvent`] | what a run tells while it goes |
//! | [`CancelToken`] | ask a run to stop; its output stays resumable |
//! | [`Report`] | what a run did, with the best parameter sets per target |
//! | [`status`], [`RunStatus`] | the state of an output directory (running, dead or finished run) |
//! | [`Shard`], [`merge`], [`shards`] | one shard of a sweep (`RunOptions::shard`); checking and merging a sharded output |
//! | [`engine`], [`actors`] | the two crates underneath, for what this facade does not re-export |
//!
//! ```no_run
//! use std::sync::Arc;
//! let mut job = simsweep::load_job("examples/flu-boarding-school/job.toml".as_ref())?;
//! job.set_output_dir("/tmp/flu-output"); // else the job's `output`, next to the job file
//! let report = simsweep::run(
//!     &job,
//!     &simsweep::RunOptions::for_job(&job), // the job's batch_size; defaults for the rest
//!     Arc::new(simsweep::NoProgress),
//!     simsweep::CancelToken::new(),
//! )?;
//! println!("{} simulations committed", report.progress.simulations_committed);
//! # Ok::<(), simsweep::Error>(())
//! ```

pub mod daemon;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

pub use simsweep_actors as actors;
pub use simsweep_engine as engine;

pub use simsweep_engine::output::merge::MergeIndex;
pub use simsweep_engine::plan::Shard;
pub use simsweep_engine::progress::{
    BestParameterSet, CancelToken, InFlight, NoProgress, Progress, ProgressEvent, ProgressObserver,
    RefineReport, Report, RunOptions, TargetSummary, DEFAULT_BATCH_SIZE,
};
pub use simsweep_engine::spec::{load_job, parse_job, Job, JobBuilder};
pub use simsweep_engine::{EngineError, Remedy};

use simsweep_actors::run_dataflow;
pub use simsweep_actors::RunError;
pub use simsweep_engine::output::RunStatus;
use simsweep_engine::output::{
    prepare_output_dir_for, read_status, utc_now_rfc3339, write_json_atomic, Manifest,
    OutputLayout, OutputLock, Prepare, ShardSlice, SpecIdentity,
};
use simsweep_engine::plan::Planner;
use simsweep_engine::summary::best_per_target;

/// Number of best parameter sets per target kept in `summary.json` and the [`Report`].
pub const SUMMARY_BEST_PER_TARGET: usize = simsweep_engine::summary::BEST_PER_TARGET;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input (spec, data, output directory) or an I/O failure; see
    /// [`EngineError::is_input_error`].
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The dataflow failed while running.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Error {
    /// True for the user's input errors (exit code 2 on the command line).
    pub fn is_input_error(&self) -> bool {
        matches!(self, Error::Engine(e) if e.is_input_error())
    }

    /// True when a file of the output directory is damaged (see
    /// [`EngineError::is_damaged_output`]): running the same command again cannot resume; the
    /// file must be restored, or the run started over with `--restart`.
    pub fn is_damaged_output(&self) -> bool {
        match self {
            Error::Engine(e) | Error::Run(RunError::Engine(e)) => e.is_damaged_output(),
            _ => false,
        }
    }
}

/// What [`run`] would find in a job's output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputState {
    /// Nothing of this job there yet: a run starts from the beginning.
    New,
    /// An interrupted run of this same job: a run resumes after its committed batches.
    Resumable {
        /// Batches committed so far.
        batches_committed: usize,
        /// Batches planned (at the batch size of the last run).
        batches_planned: u32,
    },
    /// A finished run of this same job: a run only prints its summary again.
    Finished,
}

/// Looks at `job.output_dir()` without changing anything (what `simsweep validate` reports).
///
/// # Errors
/// [`EngineError::OutputConflict`] (an input error) when the path, or one of its ancestors, is
/// not a directory, or it holds the results of another job (another spec hash);
/// [`EngineError::Damaged`] when its manifest cannot be decoded, [`EngineError::Io`] when it
/// cannot be read.
pub fn check_output(job: &Job) -> Result<OutputState, Error> {
    let layout = OutputLayout::new(job.output_dir());
    simsweep_engine::output::check_output_path(job.output_dir())?;
    if let Some(holder) = simsweep_engine::output::OutputLock::holder(&layout)? {
        let pid = holder.map_or_else(|| "unknown pid".to_string(), |p| format!("pid {p}"));
        return Err(EngineError::OutputConflict {
            dir: job.output_dir().to_path_buf(),
            message: format!(
                "in use by another simsweep process ({pid}); a run now would be refused"
            ),
            remedy: Remedy::WaitOrOtherOutput,
        }
        .into());
    }
    Ok(match Manifest::load(&layout.manifest_path())? {
        None => OutputState::New,
        Some(m) if m.spec_hash != job.spec_hash() => {
            return Err(EngineError::OutputConflict {
                dir: job.output_dir().to_path_buf(),
                message: format!(
                    "holds the results of another job (spec hash {} here, {} for this job)",
                    &m.spec_hash[..12.min(m.spec_hash.len())],
                    &job.spec_hash()[..12.min(job.spec_hash().len())]
                ),
                remedy: Remedy::RestartOrOtherOutput,
            }
            .into())
        }
        Some(m) => {
            // What a resume checks first: every committed file there and whole.
            simsweep_engine::output::check_committed_files(&layout, &m)?;
            state_of(m)
        }
    })
}

fn state_of(m: Manifest) -> OutputState {
    match m {
        m if m.finished => OutputState::Finished,
        m => OutputState::Resumable {
            batches_committed: m.batches.len(),
            batches_planned: m.batches_planned,
        },
    }
}

/// Most simulation worker threads a run takes (`RunOptions::workers`).
pub const MAX_WORKERS: usize = 512;

/// Most simulations in one batch (`batch_size × replicates`): a batch's replicates are held in
/// memory until the batch is committed.
pub const MAX_SIMULATIONS_PER_BATCH: u64 = 10_000_000;

/// Checks `options` against the job and the machine before anything is written: what
/// [`run`] checks first and `simsweep validate` reports.
///
/// # Errors
/// [`Error::Engine`] with an input error ([`EngineError::OptionInvalid`]) naming the option
/// (its command-line flag) and what to change: more workers than [`MAX_WORKERS`] or than the
/// process may start threads or open files for; a batch of more than
/// [`MAX_SIMULATIONS_PER_BATCH`] simulations.
pub fn check_options(job: &Job, options: &RunOptions) -> Result<(), Error> {
    let invalid = |option: &str, message: String| {
        // `option` is the RunOptions field; the CLI names its own flag.
        Error::Engine(EngineError::OptionInvalid { option: option.to_string(), message })
    };
    let workers = options.workers.get();
    if workers > MAX_WORKERS {
        return Err(invalid(
            "workers",
            format!("{workers} is more than {MAX_WORKERS} simulation threads; give at most {MAX_WORKERS} (default: one per core)"),
        ));
    }
    // An external model runs a process per worker, with three pipes each.
    if job.model().external().is_some() {
        if let Some(files) = open_files_limit() {
            let needed = workers as u64 * 4 + 64;
            if needed > files {
                return Err(invalid(
                    "workers",
                    format!(
                        "{workers} external model workers need about {needed} open files, over \
                         this process's limit of {files} (ulimit -n); give fewer workers or \
                         raise the limit"
                    ),
                ));
            }
        }
    }
    let per_point = if job.sweep().has_fixed_seeds() { 1 } else { u64::from(job.replicates()) };
    let per_batch = options.batch_size.get() as u64 * per_point;
    if per_batch > MAX_SIMULATIONS_PER_BATCH {
        let fits = (MAX_SIMULATIONS_PER_BATCH / per_point).max(1);
        return Err(invalid(
            "batch_size",
            format!(
                "{} parameter sets × {per_point} replicates = {per_batch} simulations per batch, \
                 over the {MAX_SIMULATIONS_PER_BATCH} a batch may hold in memory; give a batch \
                 size of at most {fits}",
                options.batch_size
            ),
        ));
    }
    Ok(())
}

/// The soft limit of open files of this process, if known.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs `job` to the end and returns what it did.
///
/// Writes under `job.output_dir()`; if that directory holds an earlier, interrupted run of the
/// same job (same spec hash), resumes it: committed batches are kept, leftovers of open batches
/// are removed, and the rest is run, so the result is the same rows as one uninterrupted run,
/// whatever `options` were used before or now. With `options.restart`, an earlier run's
/// results (of any job) are deleted first and the job starts over.
///
/// The directory is locked (`<out>/.lock`, an `flock` the kernel drops if the process dies)
/// for the whole run, before anything in it is touched, so two runs never write into one
/// directory. See `docs/commit-protocol.md` for what is written when.
///
/// Blocks the calling thread; do not call it from inside an async runtime (use
/// `spawn_blocking`). `observer` is called from the run's threads.
///
/// # Errors
/// - [`Error::Engine`] with an input error when the output directory is locked by another
///   process (naming its pid), holds another job's results (naming what changed in the spec),
///   or something that is not a simsweep output; nothing of it is deleted then.
/// - [`Error::Engine`] with an I/O error naming the path when a file cannot be written.
/// - [`Error::Run`] when the dataflow fails; committed batches stay committed and resumable.
pub fn run(
    job: &Job,
    options: &RunOptions,
    observer: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
) -> Result<Report, Error> {
    let started = Instant::now();
    check_options(job, options)?;
    let mut job = job.clone();
    // A shard runs into its own folder, with its own lock and commit log.
    if let Some(shard) = options.shard {
        job.set_output_dir(job.output_dir().join(shard.dir_name()));
    }
    let job = Arc::new(job);
    let mut layout = OutputLayout::new(job.output_dir());
    let job_id: Arc<str> = match &options.job_id {
        Some(id) => id.as_str().into(),
        None => job.output_dir().display().to_string().into(),
    };
    let options = &RunOptions { job_id: Some(job_id.to_string()), ..options.clone() };
    // Entered here and by every actor of the run: each log line names the job.
    let span = tracing::info_span!("job", id = %job_id, name = %job.name());
    let _entered = span.enter();

    // The job is validated (a `Job` only comes from `load_job`/`parse_job`), so the directory
    // may be created now, for its lock. Held until this function returns.
    let mut lock = OutputLock::acquire(&layout)?;
    let identity = SpecIdentity::of_job(&job);
    let mode = if options.restart { Prepare::Restart } else { Prepare::Resume };
    let existing = match prepare_output_dir_for(&layout, &identity, mode) {
        Ok(existing) => existing,
        Err(e) => {
            if lock.created_file() && e.is_input_error() {
                // Leave a refused directory as it was found (best effort: the lock is ours).
                let _ = std::fs::remove_file(lock.path());
            }
            return Err(e.into());
        }
    };
    lock.record_pid()?;
    // A restarted sweep's refine step, if any, refined the earlier sweep's best: delete it
    // with the rest of the earlier results (it is simsweep's own output: it has a manifest).
    let refine_dir = job.output_dir().join(engine::spec::REFINE_DIR);
    let report = job.output_dir().join("report.html");
    if options.restart && report.is_file() {
        std::fs::remove_file(&report).map_err(|e| EngineError::io(&report, e))?;
    }
    if options.restart && refine_dir.join("manifest.json").is_file() {
        std::fs::remove_dir_all(&refine_dir).map_err(|e| EngineError::io(&refine_dir, e))?;
        tracing::info!(dir = %refine_dir.display(), "restart: deleted the earlier refine step");
    }
    if let Some((point, batch)) = options.fault {
        layout = match batch {
            Some(b) => layout.with_fault_at_batch(point, b),
            None => layout.with_fault(point),
        };
    }
    let n_points = job.sweep().len() as u64;
    let slice = shard_slice(&job, options, existing.as_ref())?;
    let (committed, next_index) = match &existing {
        Some(m) => (m.committed_ranges(), m.next_index()),
        None => (Vec::new(), 0),
    };
    // A shard numbers its batches as the unsharded plan at its first run's batch size does.
    let next_index = next_index.max(slice.as_ref().map_or(0, |s| {
        u32::try_from(s.first_point / options.batch_size.get() as u64).unwrap_or(u32::MAX)
    }));
    let points = slice.as_ref().map_or(0..n_points, ShardSlice::points);
    let simulations_planned = if job.sweep().has_fixed_seeds() {
        points.end - points.start
    } else {
        (points.end - points.start) * u64::from(job.replicates())
    };
    let planner = Planner::new_in(
        points,
        options.batch_size,
        &committed,
        next_index,
        options.max_open_batches,
    )
    .map_err(|e| EngineError::OutputConflict {
        dir: job.output_dir().to_path_buf(),
        message: format!("the manifest does not fit this job ({e})"),
        remedy: Remedy::RemoveOrOtherOutput,
    })?;
    let mut manifest = existing.unwrap_or_else(|| {
        Manifest::new(
            job.name(),
            job.spec_hash(),
            options.batch_size.get() as u64,
            n_points,
            job.replicates(),
            simulations_planned,
            planner.batches_planned(),
        )
    });
    manifest.shard = slice;
    // An output of manifest format 1 carries no best lists: read them from its files once,
    // so that from now on the commit log alone tells the best (format 2).
    if !manifest.has_best() {
        let target_names: Vec<String> = job.targets().iter().map(|t| t.name.clone()).collect();
        manifest.best =
            best_per_target(&layout, &manifest, &target_names, SUMMARY_BEST_PER_TARGET)?;
        // Format 2, not 3: its target files have no `loss_se` column and its new ones won't.
        manifest.format_version = 2;
    }
    // A resumed run may use another batch size: the manifest tells the plan now in force.
    manifest.batch_size = options.batch_size.get() as u64;
    manifest.batches_planned = planner.batches_planned();
    manifest.spec_parts = identity.parts.clone();
    manifest.workers = Some(options.workers.get() as u64);
    manifest.observations =
        job.targets().iter().map(simsweep_engine::output::TargetObservations::of).collect();
    manifest.updated_at = utc_now_rfc3339();
    manifest.write_atomic(&layout)?;
    let batches_resumed = manifest.batches.len() as u32;
    let mut progress = Progress {
        batches_committed: batches_resumed,
        batches_planned: planner.batches_planned(),
        simulations_committed: manifest.batches.iter().map(|b| b.simulations).sum(),
        simulations_planned,
        failed: 0,
    };
    tracing::info!(
        planned = progress.batches_planned,
        resumed = batches_resumed,
        simulations = progress.simulations_planned,
        "run starts"
    );
    // The observer is the host's code: a panic in it stops the run (as a cancel does) and is
    // returned as an error, never left to unwind through the dataflow's threads.
    let guarded = Arc::new(GuardedObserver::new(observer, cancel.clone()));
    let observer: Arc<dyn ProgressObserver> = guarded.clone();
    observer.on_event(&ProgressEvent::Started {
        job_id: job_id.clone(),
        progress,
        output_dir: job.output_dir().to_path_buf(),
    });

    let mut cancelled = false;
    if !planner.is_finished() || !manifest.finished {
        let outcome = run_dataflow(
            job.clone(),
            layout.clone(),
            manifest,
            planner,
            progress,
            options,
            observer.clone(),
            cancel.clone(),
        )?;
        if let Some(error) = outcome.error {
            return Err(error.into());
        }
        if let Some(message) = guarded.panic_message() {
            return Err(RunError::Internal { part: "the progress observer", message }.into());
        }
        progress = outcome.progress;
        manifest = outcome.manifest;
        cancelled = outcome.cancelled;
    }

    let target_names: Vec<String> = job.targets().iter().map(|t| t.name.clone()).collect();
    let summary = best_per_target(&layout, &manifest, &target_names, SUMMARY_BEST_PER_TARGET)?;
    if manifest.finished {
        write_json_atomic(&layout.summary_path(), &summary)?;
    }
    // The refine step, under this output's lock: after a finished sweep, not for a shard (its
    // best are not the sweep's).
    let mut refined = None;
    if let Some(spec) = job.refine() {
        if manifest.finished && !cancelled && options.shard.is_none() {
            let report = refine(&job, spec, &layout, &manifest, options, &observer, &cancel)?;
            cancelled = report.as_ref().is_some_and(|r| !r.finished);
            refined = report;
        }
    }
    drop(lock);
    Ok(Report {
        output_dir: job.output_dir().to_path_buf(),
        progress,
        batches_resumed,
        elapsed: started.elapsed(),
        cancelled,
        summary,
        refined,
    })
}

/// Runs `job`'s refine step after its finished sweep (see [`engine::spec::RefineSpec`]): the
/// union of each target's `top_k` best sets with a finite loss, run again with the refine
/// replicates into `<output>/refine/`, an output of its own (resumed like any other; restarted
/// when it holds the refinement of other sets, which only a changed sweep gives). `None` when
/// no target has a finite loss (nothing to refine; said in the log).
fn refine(
    job: &Job,
    spec: &engine::spec::RefineSpec,
    layout: &OutputLayout,
    manifest: &Manifest,
    options: &RunOptions,
    observer: &Arc<dyn ProgressObserver>,
    cancel: &CancelToken,
) -> Result<Option<RefineReport>, Error> {
    let target_names: Vec<String> = job.targets().iter().map(|t| t.name.clone()).collect();
    let points = engine::summary::refine_selection(layout, manifest, &target_names, spec.top_k)?;
    if points.is_empty() {
        tracing::warn!("refine: no parameter set has a finite loss; nothing to refine");
        return Ok(None);
    }
    let refine_job = job.refine_job(&points)?;
    let refine_layout = OutputLayout::new(refine_job.output_dir());
    // An earlier refinement of other sets (the sweep was restarted or changed since) is
    // derived data of this output: replaced, not refused.
    let restart = match Manifest::load(&refine_layout.manifest_path()) {
        Ok(Some(m)) => m.spec_hash != refine_job.spec_hash(),
        Ok(None) => false,
        Err(_) => true,
    };
    if restart {
        // Derived data of this output, but possibly a long computation: say so.
        tracing::warn!(
            dir = %refine_layout.root().display(),
            "refine: the earlier refine step was of other parameter sets or settings ([refine] \
             or the sweep changed); deleting it and refining again"
        );
    }
    tracing::info!(
        sets = points.len(),
        replicates = spec.replicates,
        first_replicate = refine_job.first_replicate(),
        "refine starts"
    );
    // As many simulations per batch as the sweep's batches hold (memory is bounded by the
    // simulations of a batch, and a refined set has many more replicates).
    let simulations_per_batch = options.batch_size.get() as u64 * u64::from(job.replicates());
    let refine_batch = (simulations_per_batch / u64::from(spec.replicates)).max(1);
    let refine_options = RunOptions {
        batch_size: std::num::NonZeroUsize::new(refine_batch as usize)
            .unwrap_or(options.batch_size),
        restart,
        job_id: options.job_id.as_ref().map(|id| format!("{id}/{}", engine::spec::REFINE_DIR)),
        ..options.clone()
    };
    let report = run(&refine_job, &refine_options, observer.clone(), cancel.clone())?;
    // The sweep's losses of the refined sets, for every target (to set beside the refined).
    let sweep = target_names
        .iter()
        .map(|t| engine::summary::rows_at(layout, manifest, t, &points))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(RefineReport {
        output_dir: report.output_dir,
        parameter_sets: points.len() as u64,
        replicates: spec.replicates,
        first_replicate: refine_job.first_replicate(),
        finished: !report.cancelled,
        summary: report.summary,
        sweep,
    }))
}

/// Calls the host's observer under `catch_unwind`: on its first panic the run is cancelled
/// (committed batches stay, the run stops at its next batch boundary) and the observer is not
/// called again; [`run`] then returns [`RunError::Internal`] with the panic's message.
struct GuardedObserver {
    inner: Arc<dyn ProgressObserver>,
    cancel: CancelToken,
    panic: std::sync::Mutex<Option<String>>,
}

impl GuardedObserver {
    fn new(inner: Arc<dyn ProgressObserver>, cancel: CancelToken) -> Self {
        GuardedObserver { inner, cancel, panic: std::sync::Mutex::new(None) }
    }

    fn panic_message(&self) -> Option<String> {
        self.panic.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ProgressObserver for GuardedObserver {
    fn on_event(&self, event: &ProgressEvent) {
        let mut panic = self.panic.lock().unwrap_or_else(|e| e.into_inner());
        if panic.is_some() {
            return;
        }
        let call =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.on_event(event)));
        if let Err(payload) = call {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            tracing::error!(%message, "the progress observer panicked; stopping the run");
            *panic = Some(message);
            self.cancel.cancel();
        }
    }
}

/// The slice of the sweep this run covers: `None` unsharded; for a shard, the slice its
/// output already records (fixed at its first run), or the one computed at this batch size.
///
/// # Errors
/// An input error when the output is of another shard or of an unsharded run, or the other
/// way round (the directory names the shard, so only a renamed folder can do this).
fn shard_slice(
    job: &Job,
    options: &RunOptions,
    existing: Option<&Manifest>,
) -> Result<Option<ShardSlice>, Error> {
    let recorded = existing.and_then(|m| m.shard.clone());
    let conflict = |message: String| EngineError::OutputConflict {
        dir: job.output_dir().to_path_buf(),
        message,
        remedy: Remedy::OtherShardOrOutput,
    };
    match (options.shard, recorded) {
        (None, None) => Ok(None),
        (Some(shard), Some(r)) if (r.index, r.count) == (shard.index, shard.count) => Ok(Some(r)),
        (Some(shard), None) if existing.is_none_or(|m| m.batches.is_empty()) => {
            let points = shard.points(job.sweep().len() as u64, options.batch_size);
            Ok(Some(ShardSlice {
                index: shard.index,
                count: shard.count,
                first_point: points.start,
                end_point: points.end,
            }))
        }
        (asked, found) => {
            let name = |s: Option<(u32, u32)>| {
                s.map_or("the whole sweep".to_string(), |(i, k)| format!("shard {i} of {k}"))
            };
            Err(conflict(format!(
                "holds the results of {} but this run is {}",
                name(found.map(|r| (r.index, r.count))),
                name(asked.map(|s| (s.index, s.count))),
            ))
            .into())
        }
    }
}

/// The state of the output directory `dir`, from its manifest and committed files: job, spec
/// hash, batches committed of planned, simulations, failures, the last commit, whether a
/// process holds the directory (and its pid), and the [`SUMMARY_BEST_PER_TARGET`] best
/// parameter sets per target so far. Works on a running, a dead and a finished run, and
/// writes nothing.
///
/// # Errors
/// [`Error::Engine`] with an input error when `dir` has no manifest; an I/O, Parquet or
/// manifest error naming the file when one cannot be read.
pub fn status(dir: &std::path::Path) -> Result<RunStatus, Error> {
    Ok(read_status(&OutputLayout::new(dir), SUMMARY_BEST_PER_TARGET)?)
}

/// The shard folders (`shard=I-of-K`) directly under `dir`, by index: empty for an output
/// that is not sharded. What `simsweep status` lists for a sharded output.
///
/// # Errors
/// [`Error::Engine`] with an I/O error when `dir` exists but cannot be listed.
pub fn shards(dir: &std::path::Path) -> Result<Vec<(Shard, std::path::PathBuf)>, Error> {
    Ok(simsweep_engine::output::merge::find_shards(dir)?)
}

/// Checks the K shards of the sharded output `dir` (all present, finished, of one spec hash
/// and engine version, their slices covering the sweep once) and writes `dir/summary.json`
/// (the [`SUMMARY_BEST_PER_TARGET`] best parameter sets per target across shards) and
/// `dir/index.json` ([`MergeIndex`]). Reads manifests and commit logs only.
///
/// # Errors
/// [`Error::Engine`] with an input error naming the missing, unfinished or foreign shards (or
/// the gap between slices), nothing written; an I/O or damaged-file error naming the file.
pub fn merge(dir: &std::path::Path) -> Result<(MergeIndex, Vec<TargetSummary>), Error> {
    Ok(simsweep_engine::output::merge::merge_shards(dir, SUMMARY_BEST_PER_TARGET)?)
}

/// The checks of [`merge`] without writing anything: `Ok` when `dir`'s shards are all there,
/// finished and of one spec (what `simsweep status` says of a sharded output).
///
/// # Errors
/// As [`merge`].
pub fn merge_check(dir: &std::path::Path) -> Result<(), Error> {
    simsweep_engine::output::merge::check_shards(dir)?;
    Ok(())
}

/// The failed attempts committed in the output directory `dir` by kind, most frequent first,
/// with the first message of each kind: what `simsweep run` prints when simulations failed.
///
/// # Errors
/// [`Error::Engine`] when the manifest or a failure file cannot be read.
pub fn failures(
    dir: &std::path::Path,
) -> Result<Vec<simsweep_engine::summary::FailureKind>, Error> {
    let layout = OutputLayout::new(dir);
    let Some(manifest) = Manifest::load(&layout.manifest_path())? else { return Ok(Vec::new()) };
    Ok(simsweep_engine::summary::failures_by_kind(&layout, &manifest)?)
}

/// The README's Rust code blocks, compiled by `cargo test` (doc tests), so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
