//! The `simsweep` binary: bad input is refused with exit code 2, a clear message and nothing
//! written; a good job runs and prints its table.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `simsweep run job.toml` on a job with `toml` as its text; asserts exit code 2, that
/// stderr contains every needle, and that no output directory was created.
fn refused(toml: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("job.toml"), toml).unwrap();
    let before = tree(dir.path());
    for cmd in ["run", "validate"] {
        let out = simsweep(&[cmd, "job.toml"], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: exit code; stderr:\n{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{cmd}: stderr lacks {needle:?}:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(tree(dir.path()), before, "{cmd} wrote files");
    }
}

fn with(from: &str, to: &str) -> String {
    let toml = SmallJob::default().toml();
    assert!(toml.contains(from), "test setup: {from:?} not in the job");
    toml.replacen(from, to, 1)
}

#[test]
fn toml_syntax_error_names_file_line_column() {
    refused(&with("replicates = 3", "replicates = = 3"), &["job.toml:2:"]);
}

#[test]
fn unknown_field_names_line_and_field() {
    refused(&with("seed = 42", "seed = 42\nreplicats = 4"), &["job.toml:4:", "replicats"]);
}

#[test]
fn missing_data_file_is_named() {
    refused(&with("data = \"observed.csv\"", "data = \"nowhere.csv\""), &["nowhere.csv"]);
}

#[test]
fn missing_column_is_named() {
    refused(&with("data_column = \"cases\"", "data_column = \"kases\""), &["kases", "cases"]);
}

#[test]
fn non_numeric_value_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let job = SmallJob::default();
    job.write(dir.path());
    fs::write(dir.path().join("observed.csv"), "day,cases\n2,8\n4,lots\n").unwrap();
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("observed.csv:3"), "{stderr}");
    assert!(stderr.contains("cases"), "{stderr}");
    assert!(!dir.path().join("output").exists());
}

#[test]
fn inverted_range_is_refused() {
    refused(&with("min = 0.3, max = 1.5", "min = 1.5, max = 0.3"), &["parameters.space.beta"]);
}

#[test]
fn empty_range_is_refused() {
    refused(&with("min = 0.3, max = 1.5", "min = 0.3, max = 0.3"), &["parameters.space.beta"]);
}

#[test]
fn zero_replicates_is_refused() {
    refused(&with("replicates = 3", "replicates = 0"), &["replicates"]);
}

#[test]
fn zero_batch_size_in_file_is_refused() {
    refused(&with("seed = 42", "seed = 42\nbatch_size = 0"), &["batch_size"]);
}

#[test]
fn zero_batch_size_flag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml", "--batch-size", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch-size"));
    assert!(!dir.path().join("output").exists());
}

/// Writes the small job with its `[parameters]` taken from the file `params.csv` holding `csv`.
fn job_with_parameter_file(dir: &Path, csv: &str) {
    SmallJob::default().write(dir);
    fs::write(dir.join("params.csv"), csv).unwrap();
    let toml = SmallJob::default().toml();
    let start = toml.find("[parameters]").unwrap();
    let end = toml.find("[model]").unwrap();
    let toml = format!("{}[parameters]\nfile = \"params.csv\"\n\n{}", &toml[..start], &toml[end..]);
    fs::write(dir.join("job.toml"), toml).unwrap();
}

#[test]
fn nan_parameter_in_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    job_with_parameter_file(dir.path(), "beta,gamma\n0.5,0.2\nNaN,0.3\n");
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("params.csv:3"), "{stderr}");
    assert!(!dir.path().join("output").exists());
}

#[test]
fn duplicate_parameter_sets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    job_with_parameter_file(dir.path(), "beta,gamma\n0.5,0.2\n0.7,0.3\n0.5,0.2\n");
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("params.csv"), "{stderr}");
    assert!(stderr.contains('2') && stderr.contains('4'), "names both lines: {stderr}");
    assert!(!dir.path().join("output").exists());
}

#[test]
fn output_of_another_job_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let before: Vec<(String, Vec<u8>)> = tree(&dir.path().join("output"))
        .into_iter()
        .map(|f| {
            let bytes = fs::read(dir.path().join("output").join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    fs::write(dir.path().join("job.toml"), with("replicates = 3", "replicates = 4")).unwrap();
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("output"), "{stderr}");
    let after: Vec<(String, Vec<u8>)> = tree(&dir.path().join("output"))
        .into_iter()
        .map(|f| {
            let bytes = fs::read(dir.path().join("output").join(&f)).unwrap();
            (f, bytes)
        })
        .collect();
    assert_eq!(before, after, "the other job's files were changed");
}

#[test]
fn run_prints_best_table_and_file_locations() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml", "--batch-size", "5", "--workers", "2"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("69 simulations in 5 batches"), "{stdout}");
    assert!(stdout.contains("best parameter sets for target `prevalence`"), "{stdout}");
    assert!(stdout.contains("best parameter sets for target `incidence`"), "{stdout}");
    assert!(stdout.contains("targets/prevalence/batch-*.parquet"), "{stdout}");
    let files = batch_files(&dir.path().join("output/targets/prevalence"));
    assert_eq!(
        files,
        [
            "batch-00000.parquet",
            "batch-00001.parquet",
            "batch-00002.parquet",
            "batch-00003.parquet",
            "batch-00004.parquet"
        ]
    );
    // A second run finds everything committed and changes nothing.
    let out = simsweep(&["run", "job.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(5 resumed)"));
}

#[test]
fn validate_reports_the_sweep_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("23 parameter set(s) × 3 replicates = 69 simulations"), "{stdout}");
    assert!(!dir.path().join("output").exists());
}

#[test]
fn batch_size_precedence_is_flag_then_env_then_file_then_default() {
    let manifest_batch_size = |dir: &Path| -> u64 {
        let text = fs::read(dir.join("output/manifest.json")).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
        m["batch_size"].as_u64().unwrap()
    };
    let case = |file: Option<u32>, env: Option<&str>, flag: Option<&str>| -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut job = SmallJob::default();
        if let Some(b) = file {
            job.extra_top = format!("batch_size = {b}");
        }
        job.write(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_simsweep"));
        cmd.args(["run", "job.toml"]).current_dir(dir.path()).env_remove("SIMSWEEP_BATCH_SIZE");
        if let Some(e) = env {
            cmd.env("SIMSWEEP_BATCH_SIZE", e);
        }
        if let Some(f) = flag {
            cmd.args(["--batch-size", f]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        manifest_batch_size(dir.path())
    };
    assert_eq!(case(None, None, None), 200);
    assert_eq!(case(Some(9), None, None), 9);
    assert_eq!(case(Some(9), Some("4"), None), 4);
    assert_eq!(case(Some(9), Some("4"), Some("6")), 6);
}

#[test]
fn observation_outside_the_model_days_is_refused() {
    // The small job's model reports days 0..=14; day 16 can never be matched.
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("observed.csv"), "day,cases\n2,8\n4,15\n16,30\n").unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("observed.csv:4: column `day`") && stderr.contains("0..=14"),
        "{stderr}"
    );
}

#[test]
fn range_outside_the_model_domain_is_refused() {
    refused(&with("min = 0.3, max = 1.5", "min = -0.5, max = 1.5"), &["parameters.space", "beta"]);
}

#[test]
fn absurd_days_is_refused_not_a_crash() {
    refused(&with("days = 14", "days = 100000000"), &["model.days"]);
}

#[test]
fn a_directory_as_job_file_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = simsweep(&["validate", "."], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a directory") && !stderr.contains("committed batches"), "{stderr}");
}

#[test]
fn a_bare_toml_date_is_accepted_as_origin() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("job.toml"), with("origin = \"2020-03-01\"", "origin = 2020-03-01"))
        .unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_checks_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("output: new"));
    assert_eq!(simsweep(&["run", "job.toml"], dir.path()).status.code(), Some(0));
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("output: finished"));
    fs::write(dir.path().join("job.toml"), with("replicates = 3", "replicates = 4")).unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another job"), "{stderr}");
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    fs::write(dir.path().join("afile"), "x").unwrap();
    fs::write(dir.path().join("job.toml"), with("seed = 42", "seed = 42\noutput = \"afile\""))
        .unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a file"));
}

#[test]
fn validate_says_when_another_process_holds_the_output() {
    use simsweep::engine::output::{OutputLayout, OutputLock};
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::create_dir_all(dir.path().join("output")).unwrap();
    let mut lock = OutputLock::acquire(&OutputLayout::new(dir.path().join("output"))).unwrap();
    lock.record_pid().unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "nothing printed as ok");
}
