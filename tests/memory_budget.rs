//! The memory budget (`RunOptions::max_buffer_bytes`): batches larger than it run one at a time
//! and the output is the same; a replicate larger than it stops the run with a clear error.

mod common;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use common::*;
use simsweep::engine::collect::output_bytes;
use simsweep::engine::progress::InFlight;
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunOptions};

#[derive(Default)]
struct Peaks(Mutex<InFlight>);

impl ProgressObserver for Peaks {
    fn on_event(&self, event: &ProgressEvent) {
        if let ProgressEvent::InFlight { peaks, .. } = event {
            *self.0.lock().unwrap() = *peaks;
        }
    }
}

/// Bytes of one replicate's outputs of the small SIR job (every replicate has the same rows).
fn replicate_bytes(job: &simsweep::Job) -> u64 {
    let output = job.simulator.simulate(&job.sweep.params(0), 1).expect("runs");
    output_bytes(&output)
}

fn options(max_buffer_bytes: u64) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(5).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        max_buffer_bytes,
        ..RunOptions::default()
    }
}

#[test]
fn batches_over_the_budget_run_one_at_a_time_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(dir.path())).unwrap();
    let per_replicate = replicate_bytes(&job);
    // 5 sets × 3 replicates = 15 replicates a batch, the budget 2 replicates' worth.
    let per_batch = 15 * per_replicate;
    let observer = Arc::new(Peaks::default());
    let report =
        simsweep::run(&job, &options(2 * per_replicate), observer.clone(), CancelToken::new())
            .unwrap();
    assert_eq!(report.progress.batches_committed, 5);
    let peaks = *observer.0.lock().unwrap();
    assert!(
        (per_replicate..=per_batch).contains(&peaks.bytes_buffered),
        "held {} bytes at most; one batch is {per_batch}",
        peaks.bytes_buffered
    );

    let reference_dir = tempfile::tempdir().unwrap();
    let mut reference = job.clone();
    reference.output_dir = reference_dir.path().join("output");
    simsweep::run(&reference, &options(u64::MAX), Arc::new(NoProgress), CancelToken::new())
        .unwrap();
    for dataset in ["model_outputs/prevalence", "targets/prevalence", "targets/incidence"] {
        assert_eq!(
            read_dataset(&dir.path().join("output").join(dataset)),
            read_dataset(&reference.output_dir.join(dataset)),
            "{dataset}"
        );
    }
}

#[test]
fn a_replicate_over_the_budget_stops_the_run_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(dir.path())).unwrap();
    let per_replicate = replicate_bytes(&job);
    let err =
        simsweep::run(&job, &options(per_replicate - 1), Arc::new(NoProgress), CancelToken::new())
            .expect_err("no batch size fits");
    let text = err.to_string();
    assert!(text.contains("max_buffer_bytes"), "{text}");
    assert!(text.contains(&format!("returned {per_replicate} bytes of model outputs")), "{text}");
    assert!(text.contains(&format!("more than the {} bytes", per_replicate - 1)), "{text}");
}
