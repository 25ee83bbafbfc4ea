//! The `simsweep` command: parses arguments, installs logging, loads the job and calls
//! [`simsweep::run`]. Everything else lives in the library.
//!
//! Exit codes: 0 done; 2 bad input (spec, data, output directory, arguments), nothing written;
//! 3 a failure while running (I/O, a stopped actor), committed batches kept and resumable;
//! 130 stopped by SIGINT/SIGTERM, resumable.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use simsweep::{CancelToken, Job, ProgressEvent, ProgressObserver, Report, RunOptions};

/// Exit code for bad input.
const EXIT_INPUT: u8 = 2;
/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 3;
/// Exit code after SIGINT/SIGTERM (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
/// Rows of the best-parameter-set table per target.
const BEST_SHOWN: usize = 5;

#[derive(Parser)]
#[command(name = "simsweep", version, about = "Bounded, resumable sweeps of stochastic simulations, written to Parquet batch by batch")]
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
        /// Parameter sets per batch [precedence: flag > env SIMSWEEP_BATCH_SIZE > job file > 200].
        #[arg(long, env = "SIMSWEEP_BATCH_SIZE")]
        batch_size: Option<NonZeroUsize>,
        /// Simulation worker threads (default: one per core).
        #[arg(long)]
        workers: Option<NonZeroUsize>,
        /// Show debug logs and per-batch lines.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Check a job spec and its data files without running anything.
    Validate {
        /// The job spec (TOML).
        job: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = matches!(cli.command, Command::Run { verbose: true, .. });
    let default_level = if verbose { "simsweep=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    match cli.command {
        Command::Validate { job } => match simsweep::load_job(&job) {
            Ok(job) => {
                println!(
                    "{}: ok — {} parameter sets × {} replicates = {} simulations, model {}, {} target(s), output {}",
                    job.spec_file.display(),
                    job.sweep.points.len(),
                    job.replicates,
                    job.simulations(),
                    job.simulator.name(),
                    job.targets.len(),
                    job.output_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&simsweep::Error::Engine(e)),
        },
        Command::Run { job, out, batch_size, workers, verbose } => {
            let job = match simsweep::load_job(&job) {
                Ok(job) => job,
                Err(e) => return fail(&simsweep::Error::Engine(e)),
            };
            run(job, out, batch_size, workers, verbose)
        }
    }
}

fn run(
    mut job: Job,
    out: Option<PathBuf>,
    batch_size: Option<NonZeroUsize>,
    workers: Option<NonZeroUsize>,
    verbose: bool,
) -> ExitCode {
    if let Some(out) = out {
        job.output_dir = out;
    }
    let mut options = RunOptions::default();
    if let Some(b) = batch_size.or(job.batch_size) {
        options.batch_size = b;
    }
    if let Some(w) = workers {
        options.workers = w;
    }

    let cancel = CancelToken::new();
    let signals = Arc::new(AtomicU32::new(0));
    {
        let cancel = cancel.clone();
        let signals = signals.clone();
        let installed = ctrlc::set_handler(move || {
            if signals.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("simsweep: stopping after the batches in flight (again to stop at once; the run stays resumable)");
                cancel.cancel();
            } else {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        });
        if let Err(error) = installed {
            tracing::warn!(%error, "no SIGINT handler; Ctrl-C kills at once (still resumable)");
        }
    }

    let observer = Arc::new(Bar::new(verbose));
    let result = simsweep::run(&job, &options, observer.clone(), cancel);
    observer.finish();
    match result {
        Ok(report) => {
            print_report(&job, &report);
            if report.cancelled {
                eprintln!("simsweep: stopped; run the same command again to resume");
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &simsweep::Error) -> ExitCode {
    eprintln!("error: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    if error.is_input_error() {
        ExitCode::from(EXIT_INPUT)
    } else {
        eprintln!("committed batches are kept; fix the cause and run the same command to resume");
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// Progress display: a bar on a terminal, plain lines (at most one a second) otherwise.
struct Bar {
    bar: Option<ProgressBar>,
    verbose: bool,
    last_line: Mutex<Option<Instant>>,
}

impl Bar {
    fn new(verbose: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} simulations  {msg}  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Bar { bar, verbose, last_line: Mutex::new(None) }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ProgressObserver for Bar {
    fn on_event(&self, event: &ProgressEvent) {
        let (p, started) = match event {
            ProgressEvent::Started { progress, .. } => (progress, true),
            ProgressEvent::BatchCommitted { progress, .. } => (progress, false),
            ProgressEvent::InFlight { now, peaks, worker_busy, workers, elapsed } if self.verbose => {
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
                    None => eprintln!("{line}"),
                }
                return;
            }
            _ => return,
        };
        let msg = format!("batches {}/{}", p.batches_committed, p.batches_planned);
        if let Some(bar) = &self.bar {
            bar.set_length(p.simulations_planned);
            if started {
                bar.reset();
            }
            bar.set_position(p.simulations_committed);
            bar.set_message(msg);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let end = p.batches_committed == p.batches_planned;
        if self.verbose || due || end || started {
            eprintln!(
                "{msg}, simulations {}/{}, failed {}",
                p.simulations_committed, p.simulations_planned, p.failed
            );
            *last = Some(Instant::now());
        }
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
    let names: Vec<&str> = job.sweep.columns.iter().map(|(n, _)| n.as_str()).collect();
    for target in &report.summary {
        println!("\nbest parameter sets for target `{}` (loss: smaller is better)", target.target);
        let mut header = format!("{:>4}  {:>14}", "rank", "loss");
        for n in &names {
            header.push_str(&format!("  {n:>12}"));
        }
        header.push_str("  param_id");
        println!("{header}");
        for (rank, best) in target.best.iter().take(BEST_SHOWN).enumerate() {
            let mut line = format!("{:>4}  {:>14.6}", rank + 1, best.loss);
            for n in &names {
                let v = best.parameters.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).unwrap_or("");
                let v = v.parse::<f64>().map(|x| format!("{x:.6}")).unwrap_or_else(|_| v.to_string());
                line.push_str(&format!("  {v:>12}"));
            }
            line.push_str(&format!("  {}", &best.param_id[..12.min(best.param_id.len())]));
            println!("{line}");
        }
    }
    let root = report.output_dir.display();
    println!("\nfiles under {root}/:");
    println!("  manifest.json, summary.json");
    for o in job.simulator.outputs() {
        println!("  model_outputs/{}/batch-*.parquet", o.name);
    }
    for t in &job.targets {
        println!("  targets/{}/batch-*.parquet", t.name);
    }
    println!("  failures/batch-*.parquet");
}
