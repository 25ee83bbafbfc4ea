//! Helpers shared by the benchmarks: the no-op job (model `noop`, 6 targets) written to a
//! directory, and reading the process's peak resident memory.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The six targets of the overhead job: every loss with every aggregation it allows.
pub const NOOP_TARGETS: [(&str, &str, &str); 6] = [
    ("mse_mean_signal", "mse", "mean_signal"),
    ("mse_annealed", "mse", "annealed"),
    ("poisson_annealed", "poisson", "annealed"),
    ("poisson_likelihood", "poisson", "likelihood"),
    ("nb_likelihood", "negative_binomial", "likelihood"),
    ("nb_mean_signal", "negative_binomial", "mean_signal"),
];

/// Writes the overhead job to `dir/job.toml` (and its observed data) and returns its path:
/// `count` parameter sets (`a`, `b`, Latin hypercube), `replicates` replicates of the `noop`
/// model returning `rows` rows, 6 targets observed at every 5th day, output `dir/output`.
pub fn write_noop_job(
    dir: &Path,
    count: u64,
    replicates: u32,
    rows: u32,
    batch_size: usize,
) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the job directory");
    let mut csv = String::from("day,value\n");
    for day in (0..rows).step_by(5) {
        let _ = writeln!(csv, "{day},{}", 4 + day / 20);
    }
    std::fs::write(dir.join("observed.csv"), csv).expect("write observed.csv");
    let mut toml = format!(
        "name = \"overhead\"\nreplicates = {replicates}\nseed = 1\nbatch_size = {batch_size}\n\
         output = \"output\"\n\n[parameters]\nsampler = \"latin_hypercube\"\ncount = {count}\n\n\
         [parameters.space]\na = {{ min = 1.0, max = 5.0 }}\nb = {{ min = 0.0, max = 10.0 }}\n\n\
         [model]\nname = \"noop\"\nrows = {rows}\n"
    );
    for (name, loss, aggregation) in NOOP_TARGETS {
        let _ = write!(
            toml,
            "\n[[targets]]\nname = \"{name}\"\noutput = \"signal\"\ncolumn = \"value\"\n\
             data = \"observed.csv\"\ndata_column = \"value\"\ndata_time_column = \"day\"\n\
             aggregation = \"{aggregation}\"\nloss = \"{loss}\"\n"
        );
        if loss == "negative_binomial" {
            toml.push_str("dispersion = 10.0\n");
        }
    }
    let path = dir.join("job.toml");
    std::fs::write(&path, toml).expect("write job.toml");
    path
}

/// The process's peak resident set size in KiB (`VmHWM` of `/proc/self/status`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Median of `values` (sorted in place); `NaN` when empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
