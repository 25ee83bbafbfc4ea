//! The `simsweep` command: parses arguments, installs logging, loads the job and calls
//! [`simsweep::run`]. Everything else lives in the library.
//!
//! Exit codes: 0 done; 2 bad input (spec, data, output directory — including one locked by
//! another run —, arguments), nothing written; 3 a failure while running (I/O, a stopped
//! actor), committed batches kept and resumable — or a damaged file in the output directory
//! (manifest, committed batch file), to restore or start over with `--restart`; 130 stopped by
//! SIGINT, 143 by SIGTERM, resumable.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod progress_view;
mod shard_env;
use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use simsweep::{CancelToken, Job, ProgressEvent, ProgressObserver, Report, RunOptions};

/// Exit code when standard output is closed before everything was printed (e.g.
/// `simsweep status DIR | head -3`): 128 + SIGPIPE, what a shell reports for a process SIGPIPE
/// ended. (SIGPIPE itself stays ignored, as Rust sets it: writes to a dead external model's
/// stdin must be errors the engine handles, not the end of the process.)
const EXIT_STDOUT_CLOSED: i32 = 141;

/// `println!` that ends the process quietly when standard output is closed, instead of the
/// standard macro's panic. Everything that matters (manifest, batches) is on disk before the
/// command prints.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(EXIT_STDOUT_CLOSED);
            }
        }
    }};
}

/// `eprintln!` that ignores a closed standard error instead of the standard macro's panic: a
/// message lost to a closed pipe must not take the run down (`simsweep run … 2>&1 | head -1`).
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The environment variable giving the batch size when `--batch-size` is not given.
const BATCH_SIZE_ENV: &str = "SIMSWEEP_BATCH_SIZE";
/// Exit code for bad input.
const EXIT_INPUT: u8 = 2;
/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 3;
/// Exit code after a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
const EXIT_SIGNAL_BASE: i32 = 128;
/// Exit code of a run that finished but in which every simulation failed (the model is broken,
/// or cannot run these parameter sets): results are written, but a script should not go on.
const EXIT_ALL_FAILED: u8 = 4;
/// Exit code when a part of the run panicked (a defect): committed batches are kept.
const EXIT_INTERNAL: u8 = 5;
/// After the first SIGINT/SIGTERM, the longest wait for the simulations in flight and the
/// batches they complete; past it the run is stopped hard, as on a second signal.
const CANCEL_GRACE: Duration = Duration::from_secs(30);
/// After a hard stop, when the process exits if the run has not returned (it returns within
/// `HARD_STOP_SECONDS`, 2 s, unless something is badly stuck).
const HARD_STOP_EXIT_AFTER: Duration = Duration::from_secs(5);
/// Rows of the best-parameter-set table per target.
const BEST_SHOWN: usize = 5;

#[derive(Parser)]
#[command(
    name = "simsweep",
    version,
    about = "Bounded, resumable sweeps of stochastic simulations, written to Parquet batch by batch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job (resuming an interrupted run in the same output directory).
    Run {
        /// The job spec (TOML).
        job: PathBuf,
        /// Output directory (default: the job's `output`, relative to the job file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Parameter sets per batch [precedence: flag > env SIMSWEEP_BATCH_SIZE > job file > 200;
        /// an empty SIMSWEEP_BATCH_SIZE counts as unset].
        #[arg(long)]
        batch_size: Option<NonZeroUsize>,
        /// Simulation worker threads (default: one per core).
        #[arg(long)]
        workers: Option<NonZeroUsize>,
        /// The most model outputs held in memory, in MB (10^6 bytes) [default: 1074, 1 GiB]; a
        /// batch larger than it runs alone, with a warning.
        #[arg(long, value_name = "MB")]
        max_buffer_mb: Option<std::num::NonZeroU64>,
        /// Start over: delete the results of an earlier run in the output directory (only
        /// simsweep's own files), even of another job, instead of resuming or refusing them.
        #[arg(long)]
        restart: bool,
        /// Show debug logs and per-batch lines.
        #[arg(short, long)]
        verbose: bool,
        /// Run one of K shards of the sweep (a contiguous slice of whole batches) into
        /// `OUT/shard=I-of-K/`; with --shard, default: env SLURM_ARRAY_TASK_COUNT.
        #[arg(long, value_name = "K")]
        shards: Option<u32>,
        /// Which shard, 0 to K-1 [default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN,
        /// JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or HQ_TASK_ID (HyperQueue)].
        #[arg(long, value_name = "I")]
        shard: Option<u32>,
    },
    /// Check that every shard of a sharded output is finished and of the same spec, then
    /// write the job's summary.json and index.json there.
    Merge {
        /// The output directory the shards were run into (their --out).
        dir: PathBuf,
    },
    /// Show the state of an output directory: a running, dead or finished run.
    Status {
        /// The output directory.
        dir: PathBuf,
    },
    /// Write DIR/report.html: one self-contained HTML file (inline SVG, no script, no network)
    /// with the fit of the best parameter sets to each target's data, the loss against each
    /// parameter, pairwise loss maps, the best sets and the job's progress and failures. Works
    /// on a finished, a running (committed batches) and a sharded output.
    Report {
        /// The output directory.
        dir: PathBuf,
        /// Best parameter sets in the fit plot and the table.
        #[arg(long, default_value_t = simsweep::report::DEFAULT_TOP)]
        top: usize,
        /// Also write every plot as an SVG file into this folder (for papers).
        #[arg(long)]
        svg_dir: Option<PathBuf>,
        /// Open the report in the default browser (xdg-open / open) once written.
        #[arg(long)]
        open: bool,
    },
    /// Run a daemon serving the jobs API over HTTP: submit, watch, cancel and fetch the
    /// results of jobs (loopback by default; beyond it every request needs the token of
    /// --token-file); see the README, "Daemon".
    Serve {
        /// Address to listen on (beyond loopback only with --token-file; port 0 picks a free
        /// one and prints it).
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// Registry and job folders [default: $XDG_DATA_HOME/simsweep, else
        /// ~/.local/share/simsweep].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Jobs running at once; the rest wait in the queue.
        #[arg(long, default_value_t = NonZeroUsize::MIN)]
        max_running: NonZeroUsize,
        /// Simulation workers of the whole server, shared by the running jobs (default: one per
        /// core).
        #[arg(long)]
        workers: Option<NonZeroUsize>,
        /// Bearer token file (created, mode 0600, when absent): every request but /healthz must
        /// carry `Authorization: Bearer <token>`. Required beyond loopback.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Another `Host` the daemon answers to (`name` or `name:port`); repeatable.
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// The server's model allow-list (TOML): `[models.NAME]` tables as a job file's
        /// `[model]` of an external model (`command`, …); jobs name them, never a command.
        #[arg(long, value_name = "FILE")]
        models: Option<PathBuf>,
        /// A folder whose files jobs may name by absolute path (shared data); repeatable.
        #[arg(long = "allow-dir", value_name = "DIR")]
        allow_dirs: Vec<PathBuf>,
        /// Most parameter sets one job may have (larger jobs get 422) [default: 10,000,000].
        #[arg(long, value_name = "N")]
        max_parameter_sets: Option<NonZeroUsize>,
    },
    /// Submit a job file (and the files it names) to a daemon; prints the job's id.
    Submit {
        /// The job spec (TOML).
        job: PathBuf,
        /// The daemon.
        #[arg(long, env = "SIMSWEEP_SERVER", default_value = simsweep::daemon::client::DEFAULT_SERVER)]
        server: String,
        /// Higher starts first among queued jobs.
        #[arg(long, default_value_t = 0)]
        priority: i64,
    },
    /// List a daemon's jobs.
    Jobs {
        /// The daemon.
        #[arg(long, env = "SIMSWEEP_SERVER", default_value = simsweep::daemon::client::DEFAULT_SERVER)]
        server: String,
        /// Only jobs in this state (queued, running, stopping, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
    },
    /// Cancel a daemon's job (resumable with its API's resume).
    Cancel {
        /// The job's id.
        id: String,
        /// Stop at once (external model processes killed) instead of at a batch boundary.
        #[arg(long)]
        force: bool,
        /// The daemon.
        #[arg(long, env = "SIMSWEEP_SERVER", default_value = simsweep::daemon::client::DEFAULT_SERVER)]
        server: String,
    },
    /// Follow a daemon's job until it ends: a progress bar from its events. Exit 0 when it
    /// succeeded, 3 when it failed, 1 when it was cancelled.
    Watch {
        /// The job's id.
        id: String,
        /// The daemon.
        #[arg(long, env = "SIMSWEEP_SERVER", default_value = simsweep::daemon::client::DEFAULT_SERVER)]
        server: String,
    },
    /// Check a job spec and its data files without running anything.
    Validate {
        /// The job spec (TOML).
        job: PathBuf,
        /// Output directory to check, as `run --out` (default: the job's `output`, relative to
        /// the job file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The `[models.NAME]` tables of a `--models` file, each checked as a job's `[model]`.
fn read_models(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, toml::Table>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("--models {shown}: {e}"))?;
    let mut file: toml::Table = text.parse().map_err(|e| format!("--models {shown}: {e}"))?;
    let Some(toml::Value::Table(models)) = file.remove("models") else {
        return Err(format!("--models {shown}: no [models.NAME] tables"));
    };
    if let Some(other) = file.keys().next() {
        return Err(format!("--models {shown}: unknown key `{other}`; only [models.NAME] tables"));
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, model) in models {
        let toml::Value::Table(model) = model else {
            return Err(format!("--models {shown}: `models.{name}` is not a table"));
        };
        if !model.contains_key("command") {
            return Err(format!("--models {shown}: `models.{name}` has no `command`"));
        }
        let spec: Result<simsweep::engine::model::ModelSpec, _> = model.clone().try_into();
        spec.map_err(|e| format!("--models {shown}: `models.{name}`: {}", e.message().trim_end()))?;
        out.insert(name, model);
    }
    Ok(out)
}

/// `$XDG_DATA_HOME/simsweep`, else `~/.local/share/simsweep`.
fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = xdg.or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share"))
    })?;
    Some(base.join("simsweep"))
}

fn main() -> ExitCode {
    // Before any thread starts: large blocks go back to the system when freed, so a long run's
    // resident memory stays near what it holds (see `simsweep_engine::memory`).
    simsweep::engine::memory::tune_process_allocator();
    let cli = Cli::parse();
    let verbose = matches!(cli.command, Command::Run { verbose: true, .. });
    let default_level = if verbose { "simsweep=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // The daemon keeps each job's warnings with the job, beside what stderr shows.
    let job_logs = simsweep::daemon::logs::JobLogs::default();
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter);
        let serving = matches!(cli.command, Command::Serve { .. });
        let job_layer = serving
            .then(|| job_logs.clone().with_filter(simsweep::daemon::logs::JobLogs::filter()));
        tracing_subscriber::registry().with(stderr).with(job_layer).init();
    }

    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            max_running,
            workers,
            token_file,
            allow_hosts,
            models,
            allow_dirs,
            max_parameter_sets,
        } => {
            let models = match models.as_deref().map(read_models).transpose() {
                Ok(models) => models.unwrap_or_default(),
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::from(EXIT_INPUT);
                }
            };
            let Some(data_dir) = data_dir.or_else(default_data_dir) else {
                eprintln!(
                    "error: no --data-dir given and no $XDG_DATA_HOME or $HOME to put it under"
                );
                return ExitCode::from(EXIT_INPUT);
            };
            let config = simsweep::daemon::ServeConfig {
                listen,
                data_dir: data_dir.clone(),
                max_running: max_running.get(),
                workers: workers.map_or_else(
                    || std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
                    NonZeroUsize::get,
                ),
                max_parameter_sets: max_parameter_sets.map_or(
                    simsweep::engine::params::space::MAX_POINTS as usize,
                    NonZeroUsize::get,
                ),
                token_file,
                allow_hosts,
                models,
                allow_dirs,
            };
            let served = simsweep::daemon::serve(config, Some(job_logs), |addr| {
                println!(
                    "simsweep serve: listening on http://{addr} (data dir {})",
                    data_dir.display()
                );
            });
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(EXIT_INPUT)
                }
            }
        }
        Command::Submit { job, server, priority } => {
            let client = simsweep::daemon::client::Client::new(&server);
            match client.submit(&job, priority) {
                Ok(created) => {
                    println!(
                        "{}: submitted as {} ({}); watch it with `simsweep watch {} --server {server}`",
                        job.display(),
                        created["id"].as_str().unwrap_or("?"),
                        created["state"].as_str().unwrap_or("?"),
                        created["id"].as_str().unwrap_or("?"),
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => client_fail(&e),
            }
        }
        Command::Jobs { server, state } => {
            let client = simsweep::daemon::client::Client::new(&server);
            let path = match &state {
                Some(s) => format!("/v1/jobs?state={s}&limit=1000"),
                None => "/v1/jobs?limit=1000".to_string(),
            };
            match client.get(&path) {
                Ok(list) => {
                    println!(
                        "{:<9} {:<10} {:>12}  {:>24}  name",
                        "id", "state", "batches", "submitted"
                    );
                    for job in list["jobs"].as_array().into_iter().flatten() {
                        let p = &job["progress"];
                        let batches = match (
                            p["batches_committed"].as_u64(),
                            p["batches_planned"].as_u64(),
                        ) {
                            (Some(done), Some(all)) => format!("{done}/{all}"),
                            _ => "-".to_string(),
                        };
                        println!(
                            "{:<9} {:<10} {:>12}  {:>24}  {}",
                            job["id"].as_str().unwrap_or("?"),
                            job["state"].as_str().unwrap_or("?"),
                            batches,
                            job["submitted_at"].as_str().unwrap_or("?"),
                            job["name"].as_str().unwrap_or("?"),
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => client_fail(&e),
            }
        }
        Command::Cancel { id, force, server } => {
            let client = simsweep::daemon::client::Client::new(&server);
            let path = format!("/v1/jobs/{id}/cancel{}", if force { "?force=true" } else { "" });
            match client.post(&path, &serde_json::json!({})) {
                Ok(answer) => {
                    println!("{id}: {}", answer["state"].as_str().unwrap_or("?"));
                    ExitCode::SUCCESS
                }
                Err(e) => client_fail(&e),
            }
        }
        Command::Watch { id, server } => {
            let client = simsweep::daemon::client::Client::new(&server);
            let bar = ProgressBar::new(0);
            if std::io::stderr().is_terminal() {
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar.set_message(id.clone());
            let watched = client.watch(&id, |kind, data| {
                let p = &data["progress"];
                if let (Some(done), Some(all)) =
                    (p["batches_committed"].as_u64(), p["batches_planned"].as_u64())
                {
                    bar.set_length(all);
                    bar.set_position(done);
                }
                if kind == "state" {
                    bar.println(format!(
                        "{id}: {}{}",
                        data["state"].as_str().unwrap_or("?"),
                        data["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                }
            });
            bar.finish_and_clear();
            match watched {
                Ok(state) => {
                    println!("{id}: {state}");
                    match state.as_str() {
                        "succeeded" => ExitCode::SUCCESS,
                        "failed" => ExitCode::from(EXIT_RUNTIME),
                        _ => ExitCode::from(1),
                    }
                }
                Err(e) => client_fail(&e),
            }
        }
        Command::Validate { job, out } => match simsweep::load_job(&job) {
            Ok(mut job) => {
                if let Some(out) = out {
                    job.set_output_dir(out);
                }
                // Every check `run` makes before its first simulation, with the same options.
                let mut options = RunOptions::for_job(&job);
                match batch_size_from_env(std::env::var_os(BATCH_SIZE_ENV)) {
                    Ok(Some(b)) => options.batch_size = b,
                    Ok(None) => {}
                    Err(message) => {
                        eprintln!("error: {message}");
                        return ExitCode::from(EXIT_INPUT);
                    }
                }
                if let Err(e) = simsweep::check_options(&job, &options) {
                    return fail(&e, false);
                }
                let state = match simsweep::check_output(&job) {
                    Ok(state) => state,
                    Err(e) => return fail(&e, false),
                };
                let sweep = if job.sweep().has_fixed_seeds() {
                    format!(
                        "{} parameter set(s), each run once with its row's seed (the file's `seed` \
                         column) = {} simulations",
                        job.sweep().len(),
                        job.simulations()
                    )
                } else {
                    format!(
                        "{} parameter set(s) × {} replicates = {} simulations",
                        job.sweep().len(),
                        job.replicates(),
                        job.simulations()
                    )
                };
                println!(
                    "{}: ok — {sweep}, model {}, {} target(s), batches of {}, output {}",
                    job.spec_file().display(),
                    job.simulator().name(),
                    job.targets().len(),
                    options.batch_size,
                    job.output_dir().display()
                );
                match state {
                    simsweep::OutputState::New => println!("output: new"),
                    simsweep::OutputState::Resumable { batches_committed, batches_planned } => {
                        println!(
                            "output: {batches_committed} of {batches_planned} batches committed; \
                             `simsweep run` resumes"
                        )
                    }
                    simsweep::OutputState::Finished => println!("output: finished"),
                    _ => {}
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&simsweep::Error::Engine(e), false),
        },
        Command::Run {
            job,
            out,
            batch_size,
            workers,
            max_buffer_mb,
            restart,
            verbose,
            shards,
            shard,
        } => {
            let shard = match shard_env::choose_shard(shards, shard, |name| {
                std::env::var(name).ok().filter(|v| !v.is_empty())
            }) {
                Ok(choice) => choice,
                Err(message) => {
                    eprintln!("error: {message}");
                    return ExitCode::from(EXIT_INPUT);
                }
            };
            if let Some(choice) = &shard {
                eprintln!(
                    "simsweep: shard {} of {} (from {})",
                    choice.shard.index, choice.shard.count, choice.source
                );
            }
            let batch_size = match batch_size {
                Some(b) => Some(b),
                None => match batch_size_from_env(std::env::var_os(BATCH_SIZE_ENV)) {
                    Ok(b) => b,
                    Err(message) => {
                        eprintln!("error: {message}");
                        return ExitCode::from(EXIT_INPUT);
                    }
                },
            };
            let job = match simsweep::load_job(&job) {
                Ok(job) => job,
                Err(e) => return fail(&simsweep::Error::Engine(e), false),
            };
            let settings = RunSettings {
                out,
                batch_size,
                workers,
                max_buffer_bytes: max_buffer_mb.map(|mb| mb.get().saturating_mul(1_000_000)),
                restart,
                verbose,
                shard: shard.map(|c| c.shard),
            };
            run(job, settings)
        }
        Command::Merge { dir } => match simsweep::merge(&dir) {
            Ok((index, summary)) => {
                println!(
                    "merged {} shards of `{}`: {} parameter sets, {} simulations ({} failed)",
                    index.shards.len(),
                    index.job_name,
                    index.n_parameter_sets,
                    index.simulations,
                    index.failed
                );
                print_best(&summary, "best");
                println!(
                    "\nwrote {} and {}",
                    dir.join("summary.json").display(),
                    dir.join("index.json").display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, false),
        },
        Command::Status { dir } if !dir.join("manifest.json").exists() => {
            match simsweep::shards(&dir) {
                Ok(shards) if !shards.is_empty() => print_shard_status(&dir, &shards),
                Ok(_) => match simsweep::status(&dir) {
                    Ok(status) => {
                        print_status(&dir, &status);
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e, false),
                },
                Err(e) => fail(&e, false),
            }
        }
        Command::Report { dir, top, svg_dir, open } => {
            let options = simsweep::report::ReportOptions { top, svg_dir };
            match simsweep::report::write_report(&dir, &options) {
                Ok(path) => {
                    println!("{}", path.display());
                    if open {
                        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
                        if let Err(e) = std::process::Command::new(opener).arg(&path).spawn() {
                            eprintln!("note: could not open it with {opener}: {e}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(if e.is_input_error() { EXIT_INPUT } else { EXIT_RUNTIME })
                }
            }
        }
        Command::Status { dir } => match simsweep::status(&dir) {
            Ok(status) => {
                print_status(&dir, &status);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, false),
        },
    }
}

/// The batch size from the value of [`BATCH_SIZE_ENV`] (`None` when unset or empty), or the
/// message naming the variable when the value is not a whole number ≥ 1.
fn batch_size_from_env(value: Option<std::ffi::OsString>) -> Result<Option<NonZeroUsize>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<NonZeroUsize>().map(Some).map_err(|_| {
        format!(
            "environment variable {BATCH_SIZE_ENV}: `{text}` is not a batch size; set it to a \
             whole number ≥ 1 (parameter sets per batch), or unset it (--batch-size, when given, \
             overrides it)"
        )
    })
}

/// The `run` flags that become [`RunOptions`].
struct RunSettings {
    out: Option<PathBuf>,
    batch_size: Option<NonZeroUsize>,
    workers: Option<NonZeroUsize>,
    max_buffer_bytes: Option<u64>,
    restart: bool,
    verbose: bool,
    shard: Option<simsweep::Shard>,
}

fn run(mut job: Job, settings: RunSettings) -> ExitCode {
    let RunSettings { out, batch_size, workers, max_buffer_bytes, restart, verbose, shard } =
        settings;
    if let Some(out) = out {
        job.set_output_dir(out);
    }
    let mut options = RunOptions::for_job(&job);
    if let Some(b) = batch_size {
        options.batch_size = b;
    }
    if let Some(w) = workers {
        options.workers = w;
    }
    if let Some(bytes) = max_buffer_bytes {
        options.max_buffer_bytes = bytes;
    }

    options.restart = restart;
    options.shard = shard;

    let cancel = CancelToken::new();
    let first_signal = Arc::new(AtomicI32::new(0));
    if let Err(error) = handle_signals(cancel.clone(), first_signal.clone()) {
        tracing::warn!(%error, "no SIGINT/SIGTERM handler; a signal kills at once (still resumable)");
    }

    let observer = Arc::new(Bar::new(verbose));
    let result = simsweep::run(&job, &options, observer.clone(), cancel);
    observer.finish();
    match result {
        Ok(report) => {
            print_report(&job, &report);
            if report.progress.failed > 0 {
                print_failures(&report);
            }
            if report.cancelled {
                eprintln!("simsweep: stopped; run the same command again to resume");
                let signal = match first_signal.load(Ordering::SeqCst) {
                    0 => SIGINT,
                    s => s,
                };
                ExitCode::from(u8::try_from(EXIT_SIGNAL_BASE + signal).unwrap_or(u8::MAX))
            } else if all_failed(&report) {
                eprintln!(
                    "simsweep: every simulation failed ({} of {}): see {} for why; fix the model \
                     (or the parameter ranges), then rerun with --restart",
                    report.progress.failed,
                    report.progress.simulations_committed,
                    report.output_dir.join("failures").display()
                );
                ExitCode::from(EXIT_ALL_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e, true),
    }
}

/// Why simulations failed, on stderr: failed attempts by kind with the first message of each,
/// and where the whole table is.
fn print_failures(report: &Report) {
    let p = &report.progress;
    eprintln!(
        "simsweep: {} of {} simulations failed (their losses leave them out; `n_failed` counts them)",
        p.failed, p.simulations_committed
    );
    match simsweep::failures(&report.output_dir) {
        Ok(kinds) => {
            for k in kinds.iter().take(8) {
                let first = k.first_message.lines().next().unwrap_or("");
                let first: String = first.chars().take(160).collect();
                eprintln!("  {:>8} × {:<10} first: {first}", k.count, k.kind);
            }
        }
        Err(e) => eprintln!("  (could not read the failures: {e})"),
    }
    eprintln!(
        "  every failed attempt, with seed, exit code, signal and stderr: {}",
        report.output_dir.join("failures").display()
    );
}

/// True when the run simulated something and every simulation's last attempt failed.
fn all_failed(report: &Report) -> bool {
    let p = &report.progress;
    p.simulations_committed > 0 && p.failed == p.simulations_committed
}

/// On the first SIGINT or SIGTERM: remember which and stop gracefully (no new work; the batches
/// that complete are committed); after [`CANCEL_GRACE`], or on a second signal, stop hard
/// ([`CancelToken::cancel_now`]: the simulations running are killed, their batches dropped). If
/// the run has still not returned [`HARD_STOP_EXIT_AFTER`] later, exit. Exit code 128 + the
/// first signal; the run stays resumable either way, since only committed batches count.
fn handle_signals(cancel: CancelToken, first_signal: Arc<AtomicI32>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let stop_hard = move |cancel: &CancelToken, code: i32| {
        cancel.cancel_now();
        std::thread::spawn(move || {
            std::thread::sleep(HARD_STOP_EXIT_AFTER);
            eprintln!("simsweep: the run did not stop in time; exiting (resumable)");
            std::process::exit(code);
        });
    };
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            let first = first_signal.load(Ordering::SeqCst);
            let code = EXIT_SIGNAL_BASE + if first == 0 { signal } else { first };
            if first_signal.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                eprintln!(
                    "simsweep: {name}: stopping after the simulations running (again to stop at \
                     once; the run stays resumable)"
                );
                cancel.cancel();
                let cancel = cancel.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(CANCEL_GRACE);
                    if !cancel.is_cancelled_now() {
                        eprintln!(
                            "simsweep: the simulations running did not end within {} s; stopping \
                             them (resumable)",
                            CANCEL_GRACE.as_secs()
                        );
                        stop_hard(&cancel, code);
                    }
                });
            } else if !cancel.is_cancelled_now() {
                eprintln!(
                    "simsweep: stopping now: killing the simulations running; run the same \
                     command again to resume"
                );
                stop_hard(&cancel, code);
            }
        }
    })?;
    Ok(())
}

/// `simsweep status` of a sharded output: a line per shard, then what `merge` would say.
fn print_shard_status(dir: &std::path::Path, shards: &[(simsweep::Shard, PathBuf)]) -> ExitCode {
    println!("output      {} (sharded)", dir.display());
    for (shard, path) in shards {
        let line = match simsweep::status(path) {
            Ok(s) => {
                let m = &s.manifest;
                let state = match (m.finished, s.holder) {
                    (true, _) => "finished".to_string(),
                    (false, Some(Some(pid))) => format!("running (pid {pid})"),
                    (false, Some(None)) => "running".to_string(),
                    (false, None) => "stopped".to_string(),
                };
                format!(
                    "{} of {} batches, {} of {} simulations, {} failed, {state}",
                    m.batches.len(),
                    m.batches_planned,
                    s.simulations_committed,
                    m.simulations_planned,
                    s.failed
                )
            }
            Err(e) => format!("unreadable: {}", render(&simsweep::Error::from(e))),
        };
        println!("shard {:>3} of {:<3} {line}", shard.index, shard.count);
    }
    match simsweep::merge_check(dir) {
        Ok(()) => {
            println!("\nall shards finished: `simsweep merge {}` writes the summary", dir.display())
        }
        Err(e) => println!("\nnot ready to merge: {}", render(&simsweep::Error::from(e))),
    }
    ExitCode::SUCCESS
}

/// The best parameter sets of each target, as `status` and `merge` print them.
fn print_best(summary: &[simsweep::TargetSummary], label: &str) {
    for target in summary {
        println!("\n{label} for target `{}` (loss: smaller is better)", target.target);
        if target.best.is_empty() {
            println!("  no loss committed yet");
            continue;
        }
        for (rank, best) in target.best.iter().take(BEST_SHOWN).enumerate() {
            let params: Vec<String> =
                best.parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let se = best.loss_se.map_or_else(String::new, |se| format!(" ± {se:.4}"));
            println!(
                "{:>4}  {:>14.6}{se}  {}  {}",
                rank + 1,
                best.loss,
                params.join(" "),
                &best.param_id[..12.min(best.param_id.len())]
            );
        }
    }
}

fn print_status(dir: &std::path::Path, status: &simsweep::RunStatus) {
    let m = &status.manifest;
    println!("output      {}", dir.display());
    println!("job         {}", m.job_name);
    println!("spec hash   {}", m.spec_hash);
    let state = if m.finished { "finished" } else { "not finished" };
    println!("batches     {} of {} committed ({state})", m.batches.len(), m.batches_planned);
    println!("simulations {} of {} committed", status.simulations_committed, m.simulations_planned);
    println!("failures    {}", status.failed);
    println!("last commit {}", status.last_commit.as_deref().unwrap_or("none yet"));
    match status.holder {
        None => println!("process     none holds the directory (not running)"),
        Some(Some(pid)) => println!("process     running: pid {pid} holds the directory"),
        Some(None) => println!("process     running: a process holds the directory (pid unknown)"),
    }
    print_best(&status.best, "best so far");
    // The refine step's output, when there is one.
    let refine_dir = dir.join(simsweep::engine::spec::REFINE_DIR);
    if refine_dir.join("manifest.json").is_file() {
        match simsweep::status(&refine_dir) {
            Ok(refined) => {
                let m = &refined.manifest;
                let state = if m.finished { "finished" } else { "not finished" };
                println!(
                    "\nrefine      {state}: {} parameter sets × {} replicates in {}",
                    m.n_parameter_sets,
                    m.replicates,
                    refine_dir.display()
                );
                print_best(&refined.best, "best by refined loss");
            }
            Err(e) => println!("\nrefine      unreadable: {}", render(&e)),
        }
    }
}

/// Prints `error` with the causes its message does not already include, and picks the exit
/// code. `running`: the error came from a run (not from reading the job), so committed batches
/// may exist and the user is told they are kept.
/// The error in this command's words: run options as its flags, what to do with `--out` and
/// `--restart` (the library says `RunOptions` fields and the job's `output`).
fn render(error: &simsweep::Error) -> String {
    use simsweep::{EngineError, Remedy};
    let engine = match error {
        simsweep::Error::Engine(e) | simsweep::Error::Run(simsweep::RunError::Engine(e)) => e,
        other => return other.to_string(),
    };
    match engine {
        EngineError::OutputConflict { dir, message, remedy } => {
            let remedy = match remedy {
                Remedy::OtherOutput => "; choose another --out (or the job's `output`)",
                Remedy::RestartOrOtherOutput => {
                    "; run with --restart to delete them and start over, or choose another --out"
                }
                Remedy::RestartOrRemove => {
                    "; run with --restart to start over, or remove this directory"
                }
                Remedy::RemoveOrOtherOutput => "; remove it or choose another --out",
                Remedy::WaitOrOtherOutput => {
                    "; wait for it to end or stop it (it stays resumable), or choose another --out"
                }
                Remedy::SameVersionOrOtherOutput => {
                    "; resume it with that version or choose another --out"
                }
                Remedy::OtherShardOrOutput => {
                    "; give the directory of that shard (--shards/--shard), or choose another --out"
                }
                Remedy::GiveOutputDirectory => {
                    "; give the directory `simsweep run` writes to (--out, or the job's \
                     `output`), not the job file or a data file"
                }
                Remedy::RunTheShards => {
                    "; run them (`simsweep run JOB --shards K --shard I --out` this directory)"
                }
                other => other.api_text(),
            };
            format!("{}: {message}{remedy}", dir.display())
        }
        EngineError::OptionInvalid { option, message } => {
            let flag = match option.as_str() {
                "workers" => "--workers",
                "batch_size" => "--batch-size (or SIMSWEEP_BATCH_SIZE, or `batch_size`)",
                "max_buffer_bytes" => "--max-buffer-mb",
                "shard" => "--shard",
                other => other,
            };
            format!("{flag}: {message}")
        }
        EngineError::Damaged { path, what, source } => format!(
            "{}: {what} is damaged ({source}); restore it from a copy, or start over with \
             `simsweep run --restart` (deletes this directory's results)",
            path.display()
        ),
        other => other.to_string(),
    }
}

/// Prints a client's error; exit 2 for the user's input (a refused request), 3 otherwise.
fn client_fail(error: &simsweep::daemon::client::ClientError) -> ExitCode {
    eprintln!("error: {error}");
    if error.is_input_error() {
        ExitCode::from(EXIT_INPUT)
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn fail(error: &simsweep::Error, running: bool) -> ExitCode {
    let message = render(error);
    eprintln!("error: {message}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        source = s.source();
    }
    if matches!(error, simsweep::Error::Run(simsweep::RunError::Internal { .. })) {
        ExitCode::from(EXIT_INTERNAL)
    } else if error.is_input_error() {
        ExitCode::from(EXIT_INPUT)
    } else if error.is_damaged_output() {
        // The message says what to do: running again would meet the same damaged file.
        ExitCode::from(EXIT_RUNTIME)
    } else {
        if running {
            eprintln!(
                "committed batches are kept; fix the cause and run the same command to resume"
            );
        }
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// Progress display: a bar on a terminal, redrawn 5 times a second, or a plain line every
/// [`PLAIN_LINE_INTERVAL`] otherwise; what it shows is [`progress_view::ProgressView`].
struct Bar {
    bar: Option<ProgressBar>,
    verbose: bool,
    view: Mutex<progress_view::ProgressView>,
    last_line: Mutex<Option<Instant>>,
    /// What the current run is: "" for the sweep, "refine step: " for its refine step.
    label: Mutex<&'static str>,
}

/// Writes `line` to stderr; a closed stderr is not worth a panic (the run goes on).
fn stderr_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(2);

impl Bar {
    fn new(verbose: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Bar {
            bar,
            verbose,
            view: Mutex::default(),
            last_line: Mutex::new(None),
            label: Mutex::new(""),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Shows the view: on the bar, or as a plain line when one is due (or `force`).
    fn show(&self, view: &progress_view::ProgressView, force: bool) {
        let label = *self.label.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = &self.bar {
            bar.set_length(view.planned());
            bar.set_position(view.position());
            bar.set_message(format!("{label}{}", view.line()));
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if force || last.is_none_or(|t| t.elapsed() >= PLAIN_LINE_INTERVAL) {
            // A closed stderr is not worth a panic: the run goes on.
            stderr_line(&format!("{label}{}", view.line()));
            *last = Some(Instant::now());
        }
    }
}

impl ProgressObserver for Bar {
    fn on_event(&self, event: &ProgressEvent) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::Started { progress, .. } => {
                let refine =
                    event.job_id().ends_with(&format!("/{}", simsweep::engine::spec::REFINE_DIR));
                *self.label.lock().unwrap_or_else(|e| e.into_inner()) =
                    if refine { "refine step: " } else { "" };
                view.started(progress);
                self.show(&view, true);
            }
            ProgressEvent::BatchCommitted { progress, .. } => {
                view.committed(progress);
                let end = progress.batches_committed == progress.batches_planned;
                self.show(&view, self.verbose || end);
            }
            ProgressEvent::InFlight {
                now,
                peaks,
                worker_busy,
                workers,
                elapsed,
                simulations_finished,
                ..
            } => {
                view.sample(*elapsed, *simulations_finished);
                self.show(&view, false);
                if !self.verbose {
                    return;
                }
                let capacity = elapsed.as_secs_f64() * *workers as f64;
                let idle = 1.0 - worker_busy.as_secs_f64() / capacity.max(f64::EPSILON);
                let line = format!(
                    "in flight: queued {} running {} awaiting aggregation {} rows buffered {} \
                     (peaks {} / {} / {} / {}), workers idle {:.0}%",
                    now.tasks_queued,
                    now.tasks_running,
                    now.replicates_awaiting_aggregation,
                    now.rows_buffered,
                    peaks.tasks_queued,
                    peaks.tasks_running,
                    peaks.replicates_awaiting_aggregation,
                    peaks.rows_buffered,
                    100.0 * idle.clamp(0.0, 1.0),
                );
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => {
                        stderr_line(&line);
                    }
                }
            }
            _ => {}
        }
    }
}

/// One target's best parameter sets as a table: rank, loss ± standard error, the sweep's loss
/// when `sweep_loss` is given (refined tables), the parameters `names`, the `param_id`.
fn print_best_table(
    best: &[simsweep::BestParameterSet],
    names: &[&str],
    sweep_loss: Option<&dyn Fn(&str) -> Option<f64>>,
) {
    let mut header = format!("{:>4}  {:>14}  {:>10}", "rank", "loss", "± se");
    if sweep_loss.is_some() {
        header.push_str(&format!("  {:>14}", "sweep"));
    }
    for n in names {
        header.push_str(&format!("  {n:>12}"));
    }
    header.push_str("  param_id");
    println!("{header}");
    for (rank, best) in best.iter().take(BEST_SHOWN).enumerate() {
        let se = best.loss_se.map_or_else(|| "—".to_string(), |se| format!("{se:.4}"));
        let mut line = format!("{:>4}  {:>14.6}  {se:>10}", rank + 1, best.loss);
        if let Some(sweep_loss) = sweep_loss {
            let sweep =
                sweep_loss(&best.param_id).map_or_else(|| "—".to_string(), |l| format!("{l:.6}"));
            line.push_str(&format!("  {sweep:>14}"));
        }
        for n in names {
            let v = match best.parameters.iter().find(|(k, _)| k == n).map(|(_, v)| v) {
                Some(simsweep::engine::params::ParamValue::Float(x)) => format!("{x:.6}"),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            line.push_str(&format!("  {v:>12}"));
        }
        line.push_str(&format!("  {}", &best.param_id[..12.min(best.param_id.len())]));
        println!("{line}");
    }
}

fn print_report(job: &Job, report: &Report) {
    let p = &report.progress;
    println!(
        "{} simulations in {} batches ({} resumed), {} failed, {:.1} s",
        p.simulations_committed,
        p.batches_committed,
        report.batches_resumed,
        p.failed,
        report.elapsed.as_secs_f64()
    );
    if let Some(refined) = &report.refined {
        println!(
            "(the {:.1} s include the refine step: {} parameter sets × {} replicates)",
            report.elapsed.as_secs_f64(),
            refined.parameter_sets,
            refined.replicates
        );
    }
    let names: Vec<&str> = job.sweep().columns().iter().map(|(n, _)| n.as_str()).collect();
    for target in &report.summary {
        println!("\nbest parameter sets for target `{}` (loss: smaller is better)", target.target);
        if target.null_losses > 0 {
            println!(
                "  note: {} of {} parameter sets have no loss (all replicates failed — see \
                 failures/ — or the model's output does not cover the observations — see the \
                 warnings above)",
                target.null_losses, target.rows
            );
        }
        if target.nan_losses > 0 {
            println!(
                "  note: {} of {} parameter sets have a NaN loss (computed but undefined, e.g. \
                 a NaN in the model's output); they are not ranked",
                target.nan_losses, target.rows
            );
        }
        if target.infinite_losses > 0 {
            println!(
                "  note: {} of {} parameter sets have an infinite loss (infinitely bad, e.g. a \
                 zero prediction where cases were observed); they rank after every finite loss",
                target.infinite_losses, target.rows
            );
        }
        print_best_table(&target.best, &names, None);
    }
    if let Some(refined) = &report.refined {
        println!(
            "\nrefined: the best {} parameter set(s) run again with {} replicates each (replicates \
             {} … {}, seeds the sweep did not use), in {}/",
            refined.parameter_sets,
            refined.replicates,
            refined.first_replicate,
            refined.first_replicate + refined.replicates - 1,
            refined.output_dir.display()
        );
        if !refined.finished {
            println!("  (cancelled before every refined set was committed: partial)");
        }
        for target in &refined.summary {
            println!(
                "\nbest parameter sets for target `{}` by REFINED loss (± its Monte Carlo \
                 standard error; `sweep`: the set's loss in the sweep, with {} replicates)",
                target.target,
                job.replicates(),
            );
            let sweep_losses = refined.sweep.iter().find(|s| s.target == target.target);
            let sweep_loss = |id: &str| {
                sweep_losses.and_then(|s| s.best.iter().find(|b| b.param_id == id)).map(|b| b.loss)
            };
            print_best_table(&target.best, &names, Some(&sweep_loss));
        }
    }
    let root = report.output_dir.display();
    println!("\nfiles under {root}/:");
    if report.cancelled {
        println!("  manifest.json, commits.log (summary.json is written when the run finishes)");
    } else {
        println!("  manifest.json, summary.json");
    }
    for o in job.model_outputs() {
        println!("  model_outputs/{o}/batch-*.parquet");
    }
    for t in job.targets() {
        println!("  targets/{}/batch-*.parquet", t.name);
    }
    println!("  failures/batch-*.parquet");
    if report.refined.is_some() {
        println!("  refine/: the refine step's output, the same layout (targets/ with loss_se)");
    }
}
