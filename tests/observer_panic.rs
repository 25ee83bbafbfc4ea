//! A panicking progress observer (the host's code) never hangs `run`: the run stops as on a
//! cancel and returns `RunError::Internal` naming the observer and the panic's message; what
//! was committed stays committed, and a rerun resumes to the uninterrupted output.

mod common;
mod crash_common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use crash_common::*;
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunError, RunOptions};

struct PanicsOnCommit {
    after: u32,
    seen: AtomicU32,
}

impl ProgressObserver for PanicsOnCommit {
    fn on_event(&self, event: &ProgressEvent) {
        if let ProgressEvent::BatchCommitted { .. } = event {
            if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
                panic!("observer broke on purpose");
            }
        }
    }
}

#[test]
fn a_panicking_observer_ends_the_run_with_an_error_and_the_output_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob { count: 2000, ..SmallJob::default() }.write(dir.path());
    let mut job = simsweep::load_job(&job_path).unwrap();
    let options = RunOptions {
        batch_size: NonZeroUsize::new(50).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        ..RunOptions::default()
    };
    job.set_output_dir(dir.path().join("reference"));
    simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).unwrap();
    let reference = read_output(job.output_dir());

    job.set_output_dir(dir.path().join("out"));
    let (tx, rx) = std::sync::mpsc::channel();
    let (run_job, run_options) = (job.clone(), options.clone());
    std::thread::spawn(move || {
        let observer = Arc::new(PanicsOnCommit { after: 2, seen: AtomicU32::new(0) });
        let _ = tx.send(simsweep::run(&run_job, &run_options, observer, CancelToken::new()));
    });
    // A generous bound that only catches a hang.
    let result = rx.recv_timeout(Duration::from_secs(60)).expect("run returned (no hang)");
    match result {
        Err(simsweep::Error::Run(RunError::Internal { part, message })) => {
            assert_eq!(part, "the progress observer");
            assert_eq!(message, "observer broke on purpose");
        }
        other => panic!("expected RunError::Internal, got {other:?}"),
    }
    let m = simsweep::engine::output::Manifest::load(&job.output_dir().join("manifest.json"))
        .unwrap()
        .unwrap();
    assert!(m.batches.len() >= 2 && !m.finished, "{} batches committed", m.batches.len());

    simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert_same_output(&reference, &read_output(job.output_dir()), "resumed after the panic");
}
