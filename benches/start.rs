//! Start-up cost as a function of the sweep's size: time from process start to the first
//! committed batch, and the process's peak resident memory, for 1K / 1M / 10M-set sweeps from
//! a space (one fresh process per run, so the high-water mark is the run's own).
//!
//! Each run loads a job of the no-op model (10 rows, 1 replicate, batch 10, 6 targets), runs
//! it until its first batch is committed, then stops it hard. "First batch" is 10 sets × 1
//! replicate, so the figure is the time to the first simulations plus one tiny commit.
//!
//! ```sh
//! cargo bench --bench start                   # uniform and latin_hypercube at 1K, 1M, 10M
//! SIMSWEEP_START_REPEAT=5 cargo bench --bench start
//! ```

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{median, peak_rss_kib, write_noop_job};
use simsweep::{CancelToken, ProgressEvent, ProgressObserver, RunOptions};

const SIZES: [u64; 3] = [1_000, 1_000_000, 10_000_000];
const SAMPLERS: [&str; 3] = ["uniform", "latin_hypercube", "grid"];

/// Records when the first batch was committed and stops the run hard.
struct FirstCommit {
    started: Instant,
    at: Mutex<Option<f64>>,
    cancel: CancelToken,
}

impl ProgressObserver for FirstCommit {
    fn on_event(&self, event: &ProgressEvent) {
        if let ProgressEvent::BatchCommitted { .. } = event {
            let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_none() {
                *at = Some(self.started.elapsed().as_secs_f64());
                self.cancel.cancel_now();
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1], args[2].parse().expect("a size"));
        return;
    }
    let repeat: usize =
        std::env::var("SIMSWEEP_START_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let exe = std::env::current_exe().expect("path of the benchmark binary");
    println!(
        "{:<16} {:>11} {:>10} {:>16} {:>13}",
        "sampler", "sets", "load s", "first commit s", "peak RSS MiB"
    );
    for sampler in SAMPLERS {
        for size in SIZES {
            let (mut load, mut first, mut rss) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..repeat {
                let out = Command::new(&exe)
                    .args(["--child", sampler, &size.to_string()])
                    .output()
                    .expect("run the child");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let line = String::from_utf8_lossy(&out.stdout);
                let v: serde_json::Value =
                    serde_json::from_str(line.trim()).expect("the child's JSON line");
                eprintln!("{}", line.trim());
                load.push(v["load_s"].as_f64().unwrap());
                first.push(v["first_commit_s"].as_f64().unwrap());
                rss.push(v["peak_rss_kib"].as_f64().unwrap() / 1024.0);
            }
            println!(
                "{:<16} {:>11} {:>10.3} {:>16.3} {:>13.1}",
                sampler,
                size,
                median(&mut load),
                median(&mut first),
                median(&mut rss)
            );
        }
    }
}

/// One run in this process: prints `{"load_s", "first_commit_s", "peak_rss_kib"}`.
fn child(sampler: &str, size: u64) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let job_file = write_noop_job(dir.path(), size, 1, 10, 10);
    let toml = std::fs::read_to_string(&job_file).expect("read the job");
    let toml = if sampler == "grid" {
        // Two ranges: a grid of ⌊√size⌋² ≈ size sets (1K: 961).
        let per_axis = (size as f64).sqrt().floor() as u64;
        toml.replace("sampler = \"latin_hypercube\"", "sampler = \"grid\"")
            .replace(&format!("count = {size}"), &format!("points_per_axis = {per_axis}"))
    } else {
        toml.replace("sampler = \"latin_hypercube\"", &format!("sampler = \"{sampler}\""))
    };
    std::fs::write(&job_file, toml).expect("write the job");
    let job = simsweep::load_job(&job_file).expect("a valid job");
    let load_s = started.elapsed().as_secs_f64();
    let cancel = CancelToken::new();
    let observer = Arc::new(FirstCommit { started, at: Mutex::new(None), cancel: cancel.clone() });
    let options =
        RunOptions { workers: std::num::NonZeroUsize::new(2).unwrap(), ..RunOptions::default() };
    // Stopped hard after the first commit: an error or a partial report, either is expected.
    let _ = simsweep::run(&job, &options, observer.clone(), cancel);
    let first = observer.at.lock().unwrap().expect("a batch was committed");
    println!(
        "{}",
        serde_json::json!({
            "sampler": sampler,
            "sets": job.sweep().len(),
            "load_s": load_s,
            "first_commit_s": first,
            "peak_rss_kib": peak_rss_kib(),
        })
    );
}
