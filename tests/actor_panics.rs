//! A panic inside any stage of the dataflow never hangs `run`: each stage is made to panic
//! (the hidden `RunOptions::panic_in`, test support) at batch 2; `run` returns an error within a
//! bound that only catches hangs, naming the stage where it can, and the output stays
//! resumable to exactly the uninterrupted rows.

mod common;
mod crash_common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use crash_common::*;
use simsweep::engine::progress::PanicPoint;
use simsweep::{CancelToken, NoProgress, RunError, RunOptions};

#[test]
fn a_panic_in_any_stage_ends_the_run_with_an_error_and_the_output_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob { count: 600, ..SmallJob::default() }.write(dir.path());
    let mut job = simsweep::load_job(&job_path).unwrap();
    let options = RunOptions {
        batch_size: NonZeroUsize::new(50).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        ..RunOptions::default()
    };
    job.set_output_dir(dir.path().join("reference"));
    simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).unwrap();
    let reference = read_output(job.output_dir());

    for point in [
        PanicPoint::Batcher,
        PanicPoint::SimWorker,
        PanicPoint::Aggregator,
        PanicPoint::ParquetWriter,
    ] {
        job.set_output_dir(dir.path().join(format!("{point:?}")));
        let failing = RunOptions { panic_in: Some(point), ..options.clone() };
        let (tx, rx) = std::sync::mpsc::channel();
        let run_job = job.clone();
        std::thread::spawn(move || {
            let _ = tx.send(simsweep::run(
                &run_job,
                &failing,
                Arc::new(NoProgress),
                CancelToken::new(),
            ));
        });
        let result = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("{point:?}: run did not return within 60 s after a panic (a hang)")
        });
        let err = result.expect_err("a panicking stage fails the run");
        assert!(!err.is_input_error(), "{point:?}: {err}");
        // Which stage is named: the one that panicked; a writer's panic may surface first as
        // the Aggregator (which stops when the writer it feeds is gone).
        let expected: &[&str] = match point {
            PanicPoint::Batcher => &["the Batcher"],
            PanicPoint::Aggregator => &["the Aggregator"],
            PanicPoint::ParquetWriter => &["the ParquetWriter", "the Aggregator"],
            // A worker thread's panic reaches the Batcher as a lost chunk.
            PanicPoint::SimWorker => &[],
        };
        if !expected.is_empty() {
            match &err {
                simsweep::Error::Run(RunError::Internal { part, .. }) => {
                    assert!(expected.contains(part), "{point:?}: {err}")
                }
                other => panic!("{point:?}: expected RunError::Internal, got {other:?}"),
            }
        }
        // What was committed stays; a rerun resumes to the uninterrupted output.
        simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new())
            .unwrap_or_else(|e| panic!("{point:?}: resume failed: {e}"));
        assert_same_output(&reference, &read_output(job.output_dir()), &format!("{point:?}"));
    }
}
