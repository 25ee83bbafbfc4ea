//! Crash safety: a run killed at any moment (SIGKILL), failing at any step of the commit
//! protocol, stopped by SIGINT/SIGTERM or by an I/O error resumes to exactly the output of an
//! uninterrupted run; a changed spec is refused naming what changed, `--restart` starts over;
//! `simsweep status` on running, dead and finished runs; the lock keeps a second process out.
//! See docs/commit-protocol.md.

mod common;
mod crash_common;

use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crash_common::*;
use simsweep::engine::output::{FaultPoint, OutputLayout, OutputLock};
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunOptions};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simsweep"))
}

/// A job that runs for about a second or two: 20,000 parameter sets × 3 replicates.
fn slow_job(dir: &Path) -> PathBuf {
    SmallJob { count: 20000, ..SmallJob::default() }.write(dir)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `job` uninterrupted into `out` with the binary and reads the output back.
fn reference(
    job: &Path,
    out: &Path,
    batch_size: &str,
) -> Vec<(String, arrow::record_batch::RecordBatch)> {
    let run = Command::new(bin())
        .args(["run".as_ref(), job.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .args(["--batch-size", batch_size])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(run.status.success(), "reference run: {}", stderr(&run));
    read_output(out)
}

/// Waits until the manifest in `out` (with its commit log) lists at least one committed batch.
fn wait_for_first_commit(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = out.join("manifest.json");
    loop {
        if let Ok(Some(m)) = simsweep::engine::output::Manifest::load(&path) {
            if !m.batches.is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no batch committed within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The manifest of `out` as JSON, with the batches of its commit log.
fn manifest(out: &Path) -> serde_json::Value {
    let m = simsweep::engine::output::Manifest::load(&out.join("manifest.json")).unwrap().unwrap();
    serde_json::to_value(m).unwrap()
}

#[test]
fn sigkill_at_seeded_random_moments_then_resume_gives_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_job(dir.path());
    let reference = reference(&job, &dir.path().join("reference"), "100");

    let out = dir.path().join("out");
    let mut rng = SplitMix(4);
    let mut kills = 0;
    for attempt in 0.. {
        // Resume with another batch size and another number of workers than the run it
        // resumes (and than the reference).
        let batch_size = ["100", "73", "150"][attempt % 3];
        let workers = ["2", "1", "3", "2"][attempt % 4];
        let extra: Vec<String> =
            ["--batch-size", batch_size, "--workers", workers].map(String::from).to_vec();
        if attempt == 0 {
            // The first kill on an event: once a batch is committed (a kill mid-run whatever
            // the machine's speed).
            let mut child = spawn_run(bin(), &job, &out, &extra);
            wait_for_first_commit(&out);
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            kills += 1;
            continue;
        }
        let delay = if kills < 4 { rng.millis(50, 500) } else { Duration::from_secs(120) };
        match kill_after(spawn_run(bin(), &job, &out, &extra), delay) {
            Attempt::Killed => kills += 1,
            Attempt::Exited(status, _) if status.success() => break,
            Attempt::Exited(status, err) => panic!("attempt {attempt} failed: {status}\n{err}"),
        }
    }
    assert!(kills >= 1, "the job ended before the first kill; make it longer");
    let got = read_output(&out);
    let rows = assert_same_output(&reference, &got, &format!("after {kills} SIGKILLs"));
    assert!(rows > 20000 * 3 * 15, "{rows} rows compared");
}

fn options(batch_size: usize) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(batch_size).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        ..RunOptions::default()
    }
}

#[test]
fn failing_at_each_fault_point_then_resuming_gives_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob::default().write(dir.path());
    let mut job = simsweep::load_job(&job_path).unwrap();
    job.set_output_dir(dir.path().join("reference"));
    simsweep::run(&job, &options(3), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let reference = read_output(job.output_dir());

    for (i, point) in
        [FaultPoint::AfterTempWrite, FaultPoint::AfterRename, FaultPoint::BeforeManifest]
            .into_iter()
            .enumerate()
    {
        for fault_batch in [Some(0), Some(3), None] {
            job.set_output_dir(dir.path().join(format!("out-{i}-{fault_batch:?}")));
            let failing = RunOptions { fault: Some((point, fault_batch)), ..options(3) };
            let err = simsweep::run(&job, &failing, Arc::new(NoProgress), CancelToken::new())
                .expect_err("the injected fault fails the run");
            let text = err.to_string();
            assert!(text.contains("injected fault"), "{point:?}: {text}");
            assert!(!err.is_input_error(), "{point:?}: an I/O failure, exit code 3");
            // Without a batch given, BeforeManifest fails the first manifest: none written.
            let has_manifest = job.output_dir().join("manifest.json").exists();
            assert!(has_manifest || (point, fault_batch) == (FaultPoint::BeforeManifest, None));
            if let (Some(b), true) = (fault_batch, has_manifest) {
                let m = manifest(job.output_dir());
                let listed: Vec<u64> = m["batches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["index"].as_u64().unwrap())
                    .collect();
                assert!(
                    !listed.contains(&u64::from(b)),
                    "{point:?}: batch {b} must not be committed"
                );
                if point != FaultPoint::AfterTempWrite {
                    // Renamed under its final name, yet not committed: resume must delete it.
                    let renamed = job
                        .output_dir()
                        .join(format!("model_outputs/prevalence/batch-{b:05}.parquet"));
                    let any_renamed = tree(job.output_dir())
                        .iter()
                        .any(|f| f.ends_with(&format!("batch-{b:05}.parquet")));
                    assert!(
                        any_renamed,
                        "{point:?}: no renamed file of batch {b} ({})",
                        renamed.display()
                    );
                }
            }
            // What the crash left: a temporary file, or a renamed file the manifest does not list.
            let left = tree(job.output_dir());
            if point == FaultPoint::AfterTempWrite {
                assert!(left.iter().any(|f| f.ends_with(".parquet.tmp")), "{point:?}: {left:?}");
            }
            // Resume (another batch size) to the same rows as the uninterrupted run.
            let report = simsweep::run(&job, &options(5), Arc::new(NoProgress), CancelToken::new())
                .unwrap_or_else(|e| panic!("{point:?}: resume failed: {e}"));
            assert!(!report.cancelled);
            let got = read_output(job.output_dir());
            assert_same_output(&reference, &got, &format!("{point:?} at batch {fault_batch:?}"));
        }
    }
}

#[test]
fn changed_spec_is_refused_naming_what_changed_and_restart_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let first = simsweep(&["run", "job.toml"], dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    fs::write(dir.path().join("output/notes.txt"), "mine").unwrap();

    let changed = SmallJob { replicates: 4, ..SmallJob::default() };
    fs::write(dir.path().join("job.toml"), changed.toml()).unwrap();
    let before = tree(dir.path());
    let refused = simsweep(&["run", "job.toml"], dir.path());
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("replicates (3 → 4)"), "{err}");
    assert!(!err.contains("model"), "only what changed is named: {err}");
    assert!(err.contains("--restart"), "{err}");
    assert!(err.contains("output"), "the directory is named: {err}");
    assert_eq!(tree(dir.path()), before, "a refused run changes nothing");

    // A changed target is named too.
    let other_target = SmallJob {
        targets: format!(
            "{}\n{}",
            // The prevalence target with another dispersion.
            TARGET_PREVALENCE.replace("dispersion = 5.0", "dispersion = 7.0"),
            TARGET_INCIDENCE
        ),
        ..SmallJob::default()
    };
    fs::write(dir.path().join("job.toml"), other_target.toml()).unwrap();
    let refused = simsweep(&["run", "job.toml"], dir.path());
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("target `prevalence`") && !err.contains("target `incidence`"), "{err}");

    // The same data under another file name: the spec points elsewhere, and says so.
    fs::copy(dir.path().join("observed.csv"), dir.path().join("observed_copy.csv")).unwrap();
    let renamed = SmallJob {
        targets: format!(
            "{}\n{}",
            TARGET_PREVALENCE.replace("observed.csv", "observed_copy.csv"),
            TARGET_INCIDENCE
        ),
        ..SmallJob::default()
    };
    fs::write(dir.path().join("job.toml"), renamed.toml()).unwrap();
    let refused = simsweep(&["run", "job.toml"], dir.path());
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("target `prevalence`") && !err.contains("target `incidence`"), "{err}");

    // Writing fewer model outputs is named with the outputs before and after.
    let fewer_outputs =
        SmallJob { extra_top: "model_outputs = [\"prevalence\"]".into(), ..SmallJob::default() };
    fs::write(dir.path().join("job.toml"), fewer_outputs.toml()).unwrap();
    let refused = simsweep(&["run", "job.toml"], dir.path());
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("model_outputs (all → [prevalence])"), "{err}");
    assert!(!err.contains("target `"), "only what changed is named: {err}");

    // --restart deletes the old results and gives the rows of a fresh run of the new spec.
    fs::write(dir.path().join("job.toml"), changed.toml()).unwrap();
    let restarted = simsweep(&["run", "job.toml", "--restart"], dir.path());
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    assert_eq!(fs::read_to_string(dir.path().join("output/notes.txt")).unwrap(), "mine");
    let fresh_dir = tempfile::tempdir().unwrap();
    changed.write(fresh_dir.path());
    let fresh = simsweep(&["run", "job.toml"], fresh_dir.path());
    assert!(fresh.status.success());
    assert_same_output(
        &read_output(&fresh_dir.path().join("output")),
        &read_output(&dir.path().join("output")),
        "after --restart",
    );
    assert_eq!(manifest(&dir.path().join("output"))["batches"].as_array().unwrap().len(), 1);
}

#[test]
fn status_of_a_running_a_dead_and_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_job(dir.path());
    let out = dir.path().join("out");

    // No manifest: exit 2 with a clear message.
    let none = simsweep(&["status", dir.path().to_str().unwrap()], dir.path());
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("no manifest.json"), "{}", stderr(&none));

    // Dead: killed after its first commit.
    let mut child = spawn_run(bin(), &job, &out, &["--batch-size".into(), "100".into()]);
    wait_for_first_commit(&out);
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = manifest(&out)["batches"].as_array().unwrap().len();
    let dead = simsweep(&["status", out.to_str().unwrap()], dir.path());
    let text = stdout(&dead);
    assert!(dead.status.success(), "{}", stderr(&dead));
    assert!(text.contains("job         small"), "{text}");
    assert!(
        text.contains(&format!("batches     {committed} of 200 committed (not finished)")),
        "{text}"
    );
    assert!(text.contains(&format!("simulations {} of 60000", committed * 300)), "{text}");
    assert!(text.contains("none holds the directory"), "{text}");
    assert!(text.contains("best so far for target `prevalence`"), "{text}");
    assert!(text.contains("best so far for target `incidence`"), "{text}");
    assert!(text.contains("beta="), "{text}");

    // Running: a process holds the lock (this one, as a run would).
    let mut lock = OutputLock::acquire(&OutputLayout::new(&out)).unwrap();
    lock.record_pid().unwrap();
    let running = simsweep(&["status", out.to_str().unwrap()], dir.path());
    let text = stdout(&running);
    assert!(running.status.success(), "{}", stderr(&running));
    assert!(
        text.contains(&format!("running: pid {} holds the directory", std::process::id())),
        "{text}"
    );
    drop(lock);

    // Finished: resume to the end.
    let done =
        simsweep(&["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    assert!(done.status.success(), "{}", stderr(&done));
    let finished = simsweep(&["status", out.to_str().unwrap()], dir.path());
    let text = stdout(&finished);
    assert!(text.contains("(finished)"), "{text}");
    assert!(text.contains("simulations 60000 of 60000"), "{text}");
    assert!(text.contains("failures    0"), "{text}");
    assert!(text.contains("none holds the directory"), "{text}");
    // The best losses are the summary's.
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("summary.json")).unwrap()).unwrap();
    let best = summary.as_array().unwrap().iter().find(|t| t["target"] == "prevalence").unwrap();
    let loss = best["best"][0]["loss"].as_f64().unwrap();
    assert!(text.contains(&format!("{loss:>14.6}")), "{text}");
}

#[test]
fn a_second_process_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_job(dir.path());
    let out = dir.path().join("out");
    let mut first = spawn_run(bin(), &job, &out, &["--batch-size".into(), "50".into()]);
    wait_for_first_commit(&out);
    let second =
        simsweep(&["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    let err = stderr(&second);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another simsweep process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains(out.to_str().unwrap()), "{err}");

    // The kernel dropped the dead process's lock: the directory is usable at once.
    let resumed =
        simsweep(&["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    assert!(resumed.status.success(), "{}", stderr(&resumed));

    // A refused run in a fresh directory writes nothing but its lock... and removes it.
    let fresh = dir.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    fs::write(fresh.join("thesis.tex"), "x").unwrap();
    let refused =
        simsweep(&["run", job.to_str().unwrap(), "--out", fresh.to_str().unwrap()], dir.path());
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(tree(&fresh), vec!["thesis.tex"]);
}

fn signal_then_resume(signal: &str, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let job = slow_job(dir.path());
    let reference = reference(&job, &dir.path().join("reference"), "100");
    let out = dir.path().join("out");
    let child = Command::new(bin())
        .args(["run".as_ref(), job.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .args(["--batch-size", "100"])
        .env_remove("SIMSWEEP_BATCH_SIZE")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_first_commit(&out);
    let sent = Instant::now();
    let kill = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let ended = child.wait_with_output().unwrap();
    eprintln!("{signal}: the process ended {:?} after the signal", sent.elapsed());
    assert_eq!(ended.status.code(), Some(expected_code), "{}", stderr(&ended));
    // Stopped, not finished (an event, not a time: the manifest below says the run did not
    // reach its end).
    assert!(stderr(&ended).contains("resume"), "{}", stderr(&ended));
    // The closing lines name only files that exist: no summary.json yet.
    let printed = stdout(&ended);
    assert!(printed.contains("summary.json is written when the run finishes"), "{printed}");
    assert!(!out.join("summary.json").exists());
    let m = manifest(&out);
    assert_eq!(m["finished"], false, "stopped before the end");
    // Nothing but committed files (the open batches were dropped or committed).
    let resumed =
        simsweep(&["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()], dir.path());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_same_output(&reference, &read_output(&out), &format!("after {signal}"));
}

#[test]
fn sigterm_stops_gracefully_with_exit_code_143_and_resumes() {
    signal_then_resume("-TERM", 143);
}

#[test]
fn sigint_stops_gracefully_with_exit_code_130_and_resumes() {
    signal_then_resume("-INT", 130);
}

/// Cancels the run once the first batch is committed.
struct CancelAfterFirst(CancelToken);

impl ProgressObserver for CancelAfterFirst {
    fn on_event(&self, event: &ProgressEvent) {
        if matches!(event, ProgressEvent::BatchCommitted { .. }) {
            self.0.cancel();
        }
    }
}

#[test]
fn an_io_error_names_the_path_exits_3_and_a_rerun_after_the_fix_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob::default().write(dir.path());
    let job = simsweep::load_job(&job_path).unwrap();
    let reference_dir = tempfile::tempdir().unwrap();
    let mut reference_job = job.clone();
    reference_job.set_output_dir(reference_dir.path().join("output"));
    simsweep::run(&reference_job, &options(3), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let reference = read_output(reference_job.output_dir());

    let cancel = CancelToken::new();
    let report =
        simsweep::run(&job, &options(3), Arc::new(CancelAfterFirst(cancel.clone())), cancel)
            .unwrap();
    assert!(report.cancelled);
    // Something in the way of every temporary file of one dataset: as if the directory could
    // not be written (tests run as root, where permissions do not stop writes).
    let blocked_dir = dir.path().join("output/targets/prevalence");
    for i in 0..40 {
        fs::create_dir(blocked_dir.join(format!(".batch-{i:05}.parquet.tmp"))).unwrap();
    }
    let committed_before = manifest(&dir.path().join("output"))["batches"].clone();
    let failed = simsweep(&["run", "job.toml", "--batch-size", "3"], dir.path());
    let err = stderr(&failed);
    assert_eq!(failed.status.code(), Some(3), "{err}");
    assert!(err.contains("targets/prevalence/.batch-") && err.contains(".parquet.tmp"), "{err}");
    assert!(err.contains("resume"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Committed batches kept, no partial file under a final name.
    let m = manifest(&dir.path().join("output"));
    assert!(m["batches"].as_array().unwrap().len() >= committed_before.as_array().unwrap().len());
    // Every file under a final name is a whole Parquet file: its footer reads.
    let output = dir.path().join("output");
    for f in tree(&output).into_iter().filter(|f| f.ends_with(".parquet")) {
        let file = fs::File::open(output.join(&f)).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file);
        assert!(reader.is_ok(), "{f} under its final name is not a whole Parquet file");
    }

    // Fixed: the same command resumes to the rows of an uninterrupted run.
    for i in 0..40 {
        fs::remove_dir(blocked_dir.join(format!(".batch-{i:05}.parquet.tmp"))).unwrap();
    }
    let fixed = simsweep(&["run", "job.toml", "--batch-size", "4"], dir.path());
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert_same_output(&reference, &read_output(&dir.path().join("output")), "after the fix");
}
