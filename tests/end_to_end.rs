//! A small job run through the public API, read back and checked row by row; the same rows for
//! every batch size and worker count.

mod common;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Float64Array, Int64Array, ListArray, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use common::*;
use simsweep::engine::identity::{param_id, replicate_seed};
use simsweep::engine::params::{ParamValue, ParameterSet};
use simsweep::{CancelToken, NoProgress, ProgressEvent, ProgressObserver, RunOptions};
use statrs::distribution::{Discrete, NegativeBinomial};

/// `OBSERVED_CSV` (day, cases), as the prevalence target reads it.
const OBSERVED: [(i64, u64); 7] = [(2, 8), (4, 15), (6, 30), (8, 52), (10, 80), (12, 96), (14, 90)];

const DATASETS: [&str; 5] = [
    "model_outputs/prevalence",
    "model_outputs/incidence",
    "targets/prevalence",
    "targets/incidence",
    "failures",
];

fn options(batch_size: usize, workers: usize) -> RunOptions {
    RunOptions {
        batch_size: NonZeroUsize::new(batch_size).unwrap(),
        workers: NonZeroUsize::new(workers).unwrap(),
        ..RunOptions::default()
    }
}

fn run_small(dir: &Path, opts: &RunOptions) -> simsweep::Report {
    let job_path = SmallJob::default().write(dir);
    let job = simsweep::load_job(&job_path).unwrap();
    simsweep::run(&job, opts, Arc::new(NoProgress), CancelToken::new()).unwrap()
}

fn read_all(dir: &Path) -> Vec<RecordBatch> {
    DATASETS.iter().map(|d| read_dataset(&dir.join("output").join(d))).collect()
}

#[test]
fn same_rows_for_every_batch_size_and_worker_count() {
    let reference_dir = tempfile::tempdir().unwrap();
    run_small(reference_dir.path(), &options(200, 1));
    let reference = read_all(reference_dir.path());
    assert_eq!(reference[2].num_rows(), 23);
    for (batch_size, workers) in [(1, 1), (7, 1), (7, 4), (200, 4), (1, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let report = run_small(dir.path(), &options(batch_size, workers));
        assert_eq!(report.progress.batches_committed as usize, 23usize.div_ceil(batch_size));
        let got = read_all(dir.path());
        for (d, (a, b)) in DATASETS.iter().zip(reference.iter().zip(&got)) {
            assert_eq!(a, b, "{d} differs at batch size {batch_size}, {workers} workers");
        }
    }
}

#[test]
fn rows_match_the_model_and_the_losses_computed_directly() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_small(dir.path(), &options(7, 2));
    assert!(!report.cancelled);
    assert_eq!(report.progress.simulations_committed, 69);
    assert_eq!(report.progress.batches_committed, 4);
    let job = simsweep::load_job(&dir.path().join("job.toml")).unwrap();

    // targets/prevalence: one row per parameter set, in sweep order.
    let t = read_dataset(&dir.path().join("output/targets/prevalence"));
    let names: Vec<String> = t.schema().fields().iter().map(|f| f.name().to_string()).collect();
    assert_eq!(
        names,
        ["param_id", "beta", "gamma", "loss", "loss_se", "n_replicates", "n_failed", "seeds"]
    );
    let col = |name: &str| t.column_by_name(name).unwrap().clone();
    let ids = col("param_id");
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    let beta = col("beta");
    let beta = beta.as_any().downcast_ref::<Float64Array>().unwrap();
    let gamma = col("gamma");
    let gamma = gamma.as_any().downcast_ref::<Float64Array>().unwrap();
    let loss = col("loss");
    let loss = loss.as_any().downcast_ref::<Float64Array>().unwrap();
    let loss_se = col("loss_se");
    let loss_se = loss_se.as_any().downcast_ref::<Float64Array>().unwrap();
    let n_rep = col("n_replicates");
    let n_rep = n_rep.as_any().downcast_ref::<UInt32Array>().unwrap();
    let seeds = col("seeds");
    let seeds = seeds.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(t.num_rows(), 23);
    let prevalence_target = job.targets().iter().find(|t| t.name == "prevalence").unwrap();
    for row in 0..t.num_rows() {
        let mut params = ParameterSet::new();
        params.insert("beta", ParamValue::Float(beta.value(row)));
        params.insert("gamma", ParamValue::Float(gamma.value(row)));
        assert_eq!(params, job.sweep().params(row), "row {row} is not sweep point {row}");
        let id = param_id(&params).unwrap();
        assert_eq!(id, job.sweep().param_id(row));
        assert_eq!(ids.value(row), id.hex().as_str());
        assert_eq!(n_rep.value(row), 3);
        let row_seeds = seeds.value(row);
        let row_seeds = row_seeds.as_any().downcast_ref::<UInt32Array>().unwrap();
        let expected_seeds: Vec<u32> = (0..3).map(|i| replicate_seed(&id, i)).collect();
        assert_eq!(row_seeds.values().to_vec(), expected_seeds);
        // Recompute the loss from the model directly.
        let outputs: Vec<_> =
            expected_seeds.iter().map(|&s| job.simulator().simulate(&params, s).unwrap()).collect();
        // The likelihood aggregation by hand, with statrs as the reference for the negative
        // binomial (size k = 5, mean μ = the replicate's prevalence on the observed day):
        // loss = −(ln Σ_r exp(ll_r) − ln R), ll_r = Σ_t ln NB(y_t; k, p = k/(k+μ_rt)).
        let lls: Vec<f64> = outputs
            .iter()
            .map(|o| {
                let table = &o.tables[prevalence_target.output_index];
                let day = table.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let infected = table.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                OBSERVED
                    .iter()
                    .map(|&(d, y)| {
                        let at = day.values().iter().position(|&x| x == d).unwrap();
                        let mu = infected.value(at) as f64;
                        let nb = NegativeBinomial::new(5.0, 5.0 / (5.0 + mu)).unwrap();
                        nb.ln_pmf(y)
                    })
                    .sum()
            })
            .collect();
        let max = lls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let expected = if max == f64::NEG_INFINITY {
            f64::INFINITY
        } else {
            -(max + lls.iter().map(|ll| (ll - max).exp()).sum::<f64>().ln() - 3f64.ln())
        };
        let got = loss.value(row);
        assert!(
            got == expected || (got - expected).abs() <= 1e-12 * expected.abs(),
            "row {row}: {got} vs {expected} by hand"
        );
        // Its jackknife standard error by hand: the loss without each replicate in turn.
        let without = |i: usize| {
            let rest: Vec<f64> = (0..3).filter(|&j| j != i).map(|j| lls[j]).collect();
            let m = rest.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            -(m + rest.iter().map(|ll| (ll - m).exp()).sum::<f64>().ln() - 2f64.ln())
        };
        let theta: Vec<f64> = (0..3).map(without).collect();
        if expected.is_finite() && theta.iter().all(|t| t.is_finite()) {
            let mean = theta.iter().sum::<f64>() / 3.0;
            let se = (2.0 / 3.0 * theta.iter().map(|t| (t - mean).powi(2)).sum::<f64>()).sqrt();
            let got = loss_se.value(row);
            assert!((got - se).abs() <= 1e-9 * se.max(1.0), "row {row}: se {got} vs {se}");
        } else if !expected.is_finite() {
            assert!(loss_se.is_null(row), "row {row}: no standard error for a non-finite loss");
        }
    }

    // model_outputs/prevalence: the model's rows + param_id, replicate, seed, sorted by
    // (parameter set, replicate).
    let m = read_dataset(&dir.path().join("output/model_outputs/prevalence"));
    let names: Vec<String> = m.schema().fields().iter().map(|f| f.name().to_string()).collect();
    assert_eq!(names, ["day", "infected", "param_id", "replicate", "seed"]);
    assert_eq!(m.num_rows(), 23 * 3 * 15);
    let day = m.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let infected = m.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
    let mids = m.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    let rep = m.column(3).as_any().downcast_ref::<UInt32Array>().unwrap();
    let seed = m.column(4).as_any().downcast_ref::<UInt32Array>().unwrap();
    let mut row = 0;
    for point in 0..job.sweep().len() {
        let (id, params) = (job.sweep().param_id(point), job.sweep().params(point));
        for r in 0..3u32 {
            let s = replicate_seed(&id, r);
            let out = job.simulator().simulate(&params, s).unwrap();
            let table = &out.tables[0];
            let tday = table.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let tinf = table.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..table.num_rows() {
                assert_eq!(mids.value(row), id.hex().as_str());
                assert_eq!((rep.value(row), seed.value(row)), (r, s));
                assert_eq!((day.value(row), infected.value(row)), (tday.value(i), tinf.value(i)));
                row += 1;
            }
        }
    }
    assert_eq!(row, m.num_rows());

    // No failures, and a failures file per batch all the same (schema only).
    assert_eq!(read_dataset(&dir.path().join("output/failures")).num_rows(), 0);

    // The manifest lists every batch, finished.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("output/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["finished"], true);
    assert_eq!(manifest["batches"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["spec_hash"], job.spec_hash());

    // The report's best parameter sets are the smallest losses of the file.
    let mut losses: Vec<f64> =
        (0..23).filter(|&i| !loss.is_null(i)).map(|i| loss.value(i)).collect();
    losses.sort_by(f64::total_cmp);
    let best = &report.summary.iter().find(|s| s.target == "prevalence").unwrap().best;
    let reported: Vec<f64> = best.iter().map(|b| b.loss).collect();
    assert_eq!(reported, losses[..10].to_vec());
}

struct Recorder(Mutex<Vec<ProgressEvent>>);

impl ProgressObserver for Recorder {
    fn on_event(&self, event: &ProgressEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn progress_only_goes_forward_and_reaches_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob::default().write(dir.path());
    let job = simsweep::load_job(&job_path).unwrap();
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    simsweep::run(&job, &options(5, 2), recorder.clone(), CancelToken::new()).unwrap();
    let events = recorder.0.lock().unwrap();
    assert!(matches!(events[0], ProgressEvent::Started { .. }));
    let committed: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::BatchCommitted { progress, .. } => {
                Some((progress.batches_committed, progress.simulations_committed))
            }
            _ => None,
        })
        .collect();
    assert_eq!(committed.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(committed.windows(2).all(|w| w[0].1 < w[1].1));
    assert_eq!(committed.last().unwrap().1, 69);
}

#[test]
fn a_cancelled_run_resumes_to_the_same_rows() {
    let reference_dir = tempfile::tempdir().unwrap();
    run_small(reference_dir.path(), &options(3, 2));
    let reference = read_all(reference_dir.path());

    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob::default().write(dir.path());
    let job = simsweep::load_job(&job_path).unwrap();
    // Cancel as soon as the first batch is committed.
    struct CancelAfterFirst(CancelToken);
    impl ProgressObserver for CancelAfterFirst {
        fn on_event(&self, event: &ProgressEvent) {
            if matches!(event, ProgressEvent::BatchCommitted { .. }) {
                self.0.cancel();
            }
        }
    }
    let cancel = CancelToken::new();
    let report =
        simsweep::run(&job, &options(3, 1), Arc::new(CancelAfterFirst(cancel.clone())), cancel)
            .unwrap();
    assert!(report.cancelled);
    assert!(report.progress.batches_committed < 8);
    // Resume with another batch size and worker count.
    let report =
        simsweep::run(&job, &options(5, 2), Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert!(!report.cancelled);
    assert!(report.batches_resumed >= 1);
    assert_eq!(report.progress.simulations_committed, 69);
    let got = read_all(dir.path());
    for (d, (a, b)) in DATASETS.iter().zip(reference.iter().zip(&got)) {
        assert_eq!(a, b, "{d} differs after resume");
    }
}

/// An output written when a space's sweep was hashed set by set (spec hash v1) resumes under
/// today's hash: recognised by `Job::legacy_spec_hash`, its manifest upgraded, its rows kept;
/// a manifest of another job is still refused.
#[test]
fn output_hashed_set_by_set_resumes_and_its_manifest_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let job_path = SmallJob::default().write(dir.path());
    let job = simsweep::load_job(&job_path).unwrap();
    let opts = options(5, 2);
    simsweep::run(&job, &opts, Arc::new(NoProgress), CancelToken::new()).unwrap();
    let rows = read_all(dir.path());
    let manifest_path = dir.path().join("output/manifest.json");
    let read = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap()
    };
    // The manifest as the earlier build wrote it for this job.
    let legacy = job.legacy_spec_hash().expect("a space's sweep has a legacy hash");
    assert_ne!(legacy, job.spec_hash());
    let mut manifest = read();
    manifest["spec_hash"] = legacy.clone().into();
    manifest["spec_parts"] =
        serde_json::to_value(simsweep::engine::output::SpecIdentity::legacy_parts_of_job(&job))
            .unwrap();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    simsweep::run(&job, &opts, Arc::new(NoProgress), CancelToken::new()).unwrap();
    let upgraded = read();
    assert_eq!(upgraded["spec_hash"], job.spec_hash());
    assert_eq!(
        upgraded["spec_parts"],
        serde_json::to_value(simsweep::engine::output::SpecIdentity::of_job(&job).parts).unwrap()
    );
    assert_eq!(upgraded["batches"], manifest["batches"]);
    assert_eq!(read_all(dir.path()), rows);

    // Another job's hash is not taken for this one's.
    let mut other = read();
    other["spec_hash"] = "0".repeat(64).into();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&other).unwrap()).unwrap();
    let e = simsweep::run(&job, &opts, Arc::new(NoProgress), CancelToken::new()).unwrap_err();
    assert!(e.to_string().contains("holds the results of another job"), "{e}");
}
