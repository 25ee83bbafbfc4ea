//! The run lifecycle a daemon stands on: the hard stop ([`CancelToken::cancel_now`]) ends a run
//! whose external model hangs, killing the model's process group, and the output resumes to the
//! uninterrupted rows; a `Job` runs twice in one process; two jobs run at once, each within its
//! own worker budget. Needs `python3` with `pyarrow` (`scripts/setup-test-env.sh`).

mod common;
mod crash_common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{read_dataset, write_fault_job};
use crash_common::{assert_same_output, read_output, spawn_run};
use simsweep::engine::progress::HARD_STOP_SECONDS;
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunOptions};

fn load(job: &Path) -> simsweep::Job {
    simsweep::load_job(job)
        .unwrap_or_else(|e| panic!("needs python3 with pyarrow (scripts/setup-test-env.sh): {e}"))
}

fn options(workers: usize, batch_size: usize) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(batch_size).unwrap(),
        workers: NonZeroUsize::new(workers).unwrap(),
        ..RunOptions::default()
    }
}

/// Waits up to `limit` for `done`; panics naming `what` past it.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has ended (gone, or a zombie no one has reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The pids the fault model's `hang_with_child` tasks started (`child-<seed>` files).
fn children_started(state: &Path) -> Vec<u32> {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("child-") && !name.ends_with(".tmp"))
                .then(|| std::fs::read_to_string(e.path()).unwrap().trim().parse().unwrap())
        })
        .collect()
}

const ROWS: [(&str, f64); 10] = [
    ("ok", 1.0),
    ("ok", 2.0),
    ("ok", 3.0),
    ("ok", 4.0),
    ("hang_with_child", 1.0),
    ("hang_with_child", 2.0),
    ("ok", 5.0),
    ("ok", 6.0),
    ("ok", 7.0),
    ("ok", 8.0),
];

#[test]
fn cancel_now_kills_a_hung_model_and_its_children_and_the_output_resumes() {
    logs(); // one subscriber for the whole binary, before any run makes a span
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("hang"), "").unwrap();
    let job = load(&write_fault_job(dir.path(), state.path(), &ROWS));
    let cancel = CancelToken::new();
    let running = {
        let (job, cancel) = (job.clone(), cancel.clone());
        std::thread::spawn(move || {
            simsweep::run(&job, &options(2, 2), Arc::new(NoProgress), cancel)
        })
    };
    wait_for(Duration::from_secs(120), "a hung task started its child", || {
        !children_started(state.path()).is_empty()
    });
    // A graceful stop would wait for the hung task forever (no timeout is set): only the hard
    // stop ends this run.
    let asked = Instant::now();
    cancel.cancel_now();
    let report = running.join().expect("run does not panic").expect("run returns a report");
    let took = asked.elapsed();
    assert!(report.cancelled);
    // The promise is HARD_STOP_SECONDS (2 s); a loaded 2-core machine gets 3 s more.
    assert!(took.as_secs_f64() < HARD_STOP_SECONDS + 3.0, "run returned {took:?} after cancel_now");
    eprintln!(
        "returned {took:?} after cancel_now, {} batches committed",
        report.progress.batches_committed
    );
    // The model's own child (same process group) was killed with it.
    let children = children_started(state.path());
    assert!(!children.is_empty());
    for pid in children {
        wait_for(Duration::from_secs(10), &format!("the model's child {pid} ended"), || ended(pid));
    }

    // Resumed without the hang: the rows of a run that was never interrupted, and no failure
    // recorded for the killed tasks.
    std::fs::remove_file(state.path().join("hang")).unwrap();
    let resumed = simsweep::run(&job, &options(2, 2), Arc::new(NoProgress), CancelToken::new())
        .expect("resumes");
    assert!(!resumed.cancelled);
    assert_eq!(resumed.progress.simulations_committed, 10);
    assert_eq!(resumed.progress.failed, 0);
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = load(&write_fault_job(reference_dir.path(), state.path(), &ROWS));
    simsweep::run(&reference, &options(1, 2), Arc::new(NoProgress), CancelToken::new()).unwrap();
    // In sweep order (batch numbers differ after a resume).
    let rows = assert_same_output(
        &read_output(&reference_dir.path().join("output")),
        &read_output(&dir.path().join("output")),
        "resumed after a hard stop",
    );
    assert_eq!(rows, 30, "10 parameter sets × 3 rows of values, no failure rows");
}

#[test]
fn a_job_runs_twice_in_one_process_with_no_spurious_failures() {
    logs(); // one subscriber for the whole binary, before any run makes a span
            // The first run's worker processes belong to it: the second run starts its own (they used to
            // be kept in a pool the first run's threads took down with them, as `oom` failures).
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let rows: Vec<(&str, f64)> = (1..=8).map(|i| ("ok", f64::from(i))).collect();
    let job = load(&write_fault_job(dir.path(), state.path(), &rows));
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let options = RunOptions { restart: true, ..options(2, 2) };
        let report =
            simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).expect("runs");
        assert_eq!((report.progress.simulations_committed, report.progress.failed), (8, 0));
        outputs.push(read_dataset(&dir.path().join("output/model_outputs/values")));
    }
    assert_eq!(outputs[0], outputs[1]);
}

/// The most tasks running at once, from the run's `InFlight` events, and the job ids the
/// events carried.
#[derive(Default)]
struct PeakRunning {
    peak: Mutex<u64>,
    job_ids: Mutex<std::collections::BTreeSet<String>>,
}

impl ProgressObserver for PeakRunning {
    fn on_event(&self, event: &ProgressEvent) {
        self.job_ids.lock().unwrap().insert(event.job_id().to_string());
        if let ProgressEvent::InFlight { peaks, .. } = event {
            let mut peak = self.peak.lock().unwrap();
            *peak = (*peak).max(peaks.tasks_running);
        }
    }
}

/// Log lines of every thread, at INFO and above.
fn logs() -> &'static Mutex<Vec<u8>> {
    common::captured_logs(tracing::Level::INFO)
}

#[test]
fn two_jobs_at_once_each_within_its_worker_budget_and_named_in_events_and_logs() {
    let logs = logs();
    // Tasks of 0.1–0.8 s: both runs are busy at the same time for seconds.
    let rows: Vec<(&str, f64)> = (1..=8).map(|i| ("slow", f64::from(i) / 10.0)).collect();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let state = tempfile::tempdir().unwrap();
    let jobs: Vec<_> =
        dirs.iter().map(|d| load(&write_fault_job(d.path(), state.path(), &rows))).collect();
    let budgets = [1usize, 2];
    let observers = [Arc::new(PeakRunning::default()), Arc::new(PeakRunning::default())];
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|i| {
                let (job, observer) = (&jobs[i], observers[i].clone());
                let options =
                    RunOptions { job_id: Some(format!("job-{i}")), ..options(budgets[i], 2) };
                scope.spawn(move || simsweep::run(job, &options, observer, CancelToken::new()))
            })
            .collect();
        for run in runs {
            let report = run.join().expect("no panic").expect("runs");
            assert_eq!((report.progress.simulations_committed, report.progress.failed), (8, 0));
        }
    });
    for (i, observer) in observers.iter().enumerate() {
        let peak = *observer.peak.lock().unwrap();
        assert!((1..=budgets[i] as u64).contains(&peak), "job {i}: {peak} tasks running at once");
        let ids: Vec<_> = observer.job_ids.lock().unwrap().iter().cloned().collect();
        assert_eq!(ids, [format!("job-{i}")], "every event of job {i} carries its id");
    }
    // Every log line of the two runs names its job: 4 batches each, committed on the writer's
    // and the Batcher's threads.
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for i in 0..2 {
        let committed = logged
            .lines()
            .filter(|l| l.contains(&format!("job{{id=job-{i} ")) && l.contains("batch committed"))
            .count();
        assert_eq!(committed, 4, "job {i}:\n{logged}");
    }
    let unnamed: Vec<_> = logged
        .lines()
        .filter(|l| l.contains("job-") || l.contains("batch committed") || l.contains("run starts"))
        .filter(|l| !l.contains("job{id="))
        .collect();
    assert!(unnamed.is_empty(), "log lines without the job's id: {unnamed:?}");
    // The same rows as each run alone would write (the seeds are the job's, not the process's).
    assert_eq!(
        read_dataset(&dirs[0].path().join("output/model_outputs/values")),
        read_dataset(&dirs[1].path().join("output/model_outputs/values"))
    );
}

/// `simsweep run` of the fault job in `dir` (written with `hang`), once a hung task started.
fn spawn_hung_run(dir: &Path, state: &Path) -> std::process::Child {
    let args = ["--batch-size", "2", "--workers", "2"].map(String::from);
    let child = spawn_run(
        Path::new(env!("CARGO_BIN_EXE_simsweep")),
        &dir.join("job.toml"),
        &dir.join("output"),
        &args,
    );
    wait_for(Duration::from_secs(120), "a hung task started its child", || {
        !children_started(state).is_empty()
    });
    child
}

fn sigint(pid: u32) {
    let sent = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
    assert!(sent.unwrap().success());
}

/// Waits up to `limit` for `child` to exit; its exit code, the time since `since`, its stderr.
fn exit_after(
    mut child: std::process::Child,
    since: Instant,
    limit: Duration,
) -> (Option<i32>, Duration, String) {
    let mut status = None;
    wait_for(limit, "the process exited", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let took = since.elapsed();
    let output = child.wait_with_output().unwrap();
    (status.and_then(|s| s.code()), took, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_second_sigint_stops_a_hung_model_at_once_and_the_output_resumes() {
    logs(); // one subscriber for the whole binary, before any run makes a span
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("hang"), "").unwrap();
    write_fault_job(dir.path(), state.path(), &ROWS);
    let mut child = spawn_hung_run(dir.path(), state.path());
    sigint(child.id());
    // The graceful stop waits for the hung task (no timeout is set): still running.
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "a graceful stop waits for the running tasks");
    let asked = Instant::now();
    sigint(child.id());
    let (code, took, stderr) = exit_after(child, asked, Duration::from_secs(20));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(took.as_secs_f64() < HARD_STOP_SECONDS + 3.0, "exited {took:?} after the 2nd SIGINT");
    assert!(stderr.contains("stopping now: killing the simulations running"), "{stderr}");
    assert!(!stderr.contains("did not stop in time"), "the run itself returned: {stderr}");
    for pid in children_started(state.path()) {
        wait_for(Duration::from_secs(10), &format!("the model's child {pid} ended"), || ended(pid));
    }
    std::fs::remove_file(state.path().join("hang")).unwrap();
    let resumed = common::simsweep(&["run", "job.toml", "--batch-size", "2"], dir.path());
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = load(&write_fault_job(reference_dir.path(), state.path(), &ROWS));
    simsweep::run(&reference, &options(1, 2), Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert_same_output(
        &read_output(&reference_dir.path().join("output")),
        &read_output(&dir.path().join("output")),
        "resumed after a second SIGINT",
    );
}

#[test]
fn after_the_grace_period_a_first_sigint_stops_a_hung_model_hard() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("hang"), "").unwrap();
    write_fault_job(dir.path(), state.path(), &ROWS);
    let child = spawn_hung_run(dir.path(), state.path());
    let asked = Instant::now();
    sigint(child.id());
    let (code, took, stderr) = exit_after(child, asked, Duration::from_secs(90));
    assert_eq!(code, Some(130), "{stderr}");
    // The graceful stop waited its 30 s for the hung tasks, then stopped them.
    assert!(took >= Duration::from_secs(29), "exited {took:?} after SIGINT: {stderr}");
    assert!(
        stderr.contains("the simulations running did not end within 30 s; stopping them"),
        "{stderr}"
    );
    assert!(!stderr.contains("did not stop in time"), "the run itself returned: {stderr}");
    for pid in children_started(state.path()) {
        wait_for(Duration::from_secs(10), &format!("the model's child {pid} ended"), || ended(pid));
    }
}
