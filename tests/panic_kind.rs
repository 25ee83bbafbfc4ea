//! A model that panics on chosen parameter sets: each such replicate is a failure of kind
//! `panic` carrying the panic's message, its target rows count it in `n_failed` with no loss,
//! and the run finishes.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, StringArray, UInt32Array};
use common::*;
use simsweep::engine::model::{OutputSpec, SimError, SimOutput, Simulator};
use simsweep::engine::params::ParameterSet;
use simsweep::{CancelToken, NoProgress, RunOptions};

/// The job's model, panicking for β > 1.
struct PanicsAboveOne(Arc<dyn Simulator>);

impl Simulator for PanicsAboveOne {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn parameter_names(&self) -> Vec<String> {
        self.0.parameter_names()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        self.0.outputs()
    }
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError> {
        let beta = params.get_f64("beta").unwrap();
        assert!(beta <= 1.0, "beta {beta} is above 1");
        self.0.simulate(params, seed)
    }
}

#[test]
fn a_panicking_model_fails_its_replicates_with_kind_panic_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = SmallJob::default().write(dir.path());
    let built_in = simsweep::load_job(&path).unwrap();
    // The same job with the host's own simulator: the built-in model, panicking for β > 1.
    let spec: simsweep::engine::spec::JobSpec =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let job = simsweep::JobBuilder::from_spec(spec, dir.path())
        .simulator(Arc::new(PanicsAboveOne(built_in.simulator().clone())), "panics-above-one-1")
        .build()
        .unwrap();
    assert_ne!(job.spec_hash(), built_in.spec_hash());
    let options = RunOptions {
        batch_size: NonZeroUsize::new(5).unwrap(),
        workers: NonZeroUsize::new(2).unwrap(),
        ..RunOptions::default()
    };
    let report = simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).unwrap();
    assert!(!report.cancelled);
    let panicking: Vec<usize> = (0..job.sweep().len())
        .filter(|&i| job.sweep().params(i).get_f64("beta").unwrap() > 1.0)
        .collect();
    assert!((1..23).contains(&panicking.len()), "{} of 23 sets panic", panicking.len());
    assert_eq!(report.progress.failed, 3 * panicking.len() as u64);

    // One failure row per replicate (a panic is not retried by default), with the message.
    let f = read_dataset(&dir.path().join("output/failures"));
    assert_eq!(f.num_rows(), 3 * panicking.len());
    let kind = f.column_by_name("kind").unwrap();
    let kind = kind.as_any().downcast_ref::<StringArray>().unwrap();
    let message = f.column_by_name("message").unwrap();
    let message = message.as_any().downcast_ref::<StringArray>().unwrap();
    let ids = f.column_by_name("param_id").unwrap();
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    let expected_ids: Vec<String> = panicking
        .iter()
        .flat_map(|&i| std::iter::repeat_n(job.sweep().param_id(i).to_string(), 3))
        .collect();
    let got_ids: Vec<String> = (0..f.num_rows()).map(|i| ids.value(i).to_string()).collect();
    assert_eq!(got_ids, expected_ids);
    for i in 0..f.num_rows() {
        assert_eq!(kind.value(i), "panic");
        let beta = job.sweep().params(panicking[i / 3]).get_f64("beta").unwrap();
        assert_eq!(message.value(i), format!("model panicked: beta {beta} is above 1"));
    }

    // Their target rows: 3 failed, no loss; every other set has a loss and none failed.
    let t = read_dataset(&dir.path().join("output/targets/prevalence"));
    let loss = t.column_by_name("loss").unwrap();
    let loss = loss.as_any().downcast_ref::<Float64Array>().unwrap();
    let n_failed = t.column_by_name("n_failed").unwrap();
    let n_failed = n_failed.as_any().downcast_ref::<UInt32Array>().unwrap();
    for row in 0..t.num_rows() {
        let panics = panicking.contains(&row);
        assert_eq!(n_failed.value(row), if panics { 3 } else { 0 }, "row {row}");
        assert_eq!(loss.is_null(row), panics, "row {row}");
    }
}
