//! `simsweep serve`: a daemon that runs jobs submitted over HTTP, one more host of
//! [`crate::run`].
//!
//! - [`registry`]: jobs, states and events in SQLite (WAL); each job's output directory stays
//!   the source of truth for what is committed.
//! - [`Daemon`]: the queue (at most `max_running` jobs at once, sharing the server's workers),
//!   the runs (one thread each, calling [`crate::run`]), their events, the stop sequence.
//! - `http`: the `/v1` JSON API, Server-Sent Events, health, metrics (actix-web).
//!
//! Layout of the data directory: `registry.sqlite`; `jobs/<id>/job.toml` with the files
//! submitted beside it; `jobs/<id>/output/` the job's output. A job's relative paths resolve
//! inside its own folder and cannot leave it.

pub mod client;
pub mod http;
pub mod logs;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::json;

use crate::engine::model::ModelKind;
use crate::engine::output::utc_now_rfc3339;
use crate::engine::spec::{line_column, JobSpec};
use crate::{CancelToken, ProgressEvent, ProgressObserver, RunOptions};
use registry::{JobRow, JobState, Registry};

/// Largest request body accepted, in bytes (a job spec with its inline files): 16 MiB.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// How the daemon is set up (`simsweep serve` flags).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; beyond loopback only with a token file (see
    /// [`ServeConfig::check`]).
    pub listen: SocketAddr,
    /// Registry and job folders.
    pub data_dir: PathBuf,
    /// Jobs running at once; the rest wait in the queue.
    pub max_running: usize,
    /// Simulation workers of the whole server, shared by the running jobs.
    pub workers: usize,
    /// Most parameter sets one job may have.
    pub max_parameter_sets: usize,
    /// The bearer token file: every request but `GET /healthz` must carry
    /// `Authorization: Bearer <token>`. Required beyond loopback; created (0600) when absent;
    /// refused when others may read it.
    pub token_file: Option<PathBuf>,
    /// More `Host` values the daemon answers to (`name` or `name:port`), for a daemon reached
    /// by a name (beyond loopback, or behind a proxy).
    pub allow_hosts: Vec<String>,
    /// Server-side model allow-list: a submitted job's `[model] name = "<key>"` runs this
    /// external model (`[model]` table of a job file, with its `command`). Jobs can name these
    /// and the built-in models, never a command.
    pub models: std::collections::BTreeMap<String, toml::Table>,
    /// Folders whose files a job may name by absolute path (data shared by many jobs); after
    /// resolving symbolic links, the file must be inside one of them.
    pub allow_dirs: Vec<PathBuf>,
}

impl ServeConfig {
    /// Simulation workers each running job gets: the server's divided among `max_running`
    /// (at least 1), so running jobs never oversubscribe the cores.
    pub fn workers_per_job(&self) -> usize {
        (self.workers / self.max_running.max(1)).max(1)
    }

    /// Refuses what this version cannot serve safely.
    ///
    /// # Errors
    /// A message when `listen` is not a loopback address and no token file is given, or
    /// `max_running` is 0.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.token_file.is_none() {
            return Err(format!(
                "--listen {}: beyond loopback every request needs a token; give --token-file \
                 FILE (created, mode 0600, when absent), or listen on 127.0.0.1",
                self.listen
            ));
        }
        if self.max_running == 0 {
            return Err("--max-running must be at least 1".into());
        }
        Ok(())
    }
}

/// What a submission was refused for, as the API reports it (a 422 problem document).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Stable problem type slug, e.g. `invalid-spec`.
    pub kind: &'static str,
    /// What is wrong and what to change, naming the field, file and line where known.
    pub detail: String,
    /// HTTP status: 422 for a bad spec, 413 for one too large.
    pub status: u16,
}

impl Refusal {
    fn invalid(detail: impl Into<String>) -> Refusal {
        Refusal { kind: "invalid-spec", detail: detail.into(), status: 422 }
    }
}

/// A submission: the job spec (TOML) and the files it refers to, by name.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The job spec, as a job file holds it.
    pub spec: String,
    /// Files the spec refers to (parameter file, data files), by the relative path the spec
    /// uses (plain names or `dir/name`), with their contents as text.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// Higher starts first among queued jobs (default 0).
    #[serde(default)]
    pub priority: i64,
}

/// A running job: how to stop it, and the thread running it.
struct Running {
    cancel: CancelToken,
    thread: Option<JoinHandle<()>>,
}

/// The daemon: registry, queue and runs. Shared by the HTTP handlers.
pub struct Daemon {
    config: ServeConfig,
    registry: Registry,
    running: Mutex<HashMap<String, Running>>,
    /// Latest progress of each running job (from its events), for `GET /v1/jobs/{id}`.
    live: Mutex<HashMap<String, serde_json::Value>>,
    shutting_down: AtomicBool,
    /// Batches committed by this process, for the metrics.
    pub(crate) batches_committed: std::sync::atomic::AtomicU64,
    /// Bumped after each event recorded: wakes the event streams at once.
    events_tick: tokio::sync::watch::Sender<u64>,
    /// Simulations committed and failed by this process, for the metrics.
    pub(crate) simulations_committed: std::sync::atomic::AtomicU64,
    pub(crate) simulations_failed: std::sync::atomic::AtomicU64,
    /// Seconds between a job's consecutive batch commits (its first from the run's start), as
    /// a histogram: counts per bucket of [`COMMIT_INTERVAL_BUCKETS`], then the sum.
    pub(crate) commit_intervals: Mutex<(Vec<u64>, f64)>,
    /// Failed attempts committed by this process, by kind.
    pub(crate) failures_by_kind: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Upper bounds (seconds) of the batch commit interval histogram's buckets (then `+Inf`).
pub const COMMIT_INTERVAL_BUCKETS: [f64; 10] =
    [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

impl Daemon {
    /// Opens the data directory (creating it) and its registry; jobs a previous daemon left
    /// running or stopping are queued again (they resume from their committed batches).
    ///
    /// # Errors
    /// A message naming the data directory or registry that cannot be used.
    pub fn open(config: ServeConfig) -> Result<Arc<Daemon>, String> {
        config.check()?;
        let jobs = config.data_dir.join("jobs");
        std::fs::create_dir_all(&jobs)
            .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?;
        let path = config.data_dir.join("registry.sqlite");
        let registry =
            Registry::open(&path).map_err(|e| format!("registry {}: {e}", path.display()))?;
        let daemon = Arc::new(Daemon {
            config,
            registry,
            running: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            batches_committed: Default::default(),
            events_tick: tokio::sync::watch::Sender::new(0),
            simulations_committed: Default::default(),
            simulations_failed: Default::default(),
            commit_intervals: Mutex::new((vec![0; COMMIT_INTERVAL_BUCKETS.len() + 1], 0.0)),
            failures_by_kind: Mutex::new(Default::default()),
        });
        for state in [JobState::Running, JobState::Stopping] {
            let rows = daemon.registry.list(Some(state), u32::MAX, 0).map_err(|e| e.to_string())?;
            for row in rows {
                daemon.set_state(&row.id, JobState::Queued, None, "the daemon restarted");
            }
        }
        Ok(daemon)
    }

    /// The configuration.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Job `id`'s folder.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("jobs").join(id)
    }

    /// Job `id`'s output folder.
    pub fn output_dir(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("output")
    }

    /// The latest progress of a running job, if it reported any.
    pub fn live_progress(&self, id: &str) -> Option<serde_json::Value> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn set_state(&self, id: &str, state: JobState, error: Option<&str>, reason: &str) {
        let now = utc_now_rfc3339();
        let event = json!({ "state": state.as_str(), "reason": reason, "error": error, "at": now });
        if let Err(e) = self.registry.set_state(id, state, error, &now, &event.to_string()) {
            tracing::error!(job = id, error = %e, "registry: cannot record the job's state");
        }
        self.events_tick.send_modify(|n| *n += 1);
    }

    /// Records a `log` event of job `id` (see [`logs`]); jobs it does not know are ignored.
    pub fn record_log(&self, id: &str, data: &str) {
        if self.registry.get(id).ok().flatten().is_none() {
            return;
        }
        if self.registry.append(id, "log", data).is_ok() {
            self.events_tick.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that changes whenever an event is recorded.
    pub fn event_ticks(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_tick.subscribe()
    }

    /// Checks a submission and, when it is valid, stores it as a queued job. With `key`, a
    /// second submission with the same key returns the first job (and `false`: not created).
    ///
    /// # Errors
    /// A [`Refusal`]: the spec's own errors (located as `simsweep validate` locates them),
    /// paths leaving the job's folder, an external model command, a job over the limits.
    pub fn submit(
        self: &Arc<Self>,
        submission: Submission,
        key: Option<String>,
    ) -> Result<(JobRow, bool), Refusal> {
        if let Some(key) = &key {
            if let Some(row) = self.registry.by_idempotency_key(key).map_err(internal)? {
                return Ok((row, false));
            }
        }
        let id = self.registry.next_id().map_err(internal)?;
        let staging = self.config.data_dir.join("jobs").join(format!("{id}.staging"));
        let _ = std::fs::remove_dir_all(&staging);
        let result = self.stage(&staging, &submission);
        let name = match result {
            Ok(name) => name,
            Err(refusal) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(refusal);
            }
        };
        let dir = self.job_dir(&id);
        std::fs::rename(&staging, &dir).map_err(internal)?;
        let row = JobRow {
            id: id.clone(),
            name,
            state: JobState::Queued,
            priority: submission.priority,
            idempotency_key: key,
            submitted_at: utc_now_rfc3339(),
            started_at: None,
            finished_at: None,
            error: None,
        };
        let event = json!({ "state": "queued", "reason": "submitted", "at": row.submitted_at });
        if let Err(e) = self.registry.insert(&row, &event.to_string()) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(internal(e));
        }
        self.events_tick.send_modify(|n| *n += 1);
        self.schedule();
        Ok((row, true))
    }

    /// Checks a submission as [`Daemon::submit`] does, without keeping anything.
    ///
    /// # Errors
    /// As [`Daemon::submit`].
    pub fn validate(&self, submission: &Submission) -> Result<String, Refusal> {
        let dir = tempfile::Builder::new()
            .prefix("validate-")
            .tempdir_in(self.config.data_dir.join("jobs"))
            .map_err(internal)?;
        self.stage(dir.path(), submission)
    }

    /// Writes the submission into `dir` and validates it there; returns the job's name.
    fn stage(&self, dir: &Path, submission: &Submission) -> Result<String, Refusal> {
        let syntax = |e: toml::de::Error| {
            let at = e.span().map(|s| line_column(&submission.spec, s.start));
            Refusal::invalid(match at {
                Some((line, column)) => {
                    format!("job.toml:{line}:{column}: {}", e.message().trim_end())
                }
                None => format!("job.toml: {}", e.message().trim_end()),
            })
        };
        let mut table: toml::Table = toml::from_str(&submission.spec).map_err(syntax)?;
        // A model of the server's allow-list: its `[model]` table is the server's.
        let allowed = self.allowed_model(&mut table)?;
        let text = if allowed {
            toml::to_string(&table).map_err(internal)?
        } else {
            submission.spec.clone()
        };
        let spec: JobSpec = toml::from_str(&text).map_err(syntax)?;
        check_spec_paths(&spec, &submission.files, allowed, &self.config.allow_dirs)?;
        std::fs::create_dir_all(dir).map_err(internal)?;
        for (name, contents) in &submission.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(internal)?;
            }
            std::fs::write(&path, contents).map_err(internal)?;
        }
        let job_file = dir.join("job.toml");
        std::fs::write(&job_file, &text).map_err(internal)?;
        let job = crate::load_job(&job_file).map_err(|e| {
            // Paths in messages relative to the job's folder: the client knows no other.
            let text = e.to_string().replace(&format!("{}/", dir.display()), "");
            Refusal::invalid(text)
        })?;
        if job.sweep().len() > self.config.max_parameter_sets {
            return Err(Refusal {
                kind: "too-large",
                detail: format!(
                    "{} parameter sets, more than the {} this server runs per job; split the \
                     sweep into several jobs",
                    job.sweep().len(),
                    self.config.max_parameter_sets
                ),
                status: 422,
            });
        }
        Ok(job.name().to_string())
    }

    /// When the spec's `[model] name` is a key of the server's model allow-list, replaces its
    /// `[model]` table with the server's and returns true.
    fn allowed_model(&self, spec: &mut toml::Table) -> Result<bool, Refusal> {
        let Some(toml::Value::Table(model)) = spec.get("model") else { return Ok(false) };
        let Some(name) = model.get("name").and_then(|n| n.as_str()) else { return Ok(false) };
        let Some(server) = self.config.models.get(name) else { return Ok(false) };
        if let Some(other) = model.keys().find(|k| *k != "name") {
            return Err(Refusal::invalid(format!(
                "field `model.{other}`: model `{name}` is configured by the server; give only \
                 `name = \"{name}\"` in [model]"
            )));
        }
        spec.insert("model".into(), toml::Value::Table(server.clone()));
        Ok(true)
    }

    /// Starts queued jobs while there is a free slot.
    pub fn schedule(self: &Arc<Self>) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.len() >= self.config.max_running {
            return;
        }
        let queued = match self.registry.queued() {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(error = %e, "registry: cannot read the queue");
                return;
            }
        };
        for row in queued {
            if running.len() >= self.config.max_running {
                break;
            }
            if running.contains_key(&row.id) {
                continue;
            }
            let cancel = CancelToken::new();
            self.set_state(&row.id, JobState::Running, None, "started");
            let daemon = Arc::clone(self);
            let (id, token) = (row.id.clone(), cancel.clone());
            let thread = std::thread::Builder::new()
                .name(format!("job-{id}"))
                .spawn(move || daemon.run_job(&id, token));
            match thread {
                Ok(thread) => {
                    running.insert(row.id.clone(), Running { cancel, thread: Some(thread) });
                }
                Err(e) => self.set_state(&row.id, JobState::Failed, Some(&e.to_string()), "error"),
            }
        }
    }

    /// Runs job `id` to its end (on its own thread) and records how it ended.
    fn run_job(self: Arc<Self>, id: &str, cancel: CancelToken) {
        let outcome = (|| -> Result<crate::Report, String> {
            let mut job =
                crate::load_job(&self.job_dir(id).join("job.toml")).map_err(|e| e.to_string())?;
            job.set_output_dir(self.output_dir(id));
            let mut options = RunOptions::for_job(&job);
            options.workers = std::num::NonZeroUsize::new(self.config.workers_per_job())
                .unwrap_or(std::num::NonZeroUsize::MIN);
            options.job_id = Some(id.to_string());
            let observer = Arc::new(JobObserver { daemon: Arc::clone(&self), id: id.to_string() });
            crate::run(&job, &options, observer, cancel).map_err(|e| e.to_string())
        })();
        let stopping_daemon = self.shutting_down.load(Ordering::SeqCst);
        match outcome {
            Ok(report) if !report.cancelled => {
                self.set_state(id, JobState::Succeeded, None, "every batch committed")
            }
            // Stopped by the daemon's own stop: queued again, resumed at its next start.
            Ok(_) if stopping_daemon => {
                self.set_state(id, JobState::Queued, None, "daemon stopped")
            }
            Ok(_) => self.set_state(id, JobState::Cancelled, None, "cancelled"),
            Err(e) => self.set_state(id, JobState::Failed, Some(&e), "error"),
        }
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(mut r) = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            // This very thread: nothing to join.
            drop(r.thread.take());
        }
        self.schedule();
    }

    /// Asks job `id` to stop (hard with `force`). A queued job is cancelled at once.
    /// Returns the job's state after the request, `None` when there is no such job.
    pub fn cancel(&self, id: &str, force: bool) -> Option<Result<JobState, Refusal>> {
        let row = self.registry.get(id).ok().flatten()?;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        Some(match (row.state, running.get(id)) {
            (_, Some(run)) => {
                if force {
                    run.cancel.cancel_now();
                } else {
                    run.cancel.cancel();
                }
                if row.state != JobState::Stopping {
                    self.set_state(
                        id,
                        JobState::Stopping,
                        None,
                        if force { "cancel (force)" } else { "cancel" },
                    );
                }
                Ok(JobState::Stopping)
            }
            (JobState::Queued, None) => {
                self.set_state(id, JobState::Cancelled, None, "cancelled while queued");
                Ok(JobState::Cancelled)
            }
            (state, None) => Err(Refusal {
                kind: "conflict",
                detail: format!("job {id} is {}, not queued or running", state.as_str()),
                status: 409,
            }),
        })
    }

    /// Queues a cancelled or failed job again (it resumes from its committed batches).
    pub fn resume(self: &Arc<Self>, id: &str) -> Option<Result<JobState, Refusal>> {
        let row = self.registry.get(id).ok().flatten()?;
        Some(match row.state {
            JobState::Cancelled | JobState::Failed => {
                self.set_state(id, JobState::Queued, None, "resume");
                self.schedule();
                Ok(JobState::Queued)
            }
            state => Err(Refusal {
                kind: "conflict",
                detail: format!(
                    "job {id} is {}; only cancelled or failed jobs resume",
                    state.as_str()
                ),
                status: 409,
            }),
        })
    }

    /// Deletes a job that is not running: its folder (spec, files, output) and its rows.
    pub fn delete(&self, id: &str) -> Option<Result<(), Refusal>> {
        let row = self.registry.get(id).ok().flatten()?;
        if matches!(row.state, JobState::Running | JobState::Stopping | JobState::Queued)
            && self.running.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id)
        {
            return Some(Err(Refusal {
                kind: "conflict",
                detail: format!("job {id} is running; cancel it first"),
                status: 409,
            }));
        }
        if let Err(e) = std::fs::remove_dir_all(self.job_dir(id)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Some(Err(internal(e)));
            }
        }
        Some(self.registry.delete(id).map_err(internal))
    }

    /// Stops the daemon's jobs: gracefully (they stop at a batch boundary and are queued
    /// again), or hard. Returns the threads to join.
    pub fn stop_jobs(&self, hard: bool) -> Vec<JoinHandle<()>> {
        self.shutting_down.store(true, Ordering::SeqCst);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .values_mut()
            .filter_map(|r| {
                if hard {
                    r.cancel.cancel_now();
                } else {
                    r.cancel.cancel();
                }
                r.thread.take()
            })
            .collect()
    }

    /// Number of jobs running now.
    pub fn running_count(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Records a running job's events in the registry and its progress for the API.
struct JobObserver {
    daemon: Arc<Daemon>,
    id: String,
}

impl ProgressObserver for JobObserver {
    fn on_event(&self, event: &ProgressEvent) {
        let progress = |p: &crate::Progress| {
            json!({
                "batches_committed": p.batches_committed,
                "batches_planned": p.batches_planned,
                "simulations_committed": p.simulations_committed,
                "simulations_planned": p.simulations_planned,
                "failed": p.failed,
            })
        };
        // The refine step's run (job id `<id>/refine`): its own events, which neither move
        // the sweep's progress nor name the sweep's batches.
        if event.job_id().ends_with(&format!("/{}", crate::engine::spec::REFINE_DIR)) {
            let (kind, data) = match event {
                ProgressEvent::Started { progress: p, .. } => {
                    ("refine_started", json!({ "progress": progress(p) }))
                }
                ProgressEvent::BatchCommitted { index, progress: p, .. } => {
                    ("refine_batch_committed", json!({ "batch": index, "progress": progress(p) }))
                }
                _ => return,
            };
            if let Err(e) = self.daemon.registry.append(&self.id, kind, &data.to_string()) {
                tracing::error!(job = %self.id, error = %e, "registry: cannot record an event");
            }
            return;
        }
        let (kind, data) = match event {
            ProgressEvent::Started { progress: p, .. } => {
                ("started", json!({ "progress": progress(p) }))
            }
            ProgressEvent::BatchCommitted { index, progress: p, elapsed, .. } => {
                self.daemon.batches_committed.fetch_add(1, Ordering::Relaxed);
                if self.count(p, elapsed.as_secs_f64()) > 0 {
                    self.failures(*index);
                }
                (
                    "batch_committed",
                    json!({ "batch": index, "progress": progress(p), "elapsed_s": elapsed.as_secs_f64() }),
                )
            }
            ProgressEvent::InFlight { simulations_finished, elapsed, .. } => {
                let mut live = self.daemon.live.lock().unwrap_or_else(|e| e.into_inner());
                let entry = live.entry(self.id.clone()).or_insert_with(|| json!({}));
                entry["simulations_finished_this_run"] = json!(simulations_finished);
                entry["elapsed_s"] = json!(elapsed.as_secs_f64());
                return;
            }
            _ => return,
        };
        {
            let mut live = self.daemon.live.lock().unwrap_or_else(|e| e.into_inner());
            let entry = live.entry(self.id.clone()).or_insert_with(|| json!({}));
            entry["progress"] = data["progress"].clone();
        }
        if let Err(e) = self.daemon.registry.append(&self.id, kind, &data.to_string()) {
            tracing::error!(job = %self.id, error = %e, "registry: cannot record an event");
        }
        self.daemon.events_tick.send_modify(|n| *n += 1);
    }
}

impl JobObserver {
    /// Reads the failures batch `index` committed, counts them by kind into the metrics, and
    /// records a `failures` event (`{"batch", "by_kind": {kind: {count, first_message}}}`).
    fn failures(&self, index: u32) {
        use arrow::array::{Array, AsArray};
        let layout = crate::engine::output::OutputLayout::new(self.daemon.output_dir(&self.id));
        let file = layout.batch_file(&crate::engine::output::Dataset::Failures, index);
        let mut by_kind: std::collections::BTreeMap<String, (u64, Option<String>)> =
            Default::default();
        let read = (|| -> Result<(), Box<dyn std::error::Error>> {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&file)?,
            )?
            .build()?;
            for batch in reader {
                let batch = batch?;
                let utf8 =
                    |name: &str| -> Result<arrow::array::ArrayRef, Box<dyn std::error::Error>> {
                        let column = batch.column_by_name(name).ok_or("no column")?;
                        Ok(arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?)
                    };
                let (kind, message) = (utf8("kind")?, utf8("message")?);
                let (kind, message) = (kind.as_string::<i32>(), message.as_string::<i32>());
                for i in 0..batch.num_rows() {
                    let entry = by_kind.entry(kind.value(i).to_string()).or_default();
                    entry.0 += 1;
                    if entry.1.is_none() && !message.is_null(i) {
                        entry.1 = Some(message.value(i).to_string());
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = read {
            tracing::warn!(job = %self.id, batch = index, error = %e, "cannot count the batch's failures");
            return;
        }
        {
            let mut total = self.daemon.failures_by_kind.lock().unwrap_or_else(|e| e.into_inner());
            for (kind, (n, _)) in &by_kind {
                *total.entry(kind.clone()).or_default() += n;
            }
        }
        let data = json!({
            "batch": index,
            "by_kind": by_kind
                .into_iter()
                .map(|(k, (n, m))| (k, json!({ "count": n, "first_message": m })))
                .collect::<serde_json::Map<_, _>>(),
        });
        if self.daemon.registry.append(&self.id, "failures", &data.to_string()).is_ok() {
            self.daemon.events_tick.send_modify(|n| *n += 1);
        }
    }

    /// Adds a commit's simulations, failures and interval to the daemon's metrics; returns the
    /// failures the commit added.
    fn count(&self, p: &crate::Progress, elapsed_s: f64) -> u64 {
        let mut live = self.daemon.live.lock().unwrap_or_else(|e| e.into_inner());
        let entry = live.entry(self.id.clone()).or_insert_with(|| json!({}));
        let before = |key: &str| entry["progress"][key].as_u64();
        // Counted from this run's first report on (a resumed run starts from its earlier total).
        let (sims, failed) = (before("simulations_committed"), entry["failed_this_run"].as_u64());
        let d_sims = sims.map_or(0, |s| p.simulations_committed.saturating_sub(s));
        let d_failed = p.failed.saturating_sub(failed.unwrap_or(0));
        entry["failed_this_run"] = json!(p.failed);
        let last = entry["last_commit_s"].as_f64().unwrap_or(0.0);
        entry["last_commit_s"] = json!(elapsed_s);
        drop(live);
        self.daemon.simulations_committed.fetch_add(d_sims, Ordering::Relaxed);
        self.daemon.simulations_failed.fetch_add(d_failed, Ordering::Relaxed);
        let interval = (elapsed_s - last).max(0.0);
        let bucket = COMMIT_INTERVAL_BUCKETS
            .iter()
            .position(|&b| interval <= b)
            .unwrap_or(COMMIT_INTERVAL_BUCKETS.len());
        let mut h = self.daemon.commit_intervals.lock().unwrap_or_else(|e| e.into_inner());
        h.0[bucket] += 1;
        h.1 += interval;
        d_failed
    }
}

/// Refuses paths that would leave the job's folder, files the spec does not name safely, an
/// output folder chosen by the client and external model commands.
fn check_spec_paths(
    spec: &JobSpec,
    files: &std::collections::BTreeMap<String, String>,
    allowed_model: bool,
    allow_dirs: &[PathBuf],
) -> Result<(), Refusal> {
    let in_allowed_dir = |path: &Path| {
        let Ok(real) = path.canonicalize() else { return false };
        allow_dirs.iter().any(|d| d.canonicalize().is_ok_and(|d| real.starts_with(d)))
    };
    let inside =
        |field: &str, path: &Path| -> Result<(), Refusal> {
            if path.is_absolute() && in_allowed_dir(path) {
                return Ok(());
            }
            let escapes = path.is_absolute()
                || path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
            if escapes || path.as_os_str().is_empty() {
                return Err(Refusal::invalid(format!(
                "field `{field}`: `{}` is not a path inside the job's folder{}; give a relative \
                 path without `..` and upload the file with the job",
                path.display(),
                if allow_dirs.is_empty() { String::new() } else { " or an --allow-dir".to_string() }
            )));
            }
            Ok(())
        };
    for name in files.keys() {
        if name == "job.toml" {
            return Err(Refusal::invalid("files: `job.toml` is the spec itself; rename the file"));
        }
        if Path::new(name).is_absolute() {
            return Err(Refusal::invalid(format!("files: `{name}` must be a relative path")));
        }
        inside(&format!("files.{name}"), Path::new(name))?;
    }
    // The server puts every job's results in its own folder: `output` is ignored, but a path
    // that would leave the job's folder is still refused rather than silently dropped.
    if let Some(output) = &spec.output {
        inside("output", output)?;
    }
    if let Some(file) = &spec.parameters.file {
        inside("parameters.file", file)?;
    }
    for (i, t) in spec.targets.iter().enumerate() {
        inside(&format!("targets[{i}].data"), &t.data)?;
    }
    if !allowed_model {
        for file in spec.model.input_files(Path::new("")) {
            inside("model", &file)?;
        }
    }
    if !allowed_model && matches!(spec.model.model, ModelKind::External(_) | ModelKind::Host(_)) {
        return Err(Refusal::invalid(
            "field `model.command`: a job cannot give a command; name a built-in model or one of \
             the server's models (`[model] name = \"...\"`, from its --models file)",
        ));
    }
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal { kind: "internal", detail: format!("internal error: {e}"), status: 500 }
}

/// Reads the bearer token from `path`, creating it (32 random bytes as hex, mode 0600) when
/// absent.
///
/// # Errors
/// A message when the file cannot be read or created, is empty, or may be read by other users
/// (its mode allows group or others: `chmod 600` it).
pub fn load_token(path: &Path) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "--token-file {shown}: mode {mode:o} lets other users read it; run `chmod 600 \
                     {shown}`"
                ));
            }
            let token =
                std::fs::read_to_string(path).map_err(|e| format!("--token-file {shown}: {e}"))?;
            let token = token.trim().to_string();
            if token.len() < 16 {
                return Err(format!(
                    "--token-file {shown}: holds no token of at least 16 characters"
                ));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| format!("cannot draw a token from /dev/urandom: {e}"))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("--token-file {shown}: {e}"))?;
            writeln!(file, "{token}").map_err(|e| format!("--token-file {shown}: {e}"))?;
            Ok(token)
        }
        Err(e) => Err(format!("--token-file {shown}: {e}")),
    }
}

/// Runs the daemon until SIGINT or SIGTERM: serves the API on `config.listen`, runs the queued
/// jobs. `ready` is called with the bound address once the server listens (port 0 picks one).
///
/// The first signal stops gracefully: no new requests, running jobs stop at a batch boundary
/// and are queued again for the next start; a second signal stops them hard (external model
/// processes killed). A daemon killed outright loses nothing either: each job resumes from
/// its committed batches at the next start.
///
/// # Errors
/// A message when the configuration is refused ([`ServeConfig::check`]), the data directory or
/// registry cannot be used, or the address cannot be bound.
pub fn serve(
    config: ServeConfig,
    logs: Option<logs::JobLogs>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    use actix_web::{middleware, web, App, HttpServer};

    config.check()?;
    let token = config.token_file.as_deref().map(load_token).transpose()?;
    let daemon = Daemon::open(config.clone())?;
    if let Some(logs) = logs {
        logs.attach(&daemon);
    }
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("--listen {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut allowed = http::Allowed::for_addr(addr);
    for host in &config.allow_hosts {
        if host.contains(':') {
            allowed.hosts.push(host.clone());
        } else {
            allowed.hosts.push(format!("{host}:{}", addr.port()));
        }
    }
    allowed.token = token;
    let system = actix_rt::System::new();
    let app_daemon = Arc::clone(&daemon);
    let server = system.block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Arc::clone(&app_daemon)))
                .app_data(web::Data::new(allowed.clone()))
                .wrap(middleware::from_fn(http::check_host))
                .configure(http::routes)
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)
        .map(|s| s.run())
    });
    let server = server.map_err(|e| format!("--listen {addr}: {e}"))?;
    let handle = server.handle();
    ready(addr);
    daemon.schedule();

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_daemon = Arc::clone(&daemon);
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if signals.next().is_none() {
            return;
        }
        tracing::warn!(
            "stopping: running jobs stop at a batch boundary (signal again to stop hard)"
        );
        let graceful = {
            let daemon = Arc::clone(&signal_daemon);
            std::thread::spawn(move || {
                for thread in daemon.stop_jobs(false) {
                    let _ = thread.join();
                }
            })
        };
        let handle2 = handle.clone();
        std::thread::spawn(move || {
            let _ = graceful.join();
            drop(handle2.stop(true));
        });
        if signals.next().is_some() {
            tracing::warn!("stopping hard");
            signal_daemon.stop_jobs(true);
            drop(handle.stop(false));
            std::thread::sleep(std::time::Duration::from_secs(5));
            std::process::exit(crate::daemon::EXIT_HARD_STOP);
        }
    });
    system.block_on(server).map_err(|e| e.to_string())?;
    // Jobs the graceful stop did not join (none unless the server ended otherwise).
    for thread in daemon.stop_jobs(false) {
        let _ = thread.join();
    }
    Ok(())
}

/// Exit code of a daemon stopped hard whose jobs did not return within 5 s.
pub const EXIT_HARD_STOP: i32 = 143;
