//! Test helpers: a small job written to a temporary directory, and reading a dataset back.
#![allow(dead_code)]

pub mod browser;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::compute::concat_batches;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Observed prevalence, numeric time column (days), for the small SIR job.
pub const OBSERVED_CSV: &str = "day,cases\n2,8\n4,15\n6,30\n8,52\n10,80\n12,96\n14,90\n";

/// Observed incidence with dates; origin 2020-03-01 is model day 0.
pub const OBSERVED_DATED_CSV: &str =
    "date,new\n2020-03-03,3\n2020-03-05,6\n2020-03-07,9\n2020-03-09,14\n2020-03-11,15\n";

/// Builder of a small SIR job in a temporary directory.
pub struct SmallJob {
    pub count: u32,
    pub replicates: u32,
    pub sampler: &'static str,
    pub extra_top: String,
    pub targets: String,
}

impl Default for SmallJob {
    fn default() -> Self {
        SmallJob {
            count: 23,
            replicates: 3,
            sampler: "latin_hypercube",
            extra_top: String::new(),
            targets: format!("{}\n{}", TARGET_PREVALENCE, TARGET_INCIDENCE),
        }
    }
}

pub const TARGET_PREVALENCE: &str = r#"
[[targets]]
name = "prevalence"
output = "prevalence"
column = "infected"
data = "observed.csv"
data_column = "cases"
data_time_column = "day"
aggregation = "likelihood"
loss = "negative_binomial"
dispersion = 5.0
"#;

pub const TARGET_INCIDENCE: &str = r#"
[[targets]]
name = "incidence"
output = "incidence"
column = "new_infections"
data = "observed_dated.csv"
data_column = "new"
data_time_column = "date"
origin = "2020-03-01"
aggregation = "annealed"
loss = "mse"
"#;

impl SmallJob {
    pub fn toml(&self) -> String {
        format!(
            r#"name = "small"
replicates = {replicates}
seed = 42
{extra_top}
[parameters]
sampler = "{sampler}"
count = {count}

[parameters.space]
beta = {{ min = 0.3, max = 1.5 }}
gamma = {{ min = 0.1, max = 0.5, scale = "log" }}

[model]
name = "sir"
population = 500
initial_infected = 3
days = 14
steps_per_day = 4
{targets}"#,
            replicates = self.replicates,
            extra_top = self.extra_top,
            sampler = self.sampler,
            count = self.count,
            targets = self.targets,
        )
    }

    /// Writes `job.toml` and the data files into `dir`; returns the job path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        fs::write(dir.join("observed.csv"), OBSERVED_CSV).unwrap();
        fs::write(dir.join("observed_dated.csv"), OBSERVED_DATED_CSV).unwrap();
        let job = dir.join("job.toml");
        fs::write(&job, self.toml()).unwrap();
        job
    }
}

/// All rows of a dataset folder (`batch-*.parquet` in name order), concatenated.
pub fn read_dataset(dir: &Path) -> RecordBatch {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {}", dir.display());
    let mut batches = Vec::new();
    let mut schema = None;
    for f in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        schema.get_or_insert_with(|| reader.schema());
        for b in reader {
            batches.push(b.unwrap());
        }
    }
    concat_batches(&schema.unwrap(), &batches).unwrap()
}

/// Names of the batch files in a dataset folder, sorted.
pub fn batch_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file below `dir`, relative, sorted (to check that nothing was written).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs the built `simsweep` binary with `args` in `dir`, without the environment variables
/// that would change its behaviour (`SIMSWEEP_BATCH_SIZE`, `RUST_LOG`).
pub fn simsweep(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(args)
        .current_dir(dir)
        .env_remove("SIMSWEEP_BATCH_SIZE")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

/// `tests/fault_model.py`, the model that misbehaves on purpose.
pub fn fault_model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fault_model.py")
}

/// Writes `params.csv` (one parameter set per `(mode, x)` row) and `job.toml` running
/// `tests/fault_model.py` on them into `dir`, with `state` as its `FAULT_STATE_DIR`, one
/// replicate each, no retries and no timeout; returns the job file.
pub fn write_fault_job(dir: &Path, state: &Path, rows: &[(&str, f64)]) -> PathBuf {
    write_fault_job_with(dir, state, rows, 1, "max_attempts = 1", "")
}

/// As [`write_fault_job`], with `replicates`, more `[model]` settings (`model_extra`, TOML
/// lines) and more of the job after the model section (`tail`, e.g. targets).
pub fn write_fault_job_with(
    dir: &Path,
    state: &Path,
    rows: &[(&str, f64)],
    replicates: u32,
    model_extra: &str,
    tail: &str,
) -> PathBuf {
    let mut csv = String::from("mode,x\n");
    for (mode, x) in rows {
        csv.push_str(&format!("{mode},{x:.1}\n"));
    }
    fs::write(dir.join("params.csv"), csv).unwrap();
    let job = format!(
        r#"name = "faults"
replicates = {replicates}
output = "output"

[parameters]
file = "params.csv"

[model]
command = ["python3", "{model}"]
env = {{ FAULT_STATE_DIR = "{state}" }}
{model_extra}
{tail}"#,
        model = fault_model_path().display(),
        state = state.display(),
    );
    let path = dir.join("job.toml");
    fs::write(&path, job).unwrap();
    path
}

/// Log lines of every thread at `level` and above, captured by one global subscriber per test
/// binary (the first call's level wins: call it with one level from every test of a binary,
/// before any run makes a span).
pub fn captured_logs(level: tracing::Level) -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || Sink(buffer))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}
