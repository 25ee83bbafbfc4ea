//! External models: a worker program, in any language, run as persistent child processes that
//! speak the protocol of `docs/worker-protocol.md` (version [`PROTOCOL_VERSION`]) on their
//! stdin and stdout.
//!
//! ```toml
//! [model]
//! command = ["python3", "model.py"]   # run in `working_dir` (default: the job's folder)
//! env = { OMP_NUM_THREADS = "1" }
//! timeout_seconds = 60
//! memory_limit_mb = 2000
//! [model.settings]                    # passed to the worker's `initialize`
//! population = 763
//! ```
//!
//! [`ExternalModel`] keeps a pool of idle workers. A call takes one (or starts one when none is
//! idle), runs the task on it, and gives it back, so there are never more workers than
//! concurrent callers (the engine's SimWorkers) and each is started once and reused. A worker
//! that crashed, timed out, ran out of memory or broke the protocol is ended and dropped; the
//! next call starts a fresh one. Parameter names and outputs come from the `initialize`
//! handshake, done once in [`ExternalModel::new`].
//!
//! Limits are per worker process: `timeout_seconds` per task (then `SIGKILL` to the worker's
//! process group), `memory_limit_mb` as `RLIMIT_AS` (Unix only; refused elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{ModelSettingError, OutputSpec, SimError, SimOutput, Simulator};
use crate::params::{ParamValue, ParameterSet};

pub mod frame;
mod process;

use frame::{Frame, ARROW_STREAM};
pub use process::STDERR_TAIL_BYTES;
use process::{Fault, LiveWorkers, WorkerProcess};

/// The newest version of the worker protocol spoken here: version 2 adds `execute_many`
/// (several tasks per message). simsweep sends `initialize` as version 1 with
/// `max_protocol_version` = this, and speaks whichever version the worker answers with, so a
/// version-1 worker keeps working unchanged.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version still spoken (a worker answering it gets one `execute` per task).
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// How long a worker may take to start and answer `initialize`, in seconds.
pub const STARTUP_TIMEOUT_SECONDS: u64 = 120;
/// How long an idle worker gets to exit after `shutdown` before it is killed, in seconds.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 1;

/// Settings of an external model (the `[model]` section when it has `command`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSettings {
    /// The worker program and its arguments, e.g. `["python3", "model.py"]`; not run through a
    /// shell. The program is looked up on `PATH` unless it contains a `/`.
    pub command: Vec<String>,
    /// A name for logs and the failures' messages; default: the last element of `command`.
    #[serde(default)]
    pub name: Option<String>,
    /// Environment variables added to simsweep's own for the worker.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The worker's working directory. In a job file it is relative to the job file's folder
    /// and defaults to that folder, so `command = ["python3", "model.py"]` finds a `model.py`
    /// beside the job. Built in code, `None` means simsweep's own working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Wall-clock limit for one task (one `execute`), in seconds; the worker is killed after
    /// it. Default: no limit.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Address-space limit of each worker process, in MiB (`RLIMIT_AS`; Unix only). Default:
    /// no limit. It counts virtual memory: leave room above the resident size.
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    /// Passed as `settings` to the worker's `initialize` (the `[model.settings]` table).
    #[serde(default)]
    pub settings: toml::Table,
}

impl ExternalSettings {
    /// Settings running `command` with every other setting at its default.
    pub fn new(command: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ExternalSettings {
            command: command.into_iter().map(Into::into).collect(),
            name: None,
            env: BTreeMap::new(),
            working_dir: None,
            timeout_seconds: None,
            memory_limit_mb: None,
            settings: toml::Table::new(),
        }
    }

    /// The command as one line, for messages.
    pub fn command_line(&self) -> String {
        self.command.join(" ")
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout_seconds.map(Duration::from_secs_f64)
    }
}

/// One column of an output, as declared in the `initialize` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDecl {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

/// One output, as declared in the `initialize` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDecl {
    name: String,
    columns: Vec<ColumnDecl>,
}

/// The `initialize` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct InitReply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    protocol_version: Option<u32>,
    #[serde(default)]
    parameters: Vec<String>,
    #[serde(default)]
    outputs: Vec<OutputDecl>,
}

/// What the handshake established; every later worker must answer the same.
#[derive(Debug, Clone, PartialEq)]
struct Handshake {
    protocol_version: u32,
    parameters: Vec<String>,
    outputs: Vec<OutputDecl>,
}

/// The header of an `execute` reply.
#[derive(Debug, Deserialize)]
struct ExecuteReply {
    id: u64,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    tables: Vec<TableRef>,
}

/// The header of an `execute_many` reply (protocol version 2): an `execute` reply's fields and
/// the tasks' results.
#[derive(Debug, Deserialize)]
struct ExecuteManyReply {
    #[serde(flatten)]
    header: ExecuteReply,
    /// One per task, in the request's order (on success).
    #[serde(default)]
    results: Vec<TaskResult>,
}

/// One task's outcome in an `execute_many` reply.
#[derive(Debug, Deserialize)]
struct TaskResult {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

/// `execute_many` messages a call of [`Simulator::simulate_many`] is split into, all sent before
/// the first reply is read, so that the worker never waits for simsweep within a call.
pub const PIPELINED_MESSAGES: usize = 2;

/// Name of the column of `execute_many` tables that says which task a row belongs to.
pub const TASK_COLUMN: &str = "task";

#[derive(Debug, Deserialize)]
struct TableRef {
    name: String,
    bytes: u64,
}

fn arrow_type(name: &str) -> Option<DataType> {
    Some(match name {
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "bool" => DataType::Boolean,
        _ => return None,
    })
}

/// A model run by worker processes (see the [module docs](self)).
pub struct ExternalModel {
    settings: ExternalSettings,
    name: String,
    handshake: Handshake,
    outputs: Vec<OutputSpec>,
    /// Idle workers, by the thread that started them: a thread uses only its own worker (on
    /// Linux a worker dies with the thread that started it, `PR_SET_PDEATHSIG`), and gives it
    /// back in [`Simulator::release_thread`] as its run ends.
    idle: Mutex<HashMap<ThreadId, WorkerProcess>>,
    /// Workers alive, idle or busy, for [`Simulator::abort`].
    live: Arc<LiveWorkers>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ExternalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalModel")
            .field("command", &self.settings.command)
            .field("parameters", &self.handshake.parameters)
            .finish_non_exhaustive()
    }
}

impl ExternalModel {
    /// Checks the settings, starts one worker and does the `initialize` handshake; the worker
    /// is kept for the first task.
    ///
    /// # Errors
    /// [`ModelSettingError`] for `command` when it is empty, cannot be started, or fails the
    /// handshake (the message names the command, says what happened and quotes the tail of
    /// its stderr); for `timeout_seconds` when not a positive finite number; for
    /// `memory_limit_mb` when 0 or on a platform without `setrlimit`; for `settings` when it
    /// cannot be sent as JSON.
    pub fn new(settings: ExternalSettings) -> Result<Self, ModelSettingError> {
        let invalid = |setting, message: String| ModelSettingError { setting, message };
        if settings.command.is_empty() {
            return Err(invalid(
                "command",
                "is empty; give the program and its arguments, e.g. [\"python3\", \"model.py\"]"
                    .into(),
            ));
        }
        if let Some(t) = settings.timeout_seconds {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(
                    "timeout_seconds",
                    format!("is {t}; give a positive number of seconds"),
                ));
            }
        }
        if settings.memory_limit_mb == Some(0) {
            return Err(invalid(
                "memory_limit_mb",
                "is 0; give a limit in MiB or leave it out".into(),
            ));
        }
        if cfg!(not(unix)) && settings.memory_limit_mb.is_some() {
            return Err(invalid(
                "memory_limit_mb",
                "is only enforced on Unix; leave it out on this platform".into(),
            ));
        }
        serde_json::to_value(&settings.settings)
            .map_err(|e| invalid("settings", format!("cannot be sent as JSON: {e}")))?;
        let command = settings.command_line();
        let name = settings
            .name
            .clone()
            .unwrap_or_else(|| settings.command.last().cloned().unwrap_or_default());
        let live = Arc::new(LiveWorkers::default());
        let (worker, handshake) = start(&settings, &live).map_err(|error| {
            let mut message = format!("`{command}`: {error}");
            if let Some(tail) = error.stderr_tail().filter(|t| !t.trim().is_empty()) {
                message.push_str(&format!("\n--- stderr (last bytes) ---\n{}", tail.trim_end()));
            }
            invalid("command", message)
        })?;
        let outputs = output_specs(&handshake.outputs)
            .map_err(|message| invalid("command", format!("`{command}`: {message}")))?;
        // The handshake's worker is not kept: workers are started by the threads that use them
        // (on Linux the kernel kills a worker when the thread that started it ends, so none
        // outlives a run; a worker started here, on the loading thread, could die with it).
        drop(worker);
        Ok(ExternalModel {
            settings,
            name,
            handshake,
            outputs,
            idle: Mutex::new(HashMap::new()),
            live,
            next_id: AtomicU64::new(1),
        })
    }

    /// The settings the model was built with.
    pub fn settings(&self) -> &ExternalSettings {
        &self.settings
    }

    /// Workers idle in the pool (at most one per thread that ran a task and has not released
    /// it).
    pub fn idle_workers(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Worker processes alive, idle or running a task.
    pub fn live_workers(&self) -> usize {
        self.live.len()
    }

    fn checkout(&self) -> Result<WorkerProcess, SimError> {
        let me = std::thread::current().id();
        if let Some(worker) = self.idle.lock().ok().and_then(|mut v| v.remove(&me)) {
            return Ok(worker);
        }
        let (worker, handshake) = start(&self.settings, &self.live)?;
        if handshake != self.handshake {
            return Err(worker.into_error(Fault::Protocol(format!(
                "a new worker answered `initialize` differently from the first one: \
                 {handshake:?} instead of {:?}",
                self.handshake
            ))));
        }
        Ok(worker)
    }

    fn checkin(&self, worker: WorkerProcess) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.insert(std::thread::current().id(), worker);
        }
    }

    /// Runs one task on `worker`; `Ok(Err(message))` is a model error (the worker stays).
    fn execute(
        &self,
        worker: &mut WorkerProcess,
        params: &ParameterSet,
        seed: u32,
    ) -> Result<Result<SimOutput, String>, Fault> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.timeout();
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        worker.send(&serde_json::json!({
            "method": "execute", "id": id, "params": params_json(params), "seed": seed,
        }))?;
        let header = worker.recv(deadline)?;
        let reply: ExecuteReply = parse_json(&header, "execute reply")?;
        if let Err(error) = self.check_reply(&reply, id)? {
            return Ok(Err(error));
        }
        let mut tables = Vec::with_capacity(self.outputs.len());
        for (table, spec) in reply.tables.iter().zip(&self.outputs) {
            let frame = receive_table(worker, deadline, table, spec)?;
            tables.push(decode_table(&frame.body, spec).map_err(Fault::Protocol)?);
        }
        Ok(Ok(SimOutput { tables }))
    }

    /// Checks a reply header to request `id`: `Ok(Err(message))` for a model error (`ok: false`,
    /// kind `error`); a fault for another id, an OOM report, an unknown kind, or tables other
    /// than the declared outputs.
    fn check_reply(&self, reply: &ExecuteReply, id: u64) -> Result<Result<(), String>, Fault> {
        if reply.id != id {
            return Err(Fault::Protocol(format!("reply for id {} to request {id}", reply.id)));
        }
        if !reply.ok {
            let error = reply.error.clone().unwrap_or_else(|| "(no message)".into());
            return match reply.kind.as_deref() {
                None | Some("error") => Ok(Err(error)),
                Some("oom") => Err(Fault::Oom(error)),
                Some(other) => Err(Fault::Protocol(format!("unknown error kind `{other}`"))),
            };
        }
        let names: Vec<&str> = reply.tables.iter().map(|t| t.name.as_str()).collect();
        let declared: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        if names != declared {
            return Err(Fault::Protocol(format!(
                "reply has tables {names:?}; the model declared {declared:?}"
            )));
        }
        Ok(Ok(()))
    }

    /// Runs `tasks` on `worker` with `execute_many` (protocol version 2), as
    /// [`PIPELINED_MESSAGES`] messages sent at once when there are at least 8 tasks: the worker
    /// starts the second while simsweep decodes the first's tables. A message of `n` tasks may
    /// take `n × timeout_seconds` (counted from when its reply is awaited), so no task within
    /// the limit is cut short; one that times out is a fault of the call, and its tasks then
    /// run one by one, each with `timeout_seconds`.
    fn execute_many(
        &self,
        worker: &mut WorkerProcess,
        tasks: &[(&ParameterSet, u32)],
    ) -> Result<Vec<Result<SimOutput, String>>, Fault> {
        let parts = if tasks.len() >= 8 { PIPELINED_MESSAGES } else { 1 };
        let part_len = tasks.len().div_ceil(parts);
        let mut ids = Vec::with_capacity(parts);
        for part in tasks.chunks(part_len) {
            ids.push(self.send_many(worker, part)?);
        }
        let mut results = Vec::with_capacity(tasks.len());
        for (part, id) in tasks.chunks(part_len).zip(ids) {
            results.extend(self.receive_many(worker, part, id)?);
        }
        Ok(results)
    }

    /// Sends one `execute_many` request for `tasks`; returns its id.
    fn send_many(
        &self,
        worker: &mut WorkerProcess,
        tasks: &[(&ParameterSet, u32)],
    ) -> Result<u64, Fault> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let requests: Vec<serde_json::Value> = tasks
            .iter()
            .map(
                |(params, seed)| serde_json::json!({ "params": params_json(params), "seed": seed }),
            )
            .collect();
        worker.send(&serde_json::json!({
            "method": "execute_many", "id": id, "tasks": requests,
        }))?;
        Ok(id)
    }

    /// Receives the reply to `execute_many` request `id` for `tasks`.
    fn receive_many(
        &self,
        worker: &mut WorkerProcess,
        tasks: &[(&ParameterSet, u32)],
        id: u64,
    ) -> Result<Vec<Result<SimOutput, String>>, Fault> {
        let deadline = self.settings.timeout().map(|t| {
            let t = t.saturating_mul(u32::try_from(tasks.len()).unwrap_or(u32::MAX));
            (Instant::now() + t, t)
        });
        let header = worker.recv(deadline)?;
        let reply: ExecuteManyReply = parse_json(&header, "execute_many reply")?;
        if let Err(error) = self.check_reply(&reply.header, id)? {
            return Ok(tasks.iter().map(|_| Err(error.clone())).collect());
        }
        if reply.results.len() != tasks.len() {
            return Err(Fault::Protocol(format!(
                "execute_many reply has {} results for {} tasks",
                reply.results.len(),
                tasks.len()
            )));
        }
        // Per task, its tables in declared order.
        let mut per_task: Vec<Vec<RecordBatch>> =
            (0..tasks.len()).map(|_| Vec::with_capacity(self.outputs.len())).collect();
        for (table, spec) in reply.header.tables.iter().zip(&self.outputs) {
            let frame = receive_table(worker, deadline, table, spec)?;
            let parts =
                decode_task_table(&frame.body, spec, &reply.results).map_err(Fault::Protocol)?;
            for (tables, part) in per_task.iter_mut().zip(parts) {
                tables.push(part);
            }
        }
        Ok(reply
            .results
            .into_iter()
            .zip(per_task)
            .map(|(result, tables)| {
                if result.ok {
                    Ok(SimOutput { tables })
                } else {
                    Err(result.error.unwrap_or_else(|| "(no message)".into()))
                }
            })
            .collect())
    }
}

impl Simulator for ExternalModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn parameter_names(&self) -> Vec<String> {
        self.handshake.parameters.clone()
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.outputs.clone()
    }

    /// Runs one task on an idle worker, or on a fresh one.
    ///
    /// # Errors
    /// [`SimError::Model`] when the worker replied with an error; [`SimError::Crash`],
    /// [`SimError::Oom`], [`SimError::Timeout`] or [`SimError::Protocol`] when it died, ran
    /// out of memory, took too long or broke the protocol (also while starting a fresh
    /// worker); that worker is then ended and dropped.
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError> {
        let mut worker = self.checkout()?;
        match self.execute(&mut worker, params, seed) {
            Ok(result) => {
                self.checkin(worker);
                result.map_err(SimError::Model)
            }
            Err(fault) => Err(worker.into_error(fault)),
        }
    }

    /// True when the worker speaks protocol version 2 (`execute_many`).
    fn runs_many(&self) -> bool {
        self.handshake.protocol_version >= 2
    }

    /// Runs `tasks` in one `execute_many` message on an idle worker, or on a fresh one; a
    /// version-1 worker gets one `execute` per task.
    ///
    /// # Errors
    /// As [`Simulator::simulate`], for the message as a whole (that worker is then ended and
    /// dropped); a model error of one task is that task's `Err`.
    fn simulate_many(
        &self,
        tasks: &[(&ParameterSet, u32)],
    ) -> Result<Vec<Result<SimOutput, SimError>>, SimError> {
        if !self.runs_many() {
            return Ok(tasks.iter().map(|(params, seed)| self.simulate(params, *seed)).collect());
        }
        let mut worker = self.checkout()?;
        match self.execute_many(&mut worker, tasks) {
            Ok(results) => {
                self.checkin(worker);
                Ok(results.into_iter().map(|r| r.map_err(SimError::Model)).collect())
            }
            Err(fault) => Err(worker.into_error(fault)),
        }
    }

    /// SIGKILLs the process group of every live worker (the model's children included); the
    /// tasks they ran fail at once. A worker started after the call is not affected (the engine
    /// calls again while a hard stop waits).
    fn abort(&self) {
        let killed = self.live.kill_all();
        if killed > 0 {
            tracing::debug!(killed, "hard stop: killed the external model's workers");
        }
    }

    /// Shuts down the calling thread's idle worker (`shutdown`, then SIGKILL after
    /// [`SHUTDOWN_GRACE_SECONDS`]) and reaps it.
    fn release_thread(&self) {
        let me = std::thread::current().id();
        let worker = self.idle.lock().ok().and_then(|mut v| v.remove(&me));
        if let Some(worker) = worker {
            worker.shutdown(Duration::from_secs(SHUTDOWN_GRACE_SECONDS));
        }
    }
}

impl Drop for ExternalModel {
    fn drop(&mut self) {
        if let Ok(idle) = self.idle.get_mut() {
            for (_, worker) in idle.drain() {
                worker.shutdown(Duration::from_secs(SHUTDOWN_GRACE_SECONDS));
            }
        }
    }
}

/// Starts a worker and does the handshake.
fn start(
    settings: &ExternalSettings,
    live: &Arc<LiveWorkers>,
) -> Result<(WorkerProcess, Handshake), SimError> {
    let mut worker = WorkerProcess::spawn(settings, live).map_err(|e| SimError::Protocol {
        message: format!("could not start `{}`: {e}", settings.command_line()),
        stderr_tail: String::new(),
    })?;
    match handshake(&mut worker, settings) {
        Ok(h) => Ok((worker, h)),
        Err(fault) => Err(worker.into_error(fault)),
    }
}

fn handshake(worker: &mut WorkerProcess, settings: &ExternalSettings) -> Result<Handshake, Fault> {
    let limit = Duration::from_secs(STARTUP_TIMEOUT_SECONDS);
    let settings_json =
        serde_json::to_value(&settings.settings).map_err(|e| Fault::Protocol(e.to_string()))?;
    worker.send(&serde_json::json!({
        "method": "initialize",
        "protocol_version": MIN_PROTOCOL_VERSION,
        "max_protocol_version": PROTOCOL_VERSION,
        "settings": settings_json,
    }))?;
    let reply: InitReply =
        parse_json(&worker.recv(Some((Instant::now() + limit, limit)))?, "initialize reply")?;
    if !reply.ok {
        return Err(Fault::Protocol(format!(
            "initialize failed: {}",
            reply.error.unwrap_or_else(|| "(no message)".into())
        )));
    }
    let protocol_version = match reply.protocol_version {
        Some(v) if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v) => v,
        other => {
            return Err(Fault::Protocol(format!(
                "worker speaks protocol version {other:?}, simsweep \
                 {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            )))
        }
    };
    Ok(Handshake { protocol_version, parameters: reply.parameters, outputs: reply.outputs })
}

/// Receives the Arrow frame of `table` (announced in a reply header) and checks its
/// Content-Type and length.
fn receive_table(
    worker: &mut WorkerProcess,
    deadline: Option<(Instant, Duration)>,
    table: &TableRef,
    spec: &OutputSpec,
) -> Result<Frame, Fault> {
    let frame = worker.recv(deadline)?;
    if frame.content_type.as_deref() != Some(ARROW_STREAM) {
        return Err(Fault::Protocol(format!(
            "table `{}`: Content-Type {:?}, expected {ARROW_STREAM}",
            spec.name, frame.content_type
        )));
    }
    if frame.body.len() as u64 != table.bytes {
        return Err(Fault::Protocol(format!(
            "table `{}`: {} bytes announced, {} sent",
            spec.name,
            table.bytes,
            frame.body.len()
        )));
    }
    Ok(frame)
}

fn parse_json<T: serde::de::DeserializeOwned>(frame: &Frame, what: &str) -> Result<T, Fault> {
    if !frame.is_json() {
        return Err(Fault::Protocol(format!(
            "expected the {what} (JSON), got Content-Type {:?}",
            frame.content_type
        )));
    }
    serde_json::from_slice(&frame.body).map_err(|e| {
        let shown = String::from_utf8_lossy(&frame.body[..frame.body.len().min(200)]).into_owned();
        Fault::Protocol(format!("{what} is not valid: {e}: {shown}"))
    })
}

/// A parameter set as the JSON object of a request's `params`.
fn params_json(params: &ParameterSet) -> serde_json::Map<String, serde_json::Value> {
    params.iter().map(|(k, v)| (k.to_string(), param_json(v))).collect()
}

fn param_json(value: &ParamValue) -> serde_json::Value {
    match value {
        ParamValue::Float(x) => {
            serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into)
        }
        ParamValue::Int(i) => (*i).into(),
        ParamValue::Str(s) => s.clone().into(),
    }
}

/// The declared outputs as Arrow schemas.
fn output_specs(outputs: &[OutputDecl]) -> Result<Vec<OutputSpec>, String> {
    outputs
        .iter()
        .map(|o| {
            let fields = o
                .columns
                .iter()
                .map(|c| {
                    let t = arrow_type(&c.data_type).ok_or_else(|| {
                        format!(
                            "output `{}` column `{}` has type `{}`; use int32, int64, uint32, \
                             uint64, float32, float64, utf8 or bool",
                            o.name, c.name, c.data_type
                        )
                    })?;
                    Ok(Field::new(&c.name, t, c.nullable))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(OutputSpec { name: o.name.clone(), schema: Arc::new(Schema::new(fields)) })
        })
        .collect()
}

/// Decodes one Arrow IPC stream into one record batch with the declared schema.
fn decode_table(body: &[u8], spec: &OutputSpec) -> Result<RecordBatch, String> {
    let context = |e: &dyn std::fmt::Display| format!("table `{}`: {e}", spec.name);
    let reader = StreamReader::try_new(Cursor::new(body), None).map_err(|e| context(&e))?;
    let schema: SchemaRef = reader.schema();
    let got: Vec<(&str, &DataType)> =
        schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    let want: Vec<(&str, &DataType)> =
        spec.schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    if got != want {
        return Err(format!(
            "table `{}` has columns {got:?}; the model declared {want:?}",
            spec.name
        ));
    }
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| context(&e))?;
    let table = arrow::compute::concat_batches(&schema, &batches).map_err(|e| context(&e))?;
    RecordBatch::try_new(Arc::clone(&spec.schema), table.columns().to_vec())
        .map_err(|e| context(&e))
}

/// Decodes one `execute_many` table (an Arrow IPC stream whose first column is
/// [`TASK_COLUMN`], `uint32`, the declared columns after it) into one record batch per task
/// with the declared schema. Rows must be grouped by task in ascending order; a failed task
/// has no rows (its batch is empty).
fn decode_task_table(
    body: &[u8],
    spec: &OutputSpec,
    results: &[TaskResult],
) -> Result<Vec<RecordBatch>, String> {
    let context = |e: &dyn std::fmt::Display| format!("table `{}`: {e}", spec.name);
    let reader = StreamReader::try_new(Cursor::new(body), None).map_err(|e| context(&e))?;
    let schema: SchemaRef = reader.schema();
    let got: Vec<(&str, &DataType)> =
        schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    let want: Vec<(&str, &DataType)> = std::iter::once((TASK_COLUMN, &DataType::UInt32))
        .chain(spec.schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())))
        .collect();
    if got != want {
        return Err(format!(
            "table `{}` has columns {got:?}; expected {want:?} (`{TASK_COLUMN}` then the \
             declared columns)",
            spec.name
        ));
    }
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| context(&e))?;
    let table = arrow::compute::concat_batches(&schema, &batches).map_err(|e| context(&e))?;
    let task = table
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::UInt32Array>()
        .ok_or_else(|| context(&"`task` is not uint32"))?;
    if arrow::array::Array::null_count(task) > 0 {
        return Err(context(&"`task` has nulls"));
    }
    let values = task.values();
    let mut out = Vec::with_capacity(results.len());
    let mut start = 0usize;
    for (index, result) in results.iter().enumerate() {
        let index = index as u32;
        let mut end = start;
        while end < values.len() && values[end] == index {
            end += 1;
        }
        if end > start && !result.ok {
            return Err(context(&format!("rows for task {index}, which failed")));
        }
        let columns = table.slice(start, end - start).columns()[1..]
            .iter()
            .map(|c| arrow::compute::concat(&[c.as_ref()]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| context(&e))?;
        let part = RecordBatch::try_new_with_options(
            Arc::clone(&spec.schema),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(end - start)),
        )
        .map_err(|e| context(&e))?;
        out.push(part);
        start = end;
    }
    if start != values.len() {
        return Err(context(&format!(
            "`task` value {} at row {start}: rows must be grouped by task, in ascending order, \
             each below {}",
            values[start],
            results.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
