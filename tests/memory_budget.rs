//! The memory budget (`RunOptions::max_buffer_bytes`): batches larger than it run one at a time
//! and the output is the same; a replicate larger than it stops the run with a clear error. And
//! every bound holds under a slow writer (backpressure), on the engine's own counters.

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
    let output = job.simulator().simulate(&job.sweep().params(0), 1).expect("runs");
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
    reference.set_output_dir(reference_dir.path().join("output"));
    simsweep::run(&reference, &options(u64::MAX), Arc::new(NoProgress), CancelToken::new())
        .unwrap();
    for dataset in ["model_outputs/prevalence", "targets/prevalence", "targets/incidence"] {
        assert_eq!(
            read_dataset(&dir.path().join("output").join(dataset)),
            read_dataset(&reference.output_dir().join(dataset)),
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

#[test]
fn a_slow_writer_holds_the_dataflow_within_its_bounds() {
    // Commits take 100 ms each (a slow disk) while the model runs in microseconds: everything
    // upstream backs up against the bounds, and no counter passes its bound.
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob { count: 40, ..SmallJob::default() }.write(dir.path()))
        .unwrap();
    let options = RunOptions {
        batch_size: NonZeroUsize::new(4).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        tasks_in_flight_per_worker: NonZeroUsize::new(6).unwrap(),
        tasks_per_chunk: NonZeroUsize::new(3).unwrap(),
        mailbox_capacity: NonZeroUsize::new(2).unwrap(),
        slow_commit: Some(std::time::Duration::from_millis(100)),
        ..RunOptions::default()
    };
    let observer = Arc::new(Peaks::default());
    let report = simsweep::run(&job, &options, observer.clone(), CancelToken::new()).unwrap();
    assert_eq!(report.progress.batches_committed, 10);
    let peaks = *observer.0.lock().unwrap();
    // A batch: 4 sets × 3 replicates, each 2 outputs × 15 rows.
    let (replicates_per_batch, rows_per_batch) = (4 * 3, 4 * 3 * 2 * 15);
    assert_eq!(peaks.tasks_in_flight, 12, "the in-flight bound (2 × 6) is reached: {peaks:?}");
    // At most max_open_batches (2) batches are held by the writer, and the Aggregator holds
    // replicates of those batches only.
    assert_eq!(peaks.rows_buffered, 2 * rows_per_batch, "two whole batches wait: {peaks:?}");
    assert!(peaks.replicates_awaiting_aggregation <= 2 * replicates_per_batch, "{peaks:?}");
    assert!(peaks.tasks_queued + peaks.tasks_running <= 2 * 12, "{peaks:?}");
}
