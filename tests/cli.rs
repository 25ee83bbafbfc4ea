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
fn errors_inside_model_point_at_the_key_not_the_header() {
    // 1-based line of the job's first line starting with `start` (inside `[model]`).
    let line_of = |start: &str| {
        SmallJob::default().toml().lines().position(|l| l.starts_with(start)).expect("in the job")
            + 1
    };
    let at = |line: usize| format!("job.toml:{line}:1:");
    refused(
        &with("population = 500", "population = \"500\""),
        &[&at(line_of("population")), "[model] key `population`", "expected u64"],
    );
    refused(
        &with("days = 14", "dayz = 14"),
        &[&at(line_of("days")), "[model] key `dayz`", "unknown field `dayz`"],
    );
    refused(
        &with("name = \"sir\"", "name = \"sirr\""),
        &[&at(line_of("name = \"sir\"")), "[model] key `name`", "unknown variant `sirr`"],
    );
    refused(
        &with("steps_per_day = 4", "steps_per_day = 4\nmax_attempts = \"x\""),
        &[&at(line_of("steps_per_day") + 1), "[model] key `max_attempts`", "expected u32"],
    );
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
    // Names both lines (a bare digit check would be met by the hex param_id in the message).
    assert!(stderr.contains("params.csv:4:"), "names the later line: {stderr}");
    assert!(stderr.contains("same parameter values as line 2"), "names the earlier: {stderr}");
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

    // `--out` checks another directory, as `run --out` would use it.
    let run = simsweep(&["run", "job.toml", "--out", "elsewhere"], dir.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = simsweep(&["validate", "job.toml", "--out", "elsewhere"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("output: finished"), "{stdout}");
    let out = simsweep(&["validate", "job.toml"], dir.path());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"), "the job's own output");
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

/// Runs `simsweep args` in `dir` with the environment variable `SIMSWEEP_BATCH_SIZE` set to
/// `batch_size_env`; returns the exit code and stderr.
fn simsweep_with_env(args: &[&str], dir: &Path, batch_size_env: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(args)
        .current_dir(dir)
        .env("SIMSWEEP_BATCH_SIZE", batch_size_env)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `simsweep args` in `dir`; asserts the exit code, that stderr holds every needle and
/// no panic, and that no file under `dir` was created, removed or changed.
fn fails_without_writing(dir: &Path, args: &[&str], code: i32, needles: &[&str]) -> String {
    let contents = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        tree(dir).into_iter().map(|f| (f.clone(), fs::read(dir.join(&f)).unwrap())).collect()
    };
    let dirs = |dir: &Path| -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                    walk(base, &p, out);
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    };
    let (before, dirs_before) = (contents(dir), dirs(dir));
    let out = simsweep(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: exit code; stderr:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{args:?}: stderr lacks {needle:?}:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(contents(dir), before, "{args:?} changed files");
    assert_eq!(dirs(dir), dirs_before, "{args:?} created or removed folders");
    stderr
}

#[test]
fn output_under_a_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::create_dir(dir.path().join("t")).unwrap();
    fs::write(dir.path().join("t/afile"), "x").unwrap();
    let needles = ["`t/afile` is a file, not a directory", "choose another --out"];
    for out in ["t/afile/sub", "t/afile/sub/deeper", "t/afile"] {
        let stderr =
            fails_without_writing(dir.path(), &["run", "job.toml", "--out", out], 2, &needles);
        assert!(!stderr.contains("resume"), "{stderr}");
    }
    fs::write(
        dir.path().join("job.toml"),
        with("seed = 42", "seed = 42\noutput = \"t/afile/sub\""),
    )
    .unwrap();
    for cmd in ["run", "validate"] {
        fails_without_writing(dir.path(), &[cmd, "job.toml"], 2, &needles);
    }
}

#[test]
fn status_of_a_file_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::create_dir(dir.path().join("t")).unwrap();
    fs::write(dir.path().join("t/afile"), "x").unwrap();
    for (arg, named) in
        [("t/afile", "t/afile"), ("job.toml", "job.toml"), ("t/afile/sub", "t/afile")]
    {
        fails_without_writing(
            dir.path(),
            &["status", arg],
            2,
            &[&format!("`{named}` is a file, not an output directory"), "--out"],
        );
    }
}

#[test]
fn data_file_that_is_a_directory_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::create_dir(dir.path().join("d_dir.csv")).unwrap();
    fs::write(dir.path().join("job.toml"), with("data = \"observed.csv\"", "data = \"d_dir.csv\""))
        .unwrap();
    for cmd in ["run", "validate"] {
        fails_without_writing(
            dir.path(),
            &[cmd, "job.toml"],
            2,
            &["job.toml", "targets[0].data", "d_dir.csv", "is a directory, not a data file"],
        );
    }
}

#[test]
fn parameter_file_that_is_a_directory_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    job_with_parameter_file(dir.path(), "beta,gamma\n0.5,0.2\n");
    fs::remove_file(dir.path().join("params.csv")).unwrap();
    fs::create_dir(dir.path().join("params.csv")).unwrap();
    for cmd in ["run", "validate"] {
        fails_without_writing(
            dir.path(),
            &[cmd, "job.toml"],
            2,
            &["job.toml", "parameters.file", "params.csv", "is a directory, not a parameter file"],
        );
    }
}

#[test]
fn empty_data_and_parameter_files_say_so() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("observed.csv"), "").unwrap();
    for cmd in ["run", "validate"] {
        let stderr = fails_without_writing(
            dir.path(),
            &[cmd, "job.toml"],
            2,
            &["observed.csv", "the file is empty", "header line", "`day`", "`cases`"],
        );
        assert!(!stderr.contains("no such column"), "{stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    job_with_parameter_file(dir.path(), "");
    for cmd in ["run", "validate"] {
        fails_without_writing(
            dir.path(),
            &[cmd, "job.toml"],
            2,
            &["params.csv", "the file is empty", "header line"],
        );
    }
}

#[test]
fn damaged_manifest_says_so_and_restart_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml", "--batch-size", "5"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = dir.path().join("output/manifest.json");
    let text = fs::read(&manifest).unwrap();
    fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let needles = ["manifest.json", "the manifest is damaged", "--restart", "restore it"];
    for args in [&["run", "job.toml"][..], &["validate", "job.toml"], &["status", "output"]] {
        let stderr = fails_without_writing(dir.path(), args, 3, &needles);
        assert!(!stderr.contains("run the same command to resume"), "{stderr}");
    }
    let out = simsweep(&["run", "job.toml", "--restart"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 resumed)"));
}

#[test]
fn damaged_batch_file_says_so_and_restart_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml", "--batch-size", "5"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.path().join("output/targets/prevalence/batch-00003.parquet");
    let needles = ["batch-00003.parquet", "is damaged", "--restart", "restore it"];
    let status_before = simsweep(&["status", "output"], dir.path());
    assert_eq!(status_before.status.code(), Some(0));
    // Overwritten with garbage (found before anything is written), then truncated.
    for damage in [b"garbage".to_vec(), fs::read(&file).unwrap()[..200].to_vec()] {
        fs::write(&file, damage).unwrap();
        let stderr = fails_without_writing(dir.path(), &["run", "job.toml"], 3, &needles);
        assert!(!stderr.contains("run the same command to resume"), "{stderr}");
        // `status` answers from the manifest and commit log alone: it opens no batch file, so
        // it reports the same as before the damage.
        let status = simsweep(&["status", "output"], dir.path());
        assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));
        assert_eq!(status.stdout, status_before.stdout);
    }
    let out = simsweep(&["run", "job.toml", "--restart"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_batch_size_env_is_named_and_empty_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    for value in ["0", "abc", "-3"] {
        let (code, stderr) = simsweep_with_env(&["run", "job.toml"], dir.path(), value);
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert!(stderr.contains("SIMSWEEP_BATCH_SIZE"), "{stderr}");
        assert!(stderr.contains(&format!("`{value}`")), "{stderr}");
        assert!(!stderr.contains("--batch-size <"), "not blamed on the flag: {stderr}");
        assert!(!dir.path().join("output").exists());
    }
    let manifest_batch_size = |dir: &Path| -> u64 {
        let text = fs::read(dir.join("output/manifest.json")).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
        m["batch_size"].as_u64().unwrap()
    };
    // The flag wins over the environment, even a bad value there.
    let (code, stderr) =
        simsweep_with_env(&["run", "job.toml", "--batch-size", "6"], dir.path(), "abc");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(manifest_batch_size(dir.path()), 6);
    // Empty (or blank): unset, so the job file's value applies.
    for value in ["", " "] {
        let dir = tempfile::tempdir().unwrap();
        let job = SmallJob { extra_top: "batch_size = 9".into(), ..SmallJob::default() };
        job.write(dir.path());
        let (code, stderr) = simsweep_with_env(&["run", "job.toml"], dir.path(), value);
        assert_eq!(code, Some(0), "{value:?}: {stderr}");
        assert_eq!(manifest_batch_size(dir.path()), 9);
    }
}

#[test]
fn closed_stdout_ends_quietly_with_141_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    assert!(simsweep(&["run", "job.toml"], dir.path()).status.success());
    // Standard output is a pipe whose reader is gone before the command starts, as in
    // `simsweep status output | head -0`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(["status", "output"])
        .current_dir(dir.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn run_and_validate_refuse_what_the_machine_cannot_hold_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let variants: [(SmallJob, &[&str], &[&str]); 5] = [
        (
            SmallJob { extra_top: "output = \"\"".into(), ..SmallJob::default() },
            &[],
            &["field `output`", "is empty"],
        ),
        (
            SmallJob { replicates: 3_000_000, ..SmallJob::default() },
            &[],
            &["field `replicates`", "at most 100000"],
        ),
        (
            SmallJob {
                targets: format!(
                    "{TARGET_PREVALENCE}{}",
                    TARGET_PREVALENCE.replace("\"prevalence\"\noutput", "\"Prevalence\"\noutput")
                ),
                ..SmallJob::default()
            },
            &[],
            &["targets[1].name", "only in case"],
        ),
        (
            SmallJob {
                targets: TARGET_PREVALENCE
                    .replace("name = \"prevalence\"", &format!("name = \"{}\"", "t".repeat(300))),
                ..SmallJob::default()
            },
            &[],
            &["targets[0].name", "300 bytes", "at most 128"],
        ),
        (SmallJob::default(), &["--workers", "1000"], &["--workers", "at most 512"]),
    ];
    for (job, flags, needles) in variants {
        job.write(dir.path());
        let mut run = vec!["run", "job.toml"];
        run.extend_from_slice(flags);
        fails_without_writing(dir.path(), &run, 2, needles);
        if flags.is_empty() {
            fails_without_writing(dir.path(), &["validate", "job.toml"], 2, needles);
        }
    }
    // A batch past what memory holds: named with the flag and a size that fits.
    SmallJob { replicates: 100_000, ..SmallJob::default() }.write(dir.path());
    let needles = ["--batch-size", "20000000 simulations per batch", "at most 100"];
    fails_without_writing(dir.path(), &["run", "job.toml", "--batch-size", "200"], 2, &needles);
}

#[test]
fn validate_checks_what_run_checks() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    // A bad SIMSWEEP_BATCH_SIZE: run refuses it, so validate does.
    let out = Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(["validate", "job.toml"])
        .current_dir(dir.path())
        .env("SIMSWEEP_BATCH_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIMSWEEP_BATCH_SIZE"));
    // A damaged committed file: run refuses it (exit 3), so validate does.
    let ok = simsweep(&["run", "job.toml", "--batch-size", "5"], dir.path());
    assert_eq!(ok.status.code(), Some(0));
    fs::write(dir.path().join("output/targets/prevalence/batch-00002.parquet"), b"garbage")
        .unwrap();
    let needles = ["batch-00002.parquet", "is damaged"];
    fails_without_writing(dir.path(), &["run", "job.toml"], 3, &needles);
    fails_without_writing(dir.path(), &["validate", "job.toml"], 3, &needles);
    // An output directory that cannot be created: exit 2 naming it, for both.
    let needles = ["/proc/simsweep-out", "cannot be created", "--out"];
    fails_without_writing(
        dir.path(),
        &["run", "job.toml", "--out", "/proc/simsweep-out"],
        2,
        &needles,
    );
}

#[test]
fn validate_counts_a_seed_column_sweep_as_one_simulation_per_row() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("params.csv"), "beta,gamma,seed\n0.5,0.2,1\n0.5,0.2,2\n0.7,0.3,9\n")
        .unwrap();
    let job = SmallJob::default().toml().replace(
        "sampler = \"latin_hypercube\"\ncount = 23\n\n[parameters.space]\nbeta = { min = 0.3, max = 1.5 }\ngamma = { min = 0.1, max = 0.5, scale = \"log\" }",
        "file = \"params.csv\"",
    );
    assert!(job.contains("params.csv"), "{job}");
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("3 parameter set(s), each run once with its row's seed (the file's `seed` column) = 3 simulations"),
        "{stdout}"
    );
}

#[test]
fn a_built_in_model_name_with_a_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = SmallJob::default()
        .toml()
        .replace("name = \"sir\"", "name = \"sir\"\ncommand = [\"python3\", \"model.py\"]");
    SmallJob::default().write(dir.path());
    fs::write(dir.path().join("job.toml"), job).unwrap();
    let needles = ["`name = \"sir\"` names a built-in model but `command` runs an external one"];
    fails_without_writing(dir.path(), &["validate", "job.toml"], 2, &needles);
    fails_without_writing(dir.path(), &["run", "job.toml"], 2, &needles);
}

#[test]
fn closed_pipes_end_the_command_quietly_never_hang_or_panic() {
    // `simsweep run … 2>&1 | head -1`: stdout and stderr closed after the first line. The run
    // ends (141, as a SIGPIPE'd Unix tool), without a panic, and what it committed is kept.
    let dir = tempfile::tempdir().unwrap();
    SmallJob { count: 3000, ..SmallJob::default() }.write(dir.path());
    let script = format!(
        "{} run job.toml --batch-size 100 2>&1 | head -1; echo \"rc=${{PIPESTATUS[0]}}\" >&2",
        env!("CARGO_BIN_EXE_simsweep")
    );
    let out = Command::new("timeout")
        .args(["120", "bash", "-c", &script])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rc=141") || stderr.contains("rc=0"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(dir.path().join("output/manifest.json").exists());
}
