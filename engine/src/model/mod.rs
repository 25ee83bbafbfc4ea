//! The [`Simulator`] trait and the built-in models.
//!
//! A simulator turns one parameter set and one seed into named output tables (Arrow record
//! batches). It must be deterministic for a given seed: the engine's determinism (DESIGN.md,
//! invariant 3) rests on it.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::params::ParameterSet;

pub use retry::{Attempts, RetryPolicy};

mod chain;
pub mod external;
#[doc(hidden)]
pub mod noop;
pub mod retry;
pub mod seir;
pub mod seir_seasonal;
pub mod sir;
pub mod sir_bed;

/// Name and schema of one output table of a model.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Output name, e.g. `prevalence`; also the folder under `model_outputs/`.
    pub name: String,
    /// Columns of every table this output returns.
    pub schema: SchemaRef,
}

/// What one replicate returns: output tables in the order of [`Simulator::outputs`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutput {
    /// One record batch per output, same order and schemas as [`Simulator::outputs`].
    pub tables: Vec<RecordBatch>,
}

/// Why a replicate (one attempt of it) failed.
///
/// `Model` and `Panic` come from in-process and external models alike; the other kinds only
/// from external models (see `docs/worker-protocol.md`, "Failures"). [`SimError::kind`] is the
/// name written to the failures table.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The model reported an error (bad parameter value, numerical failure, ...).
    #[error("model error: {0}")]
    Model(String),
    /// The model panicked; caught at the worker boundary.
    #[error("model panicked: {0}")]
    Panic(String),
    /// The worker process exited or died by a signal while it ran the task.
    #[error("worker crashed: {}", describe_exit(*.exit_code, *.signal))]
    Crash {
        /// Exit status, when it exited.
        exit_code: Option<i32>,
        /// Signal number, when a signal killed it.
        signal: Option<i32>,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
    /// The worker ran out of memory, on evidence: it reported it (e.g. Python's `MemoryError`),
    /// the memory cgroup counted an OOM kill as it died by `SIGKILL` (or exited 137), or it
    /// died under `memory_limit_mb` having written an allocation failure to stderr. The rules
    /// are in `docs/worker-protocol.md`, "Failures"; any other death is a [`SimError::Crash`].
    #[error("out of memory: {message}")]
    Oom {
        /// Exit status, when it exited.
        exit_code: Option<i32>,
        /// Signal number, when a signal killed it.
        signal: Option<i32>,
        /// What was seen.
        message: String,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
    /// The task ran longer than the model's `timeout_seconds`; the worker was killed.
    #[error("timed out after {timeout_seconds} s; the worker was killed")]
    Timeout {
        /// The limit that was exceeded, in seconds.
        timeout_seconds: f64,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
    /// The worker broke the protocol (garbage on stdout, a frame too large, a wrong schema,
    /// ...) or could not be started.
    #[error("protocol violation: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
        /// The last bytes the worker wrote to stderr.
        stderr_tail: String,
    },
}

impl SimError {
    /// The message without the kind's prefix (`model error: `), for a message that says
    /// its own context.
    pub fn into_message(self) -> String {
        match self {
            SimError::Model(message) => message,
            other => other.to_string(),
        }
    }

    /// The kind of failure.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            SimError::Model(_) => FailureKind::Error,
            SimError::Panic(_) => FailureKind::Panic,
            SimError::Crash { .. } => FailureKind::Crash,
            SimError::Oom { .. } => FailureKind::Oom,
            SimError::Timeout { .. } => FailureKind::Timeout,
            SimError::Protocol { .. } => FailureKind::Protocol,
        }
    }

    /// Short kind name written to the failures table: `error`, `panic`, `crash`, `oom`,
    /// `timeout` or `protocol`.
    pub fn kind(&self) -> &'static str {
        self.failure_kind().as_str()
    }

    /// The worker's exit status, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            SimError::Crash { exit_code, .. } | SimError::Oom { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    /// The signal that killed the worker, when one did.
    pub fn signal(&self) -> Option<i32> {
        match self {
            SimError::Crash { signal, .. } | SimError::Oom { signal, .. } => *signal,
            _ => None,
        }
    }

    /// The tail of the worker's stderr; `None` for in-process failures and model errors.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            SimError::Model(_) | SimError::Panic(_) => None,
            SimError::Crash { stderr_tail, .. }
            | SimError::Oom { stderr_tail, .. }
            | SimError::Timeout { stderr_tail, .. }
            | SimError::Protocol { stderr_tail, .. } => Some(stderr_tail),
        }
    }
}

fn describe_exit(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (_, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "ended without an exit status".to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => " (SIGILL)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        8 => " (SIGFPE)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// The kinds of failure, as written to the `kind` column of `failures/`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The model reported an error.
    Error,
    /// An in-process model panicked.
    Panic,
    /// The worker process exited or died by a signal.
    Crash,
    /// The worker ran out of memory.
    Oom,
    /// The task exceeded its timeout.
    Timeout,
    /// The worker broke the protocol.
    Protocol,
}

impl FailureKind {
    /// The name: `error`, `panic`, `crash`, `oom`, `timeout` or `protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Panic => "panic",
            FailureKind::Crash => "crash",
            FailureKind::Oom => "oom",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
        }
    }
}

/// A stochastic model.
///
/// Shared by all workers (`Send + Sync`); called concurrently from several threads.
pub trait Simulator: Send + Sync {
    /// The model's name, e.g. `sir_bed`.
    fn name(&self) -> &str;

    /// Names of the parameters the model reads; a sweep must give each of them.
    fn parameter_names(&self) -> Vec<String>;

    /// The output tables every successful call returns, in order.
    fn outputs(&self) -> Vec<OutputSpec>;

    /// Runs one replicate.
    ///
    /// # Errors
    /// [`SimError::Model`] when the parameters are unusable (e.g. a negative rate).
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError>;

    /// True when [`Simulator::simulate_many`] is worth calling: a call has a fixed cost that
    /// several replicates can share (an external model's round trip). The engine then hands a
    /// chunk of replicates to `simulate_many` in one call; otherwise (the default) it calls
    /// `simulate` per replicate.
    fn runs_many(&self) -> bool {
        false
    }

    /// Runs several replicates, `tasks[i]` = (parameter set, seed), in one call; the results
    /// are in the order of `tasks`, one per task (a model error of one task is that task's
    /// `Err`). The default calls [`Simulator::simulate`] for each.
    ///
    /// # Errors
    /// The outer `Err` when the call failed as a whole (a worker that crashed, timed out, ran
    /// out of memory or broke the protocol while running them): no task has a result, and the
    /// engine runs each of them again on its own with [`Simulator::simulate`], so that the
    /// failure is recorded against the task that causes it.
    fn simulate_many(
        &self,
        tasks: &[(&ParameterSet, u32)],
    ) -> Result<Vec<Result<SimOutput, SimError>>, SimError> {
        Ok(tasks.iter().map(|(params, seed)| self.simulate(params, *seed)).collect())
    }

    /// Checks one parameter set before anything runs, so that a sweep reaching outside the
    /// model's domain (a negative rate, say) is refused up front instead of failing replicate by
    /// replicate. The default accepts everything.
    ///
    /// # Errors
    /// A message naming the parameter and the values it may take.
    fn check_parameters(&self, _params: &ParameterSet) -> Result<(), String> {
        Ok(())
    }

    /// The values of `output`'s time column that every successful run reports, when the model
    /// knows them before running (built-ins: days `0..=days`). A target whose observation times
    /// are not among them is refused up front. The default, `None`, skips that check.
    fn output_times(&self, _output: &str) -> Option<Vec<f64>> {
        None
    }

    /// Ends the simulations running now on other threads as soon as it can: the hard stop of
    /// [`CancelToken::cancel_now`](crate::progress::CancelToken::cancel_now). Each returns an
    /// error promptly, which the run discards. Called from another thread, possibly several
    /// times (a simulation may start just after a call). The default does nothing: a built-in
    /// simulation runs to its end.
    fn abort(&self) {}

    /// Releases what the calling thread holds for this simulator between simulations (an
    /// external model's worker process). The engine calls it on each worker thread as a run
    /// ends, so that nothing a run started outlives it. The default does nothing.
    fn release_thread(&self) {}
}

/// A shared simulator.
pub type SharedSimulator = Arc<dyn Simulator>;

/// The `[model]` section of a job: a built-in model by `name`, or an external model by
/// `command`, with the [retry policy](retry) for its failures.
///
/// ```toml
/// [model]
/// name = "sir_bed"
/// population = 763
/// initial_infected = 1
/// days = 14
/// steps_per_day = 10
/// max_attempts = 3          # optional, see `retry`
/// ```
///
/// ```toml
/// [model]
/// command = ["python3", "model.py"]   # see `external`
/// timeout_seconds = 60
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelSpec {
    /// Which model, with its settings.
    #[serde(flatten)]
    pub model: ModelKind,
    /// How failed replicates are retried.
    #[serde(flatten)]
    pub retry: RetryPolicy,
}

/// A built-in model, an external one, or a host application's own.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum ModelKind {
    /// A model compiled into simsweep, chosen by `name`.
    BuiltIn(BuiltInModel),
    /// A worker program speaking `docs/worker-protocol.md`, chosen by `command`.
    External(external::ExternalSettings),
    /// A host application's own [`Simulator`], given in code
    /// ([`crate::spec::JobBuilder::simulator`]); never read from a job file.
    Host(HostModel),
}

/// What the spec (and so the spec hash) records of a host application's own [`Simulator`]:
/// its name and the version the host declares. The host's code is not hashed: bump `version`
/// whenever the model's results change, or resumes will mix old and new results.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostModel {
    /// [`Simulator::name`].
    pub host: String,
    /// The version the host declares for the model's results.
    pub version: String,
}

/// The built-in models with their fixed settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum BuiltInModel {
    /// [`sir::Sir`]
    Sir(sir::SirSettings),
    /// [`seir::Seir`]
    Seir(seir::SeirSettings),
    /// [`sir_bed::SirBed`]
    SirBed(sir_bed::SirBedSettings),
    /// [`seir_seasonal::SeirSeasonal`]
    SeirSeasonal(seir_seasonal::SeirSeasonalSettings),
    /// `noop::NoopModel`: a model of negligible cost, for benchmarks and tests.
    #[doc(hidden)]
    Noop(noop::NoopSettings),
}

impl From<BuiltInModel> for ModelSpec {
    fn from(model: BuiltInModel) -> Self {
        ModelSpec { model: ModelKind::BuiltIn(model), retry: RetryPolicy::default() }
    }
}

impl From<external::ExternalSettings> for ModelSpec {
    fn from(settings: external::ExternalSettings) -> Self {
        ModelSpec { model: ModelKind::External(settings), retry: RetryPolicy::default() }
    }
}

/// Start of a `[model]` error message that names the key at fault: the key and "`: " follow.
/// The job parser ([`crate::spec::parse_job`]) reports such an error at the key's line rather
/// than at the `[model]` header (toml's positions are lost when the section is dispatched on
/// `name` / `command`).
pub(crate) const MODEL_KEY_ERROR: &str = "[model] key `";

/// The key of `[model]` an error message names, if it names one (see [`MODEL_KEY_ERROR`]).
pub(crate) fn model_error_key(message: &str) -> Option<&str> {
    let rest = &message[message.find(MODEL_KEY_ERROR)? + MODEL_KEY_ERROR.len()..];
    rest.find("`: ").map(|end| &rest[..end])
}

/// Deserializes the keys `table` of `[model]` as `T`. On failure the message starts with
/// [`MODEL_KEY_ERROR`] and the key at fault, when one is found: the key named by an "unknown
/// field" error, or else the one whose removal changes the error (the value serde stopped at).
fn from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    let message = match toml::Value::Table(table.clone()).try_into::<T>() {
        Ok(value) => return Ok(value),
        Err(e) => e.message().trim_end().to_string(),
    };
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string());
    let unknown = unknown.or_else(|| {
        // An unknown variant: the key holding that value (e.g. `method = "exact"`), else an
        // unknown built-in model, its `name`.
        let variant = message.strip_prefix("unknown variant `")?.split_once('`')?.0;
        table
            .iter()
            .find(|(k, v)| k.as_str() != "name" && v.as_str() == Some(variant))
            .map(|(k, _)| k.clone())
            .or_else(|| table.contains_key("name").then(|| "name".to_string()))
    });
    let culprit = unknown.or_else(|| {
        // Not the keys that choose the model: without them every error changes.
        table.keys().filter(|k| !matches!(k.as_str(), "name" | "command")).find_map(|key| {
            let mut without = table.clone();
            without.remove(key);
            let changed = match toml::Value::Table(without).try_into::<T>() {
                Ok(_) => true,
                Err(e) => e.message().trim_end() != message,
            };
            changed.then(|| key.clone())
        })
    });
    Err(match culprit {
        Some(key) if table.contains_key(&key) => format!("{MODEL_KEY_ERROR}{key}`: {message}"),
        _ => message,
    })
}

/// Keys of `[model]` that belong to the retry policy rather than to the model.
const RETRY_KEYS: [&str; 2] = ["max_attempts", "retry"];

/// The `name`s of the built-in models (see [`BuiltInModel`]).
pub const BUILT_IN_MODEL_NAMES: [&str; 5] = ["sir", "seir", "sir_bed", "seir_seasonal", "noop"];

impl<'de> serde::Deserialize<'de> for ModelSpec {
    /// Reads the section as a table, takes out the retry keys, then dispatches on `command`
    /// (external) or `name` (built-in); each half refuses unknown keys with its own message.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let mut retry_table = toml::Table::new();
        for key in RETRY_KEYS {
            if let Some(value) = table.remove(key) {
                retry_table.insert(key.to_string(), value);
            }
        }
        let retry: RetryPolicy = from_table(retry_table).map_err(D::Error::custom)?;
        if let (true, Some(name)) =
            (table.contains_key("command"), table.get("name").and_then(|n| n.as_str()))
        {
            if BUILT_IN_MODEL_NAMES.contains(&name) {
                return Err(D::Error::custom(format!(
                    "`name = \"{name}\"` names a built-in model but `command` runs an external \
                     one: remove `command` to use the built-in `{name}`, or give the external \
                     model a name that is not a built-in's"
                )));
            }
        }
        let model =
            if table.contains_key("command") {
                ModelKind::External(from_table(table).map_err(|e| {
                    D::Error::custom(format!("external model (`command` given): {e}"))
                })?)
            } else if table.contains_key("name") {
                ModelKind::BuiltIn(from_table(table).map_err(D::Error::custom)?)
            } else {
                return Err(D::Error::custom(
                    "give `name` (a built-in model: sir, seir, sir_bed) or `command` (an external \
                 model, e.g. `command = [\"python3\", \"model.py\"]`)",
                ));
            };
        Ok(ModelSpec { model, retry })
    }
}

impl ModelSpec {
    /// Builds the simulator; `base_dir` (the job file's directory) resolves relative paths in
    /// the settings, such as `seir_seasonal`'s `demography` file. For an external model this
    /// starts one worker process and does the `initialize` handshake, so a broken command is
    /// reported here.
    ///
    /// # Errors
    /// A message naming the setting that is out of range or whose file cannot be used, and
    /// what to change (the caller adds the file and the `model.` field path); for an external
    /// model whose command cannot be started or fails the handshake, the setting `command` with
    /// the command, the failure and the tail of its stderr.
    pub fn build(&self, base_dir: &Path) -> Result<SharedSimulator, ModelSettingError> {
        if self.retry.max_attempts == 0 {
            return Err(ModelSettingError {
                setting: "max_attempts",
                message: "is 0; give at least 1 (1 = never retry)".to_string(),
            });
        }
        Ok(match &self.model {
            ModelKind::BuiltIn(BuiltInModel::Sir(s)) => Arc::new(sir::Sir::new(s.clone())?),
            ModelKind::BuiltIn(BuiltInModel::Seir(s)) => Arc::new(seir::Seir::new(s.clone())?),
            ModelKind::BuiltIn(BuiltInModel::SirBed(s)) => {
                Arc::new(sir_bed::SirBed::new(s.clone())?)
            }
            ModelKind::BuiltIn(BuiltInModel::SeirSeasonal(s)) => {
                Arc::new(seir_seasonal::SeirSeasonal::new(s.clone(), base_dir)?)
            }
            ModelKind::BuiltIn(BuiltInModel::Noop(s)) => Arc::new(noop::NoopModel::new(s.clone())?),
            ModelKind::External(s) => Arc::new(external::ExternalModel::new(s.clone())?),
            ModelKind::Host(h) => {
                return Err(ModelSettingError {
                    setting: "host",
                    message: format!(
                        "`{}` is a host application's model: it is given as a Simulator \
                         (JobBuilder::simulator), it cannot be built from a spec",
                        h.host
                    ),
                })
            }
        })
    }

    /// The spec with paths resolved against `base_dir` (the job file's folder): an external
    /// model's `working_dir`, which defaults to `base_dir` itself.
    pub fn resolved(&self, base_dir: &std::path::Path) -> ModelSpec {
        let mut spec = self.clone();
        if let ModelKind::External(s) = &mut spec.model {
            // A job file named without a folder (`job.toml`) has the empty path as its folder:
            // a process cannot be started in "", so say ".".
            let base_dir = if base_dir.as_os_str().is_empty() { Path::new(".") } else { base_dir };
            let dir = s.working_dir.take().unwrap_or_default();
            s.working_dir = Some(base_dir.join(dir));
        }
        spec
    }

    /// Files the model reads besides the job file (e.g. `seir_seasonal`'s demography file),
    /// resolved against `base_dir`: their contents go into the spec hash, since they change the
    /// results.
    pub fn input_files(&self, base_dir: &Path) -> Vec<std::path::PathBuf> {
        match &self.model {
            ModelKind::BuiltIn(BuiltInModel::SeirSeasonal(s)) => vec![base_dir.join(&s.demography)],
            _ => Vec::new(),
        }
    }

    /// The external model's settings, when it is one.
    pub fn external(&self) -> Option<&external::ExternalSettings> {
        match &self.model {
            ModelKind::External(s) => Some(s),
            ModelKind::BuiltIn(_) | ModelKind::Host(_) => None,
        }
    }
}

/// A model setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("setting `{setting}`: {message}")]
pub struct ModelSettingError {
    /// The setting's name, e.g. `population`.
    pub setting: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}
