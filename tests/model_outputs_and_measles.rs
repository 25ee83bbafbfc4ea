//! `model_outputs` selection through a whole run, and the measles example's job spec.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use simsweep::{CancelToken, NoProgress, RunOptions};

fn run(dir: &Path, extra_top: &str) -> simsweep::Job {
    let job_path = SmallJob { extra_top: extra_top.into(), ..SmallJob::default() }.write(dir);
    let job = simsweep::load_job(&job_path).unwrap();
    simsweep::run(&job, &RunOptions::default(), Arc::new(NoProgress), CancelToken::new()).unwrap();
    job
}

#[test]
fn only_selected_model_outputs_are_written_and_targets_still_scored() {
    let all = tempfile::tempdir().unwrap();
    run(all.path(), "");
    let some = tempfile::tempdir().unwrap();
    let job = run(some.path(), "model_outputs = [\"incidence\"]");
    assert_eq!(job.model_outputs(), ["incidence"]);
    let out = some.path().join("output");
    assert!(!out.join("model_outputs/prevalence").exists());
    assert_eq!(
        read_dataset(&out.join("model_outputs/incidence")),
        read_dataset(&all.path().join("output/model_outputs/incidence"))
    );
    // The `prevalence` target reads the unwritten output: its losses are unchanged.
    for target in ["targets/prevalence", "targets/incidence"] {
        assert_eq!(
            read_dataset(&out.join(target)),
            read_dataset(&all.path().join("output").join(target)),
            "{target}"
        );
    }

    let none = tempfile::tempdir().unwrap();
    run(none.path(), "model_outputs = []");
    let out = none.path().join("output");
    assert!(!out.join("model_outputs/prevalence").exists());
    assert!(!out.join("model_outputs/incidence").exists());
    assert_eq!(read_dataset(&out.join("targets/prevalence")).num_rows(), 23);
}

#[test]
fn measles_example_loads_and_its_target_aligns_with_the_model_weeks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/measles-london/job.toml");
    let job = simsweep::load_job(&path).unwrap();
    assert_eq!(job.simulator().name(), "seir_seasonal");
    assert_eq!(job.simulations(), 20_000);
    assert_eq!(job.model_outputs(), ["cases"]);
    let target = &job.targets()[0];
    assert_eq!(target.times.len(), 1096);
    assert_eq!((target.times[0], target.times[1095]), (1.0, 1096.0));
    assert_eq!((target.observed[0], target.observed[1095]), (82.0, 1157.0));

    let out = job.simulator().simulate(&job.sweep().params(0), 1).unwrap();
    let cases = &out.tables[0];
    assert_eq!(cases.num_rows(), 1096);
    let aligned = target.align(cases).expect("every observed week has a model week");
    let column = cases.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
    let model: Vec<f64> = column.values().iter().map(|&v| v as f64).collect();
    assert_eq!(aligned, model, "data week w is model week w");
    // The loss exists (it is +inf when a week with reports has 0 modelled cases in every
    // replicate: the negative binomial gives those reports probability 0).
    let loss = target.loss(&[cases]).unwrap().expect("aligned, so scored");
    assert!(loss > 0.0, "{loss}");
}
