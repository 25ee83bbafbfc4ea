//! Nothing of a run outlives it: after each of 50 runs in one process — finished, stopped
//! gracefully, stopped hard while the model hangs — the process has the threads, child processes
//! and open file descriptors it had before. Alone in its test binary, so that no other test's
//! threads or files are counted. Linux (`/proc`). Needs `python3` with `pyarrow`.

mod common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::write_fault_job;
use simsweep::{CancelToken, NoProgress, RunOptions};

/// Threads, child processes and open file descriptors of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Census {
    threads: usize,
    children: usize,
    fds: usize,
}

fn census() -> Census {
    let tasks: Vec<_> =
        std::fs::read_dir("/proc/self/task").unwrap().map(|e| e.unwrap().path()).collect();
    let children = tasks
        .iter()
        .map(|t| {
            std::fs::read_to_string(t.join("children")).map_or(0, |c| c.split_whitespace().count())
        })
        .sum();
    Census {
        threads: tasks.len(),
        children,
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
    }
}

/// Waits (up to 10 s: threads end just after they signal it) for the census to be `baseline`.
fn settles_to(baseline: Census) -> Result<(), Census> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = census();
        if now == baseline {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The census once it holds still for 300 ms (the threads of a run end just after it returns).
fn steady() -> Census {
    let mut last = census();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = census();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Finished,
    Cancelled,
    CancelledNow,
}

fn run(job: &simsweep::Job, state: &Path, ending: Ending) {
    let options = RunOptions {
        batch_size: NonZeroUsize::new(2).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        restart: true,
        ..RunOptions::default()
    };
    let cancel = CancelToken::new();
    let hang = state.join("hang");
    match ending {
        Ending::Finished => {
            let _ = std::fs::remove_file(&hang);
            let report = simsweep::run(job, &options, Arc::new(NoProgress), cancel).unwrap();
            assert_eq!((report.cancelled, report.progress.failed), (false, 0));
        }
        Ending::Cancelled | Ending::CancelledNow => {
            if matches!(ending, Ending::CancelledNow) {
                std::fs::write(&hang, "").unwrap();
            } else {
                let _ = std::fs::remove_file(&hang);
            }
            std::thread::scope(|scope| {
                let stopper = cancel.clone();
                let running =
                    scope.spawn(move || simsweep::run(job, &options, Arc::new(NoProgress), cancel));
                // Stop once a simulation has run (a graceful stop) or hangs (a hard stop).
                let deadline = Instant::now() + Duration::from_secs(60);
                while !started(state) && !running.is_finished() {
                    assert!(Instant::now() < deadline, "no simulation started");
                    std::thread::sleep(Duration::from_millis(5));
                }
                match ending {
                    Ending::CancelledNow => stopper.cancel_now(),
                    _ => stopper.cancel(),
                }
                running.join().unwrap().unwrap();
            });
        }
    }
    for entry in std::fs::read_dir(state).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

/// Whether a `hang_with_child` or `slow` task has started (it left a file in `state`).
fn started(state: &Path) -> bool {
    std::fs::read_dir(state).unwrap().any(|e| {
        let name = e.unwrap().file_name();
        let name = name.to_string_lossy();
        name.starts_with("child-") || name.starts_with("started-")
    })
}

#[test]
fn fifty_runs_in_one_process_leave_no_thread_child_or_file_descriptor_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let rows = [
        ("ok", 1.0),
        ("ok", 2.0),
        ("hang_with_child", 1.0),
        ("hang_with_child", 2.0),
        ("ok", 3.0),
        ("ok", 4.0),
    ];
    let job = simsweep::load_job(&write_fault_job(dir.path(), state.path(), &rows))
        .unwrap_or_else(|e| panic!("needs python3 with pyarrow (scripts/setup-test-env.sh): {e}"));
    // One run first: what the process sets up once (log and runtime globals) is not a leak.
    run(&job, state.path(), Ending::Finished);
    let baseline = steady();
    assert_eq!(baseline.children, 0, "{baseline:?}");
    for i in 0..50 {
        let ending = match i % 3 {
            0 => Ending::Finished,
            1 => Ending::Cancelled,
            _ => Ending::CancelledNow,
        };
        run(&job, state.path(), ending);
        if let Err(now) = settles_to(baseline) {
            panic!("after run {i} ({ending:?}): {now:?}, before the runs: {baseline:?}");
        }
    }
}
