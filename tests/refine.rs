//! The refine step: which sets it re-runs, with which seeds, its losses and standard errors;
//! deterministic across batch sizes and workers, and stopped hard then resumed it gives the
//! same rows as a run in one go.

mod common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{Array, Float64Array, ListArray, StringArray, UInt32Array};
use common::*;
use simsweep::engine::identity::{param_id, replicate_seed};
use simsweep::engine::params::{ParamValue, ParameterSet};
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunOptions};

const TOP_K: usize = 3;
const REFINE_REPLICATES: u32 = 40;

fn write_job(dir: &Path) -> std::path::PathBuf {
    let job = SmallJob {
        targets: format!(
            "{TARGET_PREVALENCE}\n{TARGET_INCIDENCE}\n[refine]\ntop_k = {TOP_K}\nreplicates = \
             {REFINE_REPLICATES}\n"
        ),
        ..SmallJob::default()
    };
    job.write(dir)
}

fn options(batch_size: usize, workers: usize) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(batch_size).unwrap(),
        workers: NonZeroUsize::new(workers).unwrap(),
        ..RunOptions::default()
    }
}

const REFINE_DATASETS: [&str; 5] = [
    "refine/targets/prevalence",
    "refine/targets/incidence",
    "refine/model_outputs/prevalence",
    "refine/model_outputs/incidence",
    "refine/failures",
];

fn refined_rows(dir: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    REFINE_DATASETS.iter().map(|d| read_dataset(&dir.join("output").join(d))).collect()
}

fn strings(a: &dyn Array) -> Vec<String> {
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn floats(a: &dyn Array) -> Vec<Option<f64>> {
    let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
    (0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))).collect()
}

#[test]
fn refine_reruns_each_targets_best_with_fresh_seeds_and_standard_errors() {
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&write_job(dir.path())).unwrap();
    let report = simsweep::run(&job, &options(5, 2), Arc::new(NoProgress), CancelToken::new())
        .expect("runs");
    let refined = report.refined.as_ref().expect("a refine step ran");
    assert!(refined.finished && !report.cancelled);
    assert_eq!((refined.replicates, refined.first_replicate), (REFINE_REPLICATES, 3));
    assert_eq!(refined.output_dir, dir.path().join("output/refine"));

    // The sets: the union of each target's 3 best finite sweep losses, read from the sweep's
    // own target files (not from the report).
    let mut expected_ids: Vec<String> = Vec::new();
    for target in ["prevalence", "incidence"] {
        let t = read_dataset(&dir.path().join("output/targets").join(target));
        let ids = strings(t.column_by_name("param_id").unwrap().as_ref());
        let losses = floats(t.column_by_name("loss").unwrap().as_ref());
        let mut ranked: Vec<(f64, usize)> = losses
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.filter(|l| l.is_finite()).map(|l| (l, i)))
            .collect();
        ranked.sort_by(|a, b| a.partial_cmp(b).unwrap());
        expected_ids.extend(ranked.iter().take(TOP_K).map(|&(_, i)| ids[i].clone()));
    }
    expected_ids.sort();
    expected_ids.dedup();
    assert!(expected_ids.len() >= TOP_K);
    assert_eq!(refined.parameter_sets as usize, expected_ids.len());

    let t = read_dataset(&dir.path().join("output/refine/targets/prevalence"));
    let mut ids = strings(t.column_by_name("param_id").unwrap().as_ref());
    let names: Vec<String> = t.schema().fields().iter().map(|f| f.name().to_string()).collect();
    assert_eq!(
        names,
        ["param_id", "beta", "gamma", "loss", "loss_se", "n_replicates", "n_failed", "seeds"]
    );
    let n_rep = t.column_by_name("n_replicates").unwrap();
    let n_rep = n_rep.as_any().downcast_ref::<UInt32Array>().unwrap();
    assert!(n_rep.iter().all(|n| n == Some(REFINE_REPLICATES)));
    // Seeds: replicate numbers 3 … 42 of each set (the sweep used 0 … 2).
    let seeds = t.column_by_name("seeds").unwrap();
    let seeds = seeds.as_any().downcast_ref::<ListArray>().unwrap();
    let beta = floats(t.column_by_name("beta").unwrap().as_ref());
    let gamma = floats(t.column_by_name("gamma").unwrap().as_ref());
    for (row, hex) in ids.iter().enumerate() {
        let mut set = ParameterSet::new();
        set.insert("beta", ParamValue::Float(beta[row].unwrap()));
        set.insert("gamma", ParamValue::Float(gamma[row].unwrap()));
        let id = param_id(&set).unwrap();
        assert_eq!(&id.hex().to_string(), hex, "the refined set is the swept one");
        let list = seeds.value(row);
        let got: Vec<u32> = list.as_any().downcast_ref::<UInt32Array>().unwrap().values().to_vec();
        let want: Vec<u32> = (3..3 + REFINE_REPLICATES).map(|r| replicate_seed(&id, r)).collect();
        assert_eq!(got, want, "row {row}");
    }
    // Every refined loss has a finite standard error (40 replicates).
    let se = floats(t.column_by_name("loss_se").unwrap().as_ref());
    assert!(se.iter().all(|s| s.is_some_and(|s| s.is_finite() && s > 0.0)), "{se:?}");
    ids.sort();
    assert_eq!(ids, expected_ids);

    // The report ranks by refined loss, with the standard error of each.
    let prevalence = &refined.summary[0];
    assert_eq!(prevalence.target, "prevalence");
    let losses = floats(t.column_by_name("loss").unwrap().as_ref());
    let best = losses.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(prevalence.best[0].loss, best);
    assert!(prevalence.best[0].loss_se.is_some());
    assert!(prevalence.best.windows(2).all(|w| w[0].loss <= w[1].loss));

    // Beside each refined set, its sweep loss for every target, as the sweep's files have it.
    for (k, target) in ["prevalence", "incidence"].iter().enumerate() {
        let sweep = read_dataset(&dir.path().join("output/targets").join(target));
        let sweep_ids = strings(sweep.column_by_name("param_id").unwrap().as_ref());
        let sweep_losses = floats(sweep.column_by_name("loss").unwrap().as_ref());
        assert_eq!(refined.sweep[k].target, *target);
        assert_eq!(refined.sweep[k].best.len(), expected_ids.len(), "every refined set");
        for b in &refined.sweep[k].best {
            let at = sweep_ids.iter().position(|i| *i == b.param_id).unwrap();
            assert_eq!(Some(b.loss), sweep_losses[at], "{target} {}", b.param_id);
        }
    }

    // Run again: the sweep and its refinement are both found finished; nothing changes.
    let before = refined_rows(dir.path());
    let again = simsweep::run(&job, &options(5, 2), Arc::new(NoProgress), CancelToken::new())
        .expect("runs");
    assert_eq!(again.refined.unwrap().summary, refined.summary);
    assert_eq!(refined_rows(dir.path()), before);
}

#[test]
fn refined_rows_are_the_same_for_any_batch_size_and_after_a_hard_stop() {
    let reference = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&write_job(reference.path())).unwrap();
    simsweep::run(&job, &options(100, 1), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let expected = refined_rows(reference.path());
    assert!(expected[0].num_rows() >= TOP_K);

    for (batch_size, workers) in [(1, 2), (2, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let job = simsweep::load_job(&write_job(dir.path())).unwrap();
        simsweep::run(
            &job,
            &options(batch_size, workers),
            Arc::new(NoProgress),
            CancelToken::new(),
        )
        .unwrap();
        assert_eq!(refined_rows(dir.path()), expected, "batch size {batch_size}");
    }

    // Stopped hard (`cancel_now`) as soon as the refine step's first batch is committed, then
    // resumed: the same refined rows.
    struct StopAtFirstRefineCommit {
        cancel: CancelToken,
        commits: AtomicUsize,
    }
    impl ProgressObserver for StopAtFirstRefineCommit {
        fn on_event(&self, event: &ProgressEvent) {
            if let ProgressEvent::BatchCommitted { job_id, .. } = event {
                if job_id.ends_with("/refine") && self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
                    self.cancel.cancel_now();
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&write_job(dir.path())).unwrap();
    let cancel = CancelToken::new();
    let observer =
        Arc::new(StopAtFirstRefineCommit { cancel: cancel.clone(), commits: AtomicUsize::new(0) });
    let stopped = simsweep::run(&job, &options(1, 2), observer, cancel).expect("stops cleanly");
    assert!(stopped.cancelled);
    let partial = stopped.refined.expect("the refine step started");
    assert!(!partial.finished);
    let committed = read_dataset(&dir.path().join("output/refine/targets/prevalence")).num_rows();
    assert!(committed >= 1 && committed < expected[0].num_rows(), "{committed} rows");
    let resumed =
        simsweep::run(&job, &options(1, 2), Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert!(resumed.refined.unwrap().finished);
    assert_eq!(refined_rows(dir.path()), expected);
}

#[test]
fn a_restarted_sweep_drops_its_earlier_refinement() {
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&write_job(dir.path())).unwrap();
    simsweep::run(&job, &options(5, 1), Arc::new(NoProgress), CancelToken::new()).unwrap();
    let marker = dir.path().join("output/refine/targets/prevalence/batch-00099.parquet");
    std::fs::write(&marker, b"not a batch of this refinement").unwrap();
    let restart = RunOptions { restart: true, ..options(5, 1) };
    let report = simsweep::run(&job, &restart, Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert!(report.refined.unwrap().finished);
    assert!(!marker.exists(), "the earlier refine output was deleted with the sweep");
}

#[test]
fn refine_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (refine, field) in [
        ("top_k = 0\nreplicates = 10", "refine.top_k"),
        ("top_k = 3\nreplicates = 1", "refine.replicates"),
    ] {
        let job = SmallJob {
            targets: format!("{TARGET_PREVALENCE}\n[refine]\n{refine}\n"),
            ..SmallJob::default()
        };
        let err = simsweep::load_job(&job.write(dir.path())).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains(field), "{text}");
    }
    let job = SmallJob {
        targets: "[refine]\ntop_k = 3\nreplicates = 10\n".into(),
        ..SmallJob::default()
    };
    let err = simsweep::load_job(&job.write(dir.path())).expect_err("refused");
    assert!(err.to_string().contains("no target"), "{err}");
}

#[test]
fn measurement_and_method_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let with = |extra: &str| {
        let job = SmallJob {
            targets: TARGET_PREVALENCE
                .replace("dispersion = 5.0", &format!("dispersion = 5.0\nfloor = 1e-6\n{extra}")),
            ..SmallJob::default()
        };
        simsweep::load_job(&job.write(dir.path())).map(|_| ()).map_err(|e| e.to_string())
    };
    for (extra, want) in [
        ("reporting_fraction = \"rhoo\"", "targets[0].reporting_fraction"),
        ("reporting_fraction = \"\"", "targets[0].reporting_fraction"),
        ("reporting_fraction = 0.0", "targets[0].reporting_fraction"),
    ] {
        let err = with(extra).expect_err(extra);
        assert!(err.contains(want), "{extra}: {err}");
    }
    // A fraction of 0 in the space is refused like a written one.
    let job = SmallJob {
        targets: TARGET_PREVALENCE
            .replace("dispersion = 5.0", "dispersion = 5.0\nreporting_fraction = \"rho\""),
        ..SmallJob::default()
    };
    let text = job.toml().replace("[parameters.space]\n", "[parameters.space]\nrho = 0.0\n");
    std::fs::write(dir.path().join("job.toml"), text).unwrap();
    let err = simsweep::load_job(&dir.path().join("job.toml")).unwrap_err().to_string();
    assert!(err.contains("reporting fraction") && err.contains("(0, 1]"), "{err}");
    // A method that does not exist is blamed on `method`, not on `name`.
    let text = job.toml().replace("name = \"sir\"", "name = \"sir_bed\"\nmethod = \"exact\"");
    std::fs::write(dir.path().join("job.toml"), text).unwrap();
    let err = simsweep::load_job(&dir.path().join("job.toml")).unwrap_err().to_string();
    assert!(err.contains("method") && !err.contains("key `name`"), "{err}");
}
