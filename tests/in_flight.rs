//! The in-flight counters: reported to the observer, bounded by the run options, zero at the
//! end, and their peaks written to the manifest.

mod common;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use common::*;
use simsweep::{CancelToken, ProgressEvent, ProgressObserver, RunOptions};

#[derive(Default)]
struct Collect(Mutex<Vec<ProgressEvent>>);

impl ProgressObserver for Collect {
    fn on_event(&self, event: &ProgressEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn counters_are_bounded_zero_at_the_end_and_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(dir.path())).unwrap();
    let options = RunOptions {
        batch_size: NonZeroUsize::new(5).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        tasks_per_chunk: NonZeroUsize::new(4).unwrap(),
        ..RunOptions::default()
    };
    let observer = Arc::new(Collect::default());
    simsweep::run(&job, &options, observer.clone(), CancelToken::new()).unwrap();

    let events = observer.0.lock().unwrap();
    let last = events
        .iter()
        .rev()
        .find_map(|e| match e {
            ProgressEvent::InFlight { now, peaks, workers, .. } => Some((*now, *peaks, *workers)),
            _ => None,
        })
        .expect("an InFlight event at the end of the dataflow");
    let (now, peaks, workers) = last;
    assert_eq!(workers, 2);
    assert_eq!(now, simsweep::engine::progress::InFlight::default(), "nothing left in flight");
    assert!(
        peaks.tasks_queued >= 1 && peaks.tasks_queued as usize <= options.max_tasks_in_flight()
    );
    assert!(peaks.tasks_running >= 1 && peaks.tasks_running <= 2);
    // Model-output rows of at most max_open_batches batches: 5 points × 3 replicates × 2
    // outputs × (days + 1) rows each.
    let rows_per_batch = 5 * 3 * 2 * 15;
    assert!(peaks.rows_buffered >= 1 && peaks.rows_buffered <= 2 * rows_per_batch, "{peaks:?}");

    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("output/manifest.json")).unwrap(),
    )
    .unwrap();
    let written = &manifest["peak_in_flight"];
    for (name, value) in peaks.named() {
        assert_eq!(written[name].as_u64(), Some(value), "{name} in the manifest");
    }
}

#[test]
fn the_in_flight_bound_is_reached_and_never_exceeded() {
    // 23 sets × 3 replicates = 69 tasks against a bound of 2 workers × 4 = 8: the Batcher fills
    // up to the bound once a task has been timed, and never beyond it.
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(dir.path())).unwrap();
    let options = RunOptions {
        batch_size: NonZeroUsize::new(5).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        tasks_in_flight_per_worker: NonZeroUsize::new(4).unwrap(),
        tasks_per_chunk: NonZeroUsize::new(1).unwrap(),
        ..RunOptions::default()
    };
    assert_eq!(options.max_tasks_in_flight(), 8);
    let observer = Arc::new(Collect::default());
    simsweep::run(&job, &options, observer.clone(), CancelToken::new()).unwrap();
    let events = observer.0.lock().unwrap();
    let peaks = events
        .iter()
        .rev()
        .find_map(|e| match e {
            ProgressEvent::InFlight { peaks, .. } => Some(*peaks),
            _ => None,
        })
        .expect("an InFlight event at the end");
    assert_eq!(peaks.tasks_in_flight, 8, "{peaks:?}");
}
