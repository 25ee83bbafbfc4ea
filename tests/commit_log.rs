//! The append-only commit log (docs/commit-protocol.md): a torn last record is not a committed
//! batch and a resume gives the uninterrupted output; `status` and the summary answer from the
//! manifest and log alone; an output of manifest format 1 is still read, and upgraded by the
//! next run.

mod common;
mod crash_common;

use std::fs;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use common::*;
use crash_common::*;
use simsweep::engine::output::{commit_log, FaultPoint, Manifest};
use simsweep::{CancelToken, NoProgress, RunOptions};

fn options(batch_size: usize) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(batch_size).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        ..RunOptions::default()
    }
}

fn manifest(out: &Path) -> Manifest {
    Manifest::load(&out.join("manifest.json")).unwrap().unwrap()
}

/// A finished reference run of the small job in `dir/reference`, batches of 3.
fn reference(dir: &Path) -> (simsweep::Job, Vec<(String, arrow::record_batch::RecordBatch)>) {
    let job_path = SmallJob::default().write(dir);
    let mut job = simsweep::load_job(&job_path).unwrap();
    job.set_output_dir(dir.join("reference"));
    simsweep::run(&job, &options(3), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let rows = read_output(job.output_dir());
    (job, rows)
}

#[test]
fn a_torn_commit_record_is_not_committed_and_a_resume_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let (mut job, reference) = reference(dir.path());
    let reference_summary = fs::read(job.output_dir().join("summary.json")).unwrap();

    job.set_output_dir(dir.path().join("torn"));
    let torn = RunOptions { fault: Some((FaultPoint::TornCommitRecord, Some(4))), ..options(3) };
    let err = simsweep::run(&job, &torn, Arc::new(NoProgress), CancelToken::new()).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    let m = manifest(job.output_dir());
    assert!(!m.is_committed(4), "the torn batch is not committed");
    assert!(!m.finished);

    simsweep::run(&job, &options(5), Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert_same_output(&reference, &read_output(job.output_dir()), "after a torn record");
    assert_eq!(
        String::from_utf8(fs::read(job.output_dir().join("summary.json")).unwrap()).unwrap(),
        String::from_utf8(reference_summary).unwrap()
    );
}

#[test]
fn a_torn_tail_left_by_a_crash_is_ignored_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (mut job, reference) = reference(dir.path());
    job.set_output_dir(dir.path().join("crashed"));
    // Stop after the first batches: a run whose log holds records, then a torn one appended as
    // a crash in the middle of an append leaves it.
    let cancel = CancelToken::new();
    let observer = Arc::new(CancelAfterCommits { cancel: cancel.clone(), after: 2 });
    let report = simsweep::run(&job, &options(3), observer, cancel).unwrap();
    assert!(report.cancelled);
    let committed = manifest(job.output_dir()).batches.len();
    assert!(committed >= 2 && committed < 8, "{committed} batches committed");
    let mut next = manifest(job.output_dir()).batches[0].clone();
    next.index = 999;
    let log = job.output_dir().join("commits.log");
    commit_log::append_torn_record(&log, &next).unwrap();
    assert_eq!(manifest(job.output_dir()).batches.len(), committed, "torn record not read");

    simsweep::run(&job, &options(4), Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert_same_output(&reference, &read_output(job.output_dir()), "after a torn tail");
    assert_eq!(fs::metadata(&log).unwrap().len(), 0, "compacted at the end");
}

/// Cancels a run once `after` batches are committed.
struct CancelAfterCommits {
    cancel: CancelToken,
    after: u32,
}

impl simsweep::ProgressObserver for CancelAfterCommits {
    fn on_event(&self, event: &simsweep::ProgressEvent) {
        if let simsweep::ProgressEvent::BatchCommitted { progress, .. } = event {
            if progress.batches_committed >= self.after {
                self.cancel.cancel();
            }
        }
    }
}

#[test]
fn commits_append_and_only_the_run_start_and_end_rewrite_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = reference(dir.path());
    let out = job.output_dir();
    // Finished: compacted, every batch in manifest.json itself, the log empty.
    let text: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(text["format_version"], 3);
    assert_eq!(text["batches"].as_array().unwrap().len(), 8); // 23 sets in batches of 3
    assert_eq!(fs::metadata(out.join("commits.log")).unwrap().len(), 0);
}

#[test]
fn status_and_summary_answer_from_the_log_without_opening_batch_files() {
    let dir = tempfile::tempdir().unwrap();
    let (job, _) = reference(dir.path());
    let out = job.output_dir();
    let summary: Vec<simsweep::TargetSummary> =
        serde_json::from_slice(&fs::read(out.join("summary.json")).unwrap()).unwrap();
    // status lists targets by name, the summary in the job's order.
    let by_name = |mut v: Vec<simsweep::TargetSummary>| {
        v.sort_by(|a, b| a.target.cmp(&b.target));
        v
    };
    let status = simsweep::status(out).unwrap();
    assert_eq!(by_name(status.best), by_name(summary.clone()));
    // The best of the files themselves, read the format-1 way, are the same.
    let layout = simsweep::engine::output::OutputLayout::new(out);
    let m = manifest(out);
    for s in &summary {
        let from_files =
            simsweep::engine::summary::best_of_target(&layout, &m, &s.target, 10).unwrap();
        assert_eq!(&from_files, s);
        assert_eq!(s.best.len(), 10);
        assert_eq!(s.rows, 23);
    }
    // With every target file gone, status still answers the same: it opened none.
    fs::remove_dir_all(out.join("targets")).unwrap();
    assert_eq!(by_name(simsweep::status(out).unwrap().best), by_name(summary));
}

#[test]
fn a_format_1_output_is_read_and_upgraded_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut job, reference) = reference(dir.path());
    let summary = fs::read(job.output_dir().join("summary.json")).unwrap();
    // Rewrite the finished output as a format-1 engine left it, with its last two batches
    // not yet run: batches inline, no best lists, no commit log.
    let out = dir.path().join("v1");
    copy_dir(job.output_dir(), &out);
    let path = out.join("manifest.json");
    let mut v1: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v1["format_version"] = 1.into();
    v1.as_object_mut().unwrap().remove("best");
    v1["finished"] = false.into();
    let batches = v1["batches"].as_array_mut().unwrap();
    for b in batches.drain(6..) {
        let index = b["index"].as_u64().unwrap();
        for dataset in ["targets/prevalence", "targets/incidence", "failures"] {
            fs::remove_file(out.join(format!("{dataset}/batch-{index:05}.parquet"))).unwrap();
        }
        for output in fs::read_dir(out.join("model_outputs")).unwrap() {
            fs::remove_file(output.unwrap().path().join(format!("batch-{index:05}.parquet")))
                .unwrap();
        }
    }
    fs::write(&path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
    fs::remove_file(out.join("commits.log")).unwrap();
    fs::remove_file(out.join("summary.json")).unwrap();
    // Its target files have no `loss_se` column (standard errors came with format 3).
    for target in ["targets/prevalence", "targets/incidence"] {
        for file in fs::read_dir(out.join(target)).unwrap() {
            drop_column(&file.unwrap().path(), "loss_se");
        }
    }
    let old = manifest(&out);
    assert_eq!((old.format_version, old.batches.len(), old.has_best()), (1, 6, false));
    // status reads a format-1 output's target files.
    let status = simsweep::status(&out).unwrap();
    assert!(status.best.iter().all(|s| s.rows == 18), "{:?}", status.best);

    job.set_output_dir(out.clone());
    simsweep::run(&job, &options(3), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let upgraded = manifest(&out);
    // Format 2, not 3: its new target files have no `loss_se` either, so each dataset keeps
    // one schema; otherwise the rows are the reference's.
    assert_eq!((upgraded.format_version, upgraded.batches.len()), (2, 8));
    let without_se: Vec<(String, arrow::record_batch::RecordBatch)> = reference
        .iter()
        .map(|(d, rb)| match rb.schema().index_of("loss_se") {
            Ok(i) => {
                let mut rb = rb.clone();
                rb.remove_column(i);
                (d.clone(), rb)
            }
            Err(_) => (d.clone(), rb.clone()),
        })
        .collect();
    assert_same_output(&without_se, &read_output(&out), "a resumed format-1 output");
    let mut expected: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    for target in expected.as_array_mut().unwrap() {
        for best in target["best"].as_array_mut().unwrap() {
            best.as_object_mut().unwrap().remove("loss_se");
        }
    }
    let got: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(got, expected);
}

/// Rewrites the Parquet file `path` without its column `name`.
fn drop_column(path: &Path, name: &str) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader
        .map(|rb| {
            let mut rb = rb.unwrap();
            rb.remove_column(rb.schema().index_of(name).unwrap());
            rb
        })
        .collect();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        fs::File::create(path).unwrap(),
        batches[0].schema(),
        None,
    )
    .unwrap();
    for rb in &batches {
        writer.write(rb).unwrap();
    }
    writer.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
