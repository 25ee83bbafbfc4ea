//! Scale benchmark: whole jobs, end to end, one process per run.
//!
//! For each job it reports the wall time of `simsweep::run`, simulations per second, the
//! process's peak resident memory (VmHWM: a fresh process per run, so the high-water mark is
//! the run's own), the peaks of the in-flight counters and the workers' idle fraction (time not
//! spent in the model ÷ workers × wall). Each job runs `SIMSWEEP_SCALE_REPEAT` times (default
//! 3) and the medians are printed.
//!
//! ```sh
//! cargo bench --bench scale                 # every job
//! cargo bench --bench scale -- overhead     # jobs whose name contains "overhead"
//! ```
//!
//! Jobs: `overhead-{1k,10k,100k}` (no-op model, 100 rows per replicate, 10 replicates,
//! 6 targets, batch 200); `batch-{50,1000}` (the 10k job at other batch sizes; batch 200 is
//! `overhead-10k`); `flu` (the flu example's sweep without its refine step, 200,000 `sir_bed` simulations), with the model's
//! single-thread time per simulation measured in the same process, and the bound
//! `time per simulation × simulations ÷ workers`; `flu-losses-only` (the same writing no model
//! outputs: the dataflow's own cost without the Parquet volume); `overhead-10k-open3` and `flu-open3`, the
//! same at `max_open_batches = 3` (the default is 2). The repetitions are the outer loop, so
//! jobs compared side by side run under the same machine load.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{median, peak_rss_kib, write_noop_job};
use serde_json::json;
use simsweep::engine::progress::InFlight;
use simsweep::{CancelToken, ProgressEvent, ProgressObserver, RunOptions};

struct Job {
    name: &'static str,
    /// `noop COUNT BATCH` or `flu`, then the `max_open_batches` (`-` for the default).
    args: &'static [&'static str],
}

const JOBS: &[Job] = &[
    Job { name: "overhead-1k", args: &["noop", "1000", "200", "-"] },
    Job { name: "overhead-10k", args: &["noop", "10000", "200", "-"] },
    Job { name: "overhead-100k", args: &["noop", "100000", "200", "-"] },
    Job { name: "batch-50", args: &["noop", "10000", "50", "-"] },
    Job { name: "batch-1000", args: &["noop", "10000", "1000", "-"] },
    Job { name: "flu", args: &["flu", "-"] },
    // The flu example writing no model outputs (targets and failures only): the dataflow's own
    // cost without the Parquet volume of 12,000,000 model-output rows.
    Job { name: "flu-losses-only", args: &["flu-losses-only", "-"] },
    // The same at max_open_batches = 3, side by side with the default (2).
    Job { name: "overhead-10k-open3", args: &["noop", "10000", "200", "3"] },
    Job { name: "flu-open3", args: &["flu", "3"] },
];

/// Keeps the last in-flight report of a run.
#[derive(Default)]
struct LastInFlight(Mutex<Option<(InFlight, f64, usize)>>);

impl ProgressObserver for LastInFlight {
    fn on_event(&self, event: &ProgressEvent) {
        if let ProgressEvent::InFlight { peaks, worker_busy, workers, .. } = event {
            let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *last = Some((*peaks, worker_busy.as_secs_f64(), *workers));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let repeat: usize =
        std::env::var("SIMSWEEP_SCALE_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let exe = std::env::current_exe().expect("path of the benchmark binary");
    println!(
        "{:<14} {:>9} {:>8} {:>10} {:>9} {:>7}  {:<36}  notes",
        "job",
        "sims",
        "wall s",
        "sims/s",
        "RSS MiB",
        "idle %",
        "peaks queued/running/awaiting/rows"
    );
    let jobs: Vec<&Job> = JOBS
        .iter()
        .filter(|j| filter.is_empty() || filter.iter().any(|f| j.name.contains(f.as_str())))
        .collect();
    // Repetitions outermost, so the jobs compared side by side see the same machine load.
    let mut all_runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); jobs.len()];
    for _ in 0..repeat {
        for (job, runs) in jobs.iter().zip(all_runs.iter_mut()) {
            let dir = tempfile::tempdir().expect("temporary directory");
            let out = Command::new(&exe)
                .arg("--child")
                .args(job.args)
                .arg(dir.path())
                .output()
                .expect("run the benchmark child");
            if !out.status.success() {
                eprintln!("{}: child failed: {}", job.name, String::from_utf8_lossy(&out.stderr));
                continue;
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let value: serde_json::Value =
                serde_json::from_str(line.trim()).expect("child's JSON line");
            eprintln!("{}: {}", job.name, value);
            runs.push(value);
        }
    }
    for (job, runs) in jobs.iter().zip(all_runs) {
        if runs.is_empty() {
            continue;
        }
        let med = |key: &str| {
            median(&mut runs.iter().filter_map(|r| r[key].as_f64()).collect::<Vec<_>>())
        };
        let peaks = &runs[runs.len() - 1]["peaks"];
        let peak = |k: &str| peaks[k].as_u64().unwrap_or(0);
        let mut notes = format!("n={}", runs.len());
        if job.args[0].starts_with("flu") {
            let per_sim = med("model_us_per_sim");
            let bound = per_sim * 1e-6 * med("simulations") / med("workers");
            notes.push_str(&format!(
                ", model {per_sim:.1} µs/sim single-thread, bound {bound:.2} s, wall/bound {:.2}",
                med("wall_s") / bound
            ));
        }
        println!(
            "{:<14} {:>9} {:>8.2} {:>10.0} {:>9.1} {:>7.1}  {:<36}  {notes}",
            job.name,
            med("simulations"),
            med("wall_s"),
            med("sims_per_s"),
            med("peak_rss_kib") / 1024.0,
            100.0 * med("worker_idle"),
            format!(
                "{}/{}/{}/{}",
                peak("tasks_queued"),
                peak("tasks_running"),
                peak("replicates_awaiting_aggregation"),
                peak("rows_buffered")
            ),
        );
    }
}

/// `text` (a job file) without its `[refine]` table: the lines from `[refine]` to the next
/// table header.
fn without_refine(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.lines() {
        let header = line.trim_start().starts_with('[');
        if header {
            skipping = line.trim() == "[refine]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Runs one job in this (fresh) process and prints one JSON line.
fn child(args: &[String]) {
    // As the `simsweep` command does first thing.
    simsweep::engine::memory::tune_process_allocator();
    let dir = Path::new(args.last().expect("directory argument"));
    let (job_path, model_time) = match args[0].as_str() {
        "noop" => {
            let count = args[1].parse().expect("count");
            let batch: usize = args[2].parse().expect("batch size");
            (write_noop_job(dir, count, 10, 100, batch), None)
        }
        "flu" | "flu-losses-only" => {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flu-boarding-school/job.toml");
            (path, Some(()))
        }
        other => panic!("unknown job kind {other}"),
    };
    let mut job = if args[0].starts_with("flu") {
        // The example's sweep without its refine step (which `run` would add to the wall time,
        // and whose counters would replace the sweep's); `flu-losses-only` also writes no model
        // outputs (`model_outputs = []`). Parsed from the text: a job's fields cannot be changed
        // after validation.
        let text = without_refine(&std::fs::read_to_string(&job_path).expect("read the job"));
        let prefix = if args[0] == "flu-losses-only" { "model_outputs = []\n" } else { "" };
        simsweep::parse_job(&format!("{prefix}{text}"), &job_path).expect("parse the job")
    } else {
        simsweep::load_job(&job_path).expect("load the job")
    };
    job.set_output_dir(dir.join("output"));
    let model_us_per_sim = model_time.map(|()| model_time_per_sim(&job));
    let mut options = RunOptions::default();
    if let Some(b) = job.batch_size() {
        options.batch_size = b;
    }
    if let Some(open) = args[args.len() - 2].parse().ok().and_then(std::num::NonZeroUsize::new) {
        options.max_open_batches = open;
    }
    let observer = Arc::new(LastInFlight::default());
    let start = Instant::now();
    let report = simsweep::run(&job, &options, observer.clone(), CancelToken::new()).expect("run");
    let wall = start.elapsed().as_secs_f64();
    let sims = report.progress.simulations_committed as f64;
    let (peaks, busy, workers) = observer.0.lock().unwrap().unwrap_or_default();
    let peaks: serde_json::Map<String, serde_json::Value> =
        peaks.named().iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let line = json!({
        "simulations": sims,
        "wall_s": wall,
        "sims_per_s": sims / wall,
        "peak_rss_kib": peak_rss_kib(),
        "peaks": peaks,
        "worker_busy_s": busy,
        "workers": workers,
        "worker_idle": 1.0 - busy / (wall * workers.max(1) as f64),
        "model_us_per_sim": model_us_per_sim,
    });
    println!("{line}");
}

/// Single-thread time per simulation of the job's model, in µs: the first 500 parameter sets
/// × their replicates, median of 3 rounds.
fn model_time_per_sim(job: &simsweep::Job) -> f64 {
    let points: Vec<_> = (0..job.sweep().len().min(500))
        .map(|i| (job.sweep().param_id(i), job.sweep().params(i)))
        .collect();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u32;
        for (id, params) in &points {
            for r in 0..job.replicates() {
                let seed = simsweep::engine::identity::replicate_seed(id, r);
                std::hint::black_box(job.simulator().simulate(params, seed).expect("simulate"));
                n += 1;
            }
        }
        rounds.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    median(&mut rounds)
}
