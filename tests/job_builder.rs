//! `JobBuilder`: a job built in code is the job a file gives (same validation, same hash, same
//! rows); observations from an Arrow table; the host's own simulator; errors name the field.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use common::*;
use simsweep::engine::model::{ModelSpec, OutputSpec, SimError, SimOutput, Simulator};
use simsweep::engine::params::space::ParameterSpaceSpec;
use simsweep::engine::params::ParameterSet;
use simsweep::engine::spec::JobSpec;
use simsweep::engine::target::TargetSpec;
use simsweep::{CancelToken, EngineError, JobBuilder, NoProgress, RunOptions};

const MODEL: &str = "name = \"sir\"\npopulation = 1000\ninitial_infected = 10\ndays = 30";
const SPACE: &str = "sampler = \"latin_hypercube\"\ncount = 12\nseed = 4\n\
                     space = { beta = { min = 0.5, max = 3.0 }, gamma = { min = 0.1, max = 0.5 } }";
const TARGET: &str = "name = \"cases\"\noutput = \"prevalence\"\ncolumn = \"infected\"\n\
                      data = \"observed.csv\"\ndata_column = \"cases\"\ndata_time_column = \"day\"\n\
                      aggregation = \"likelihood\"\nloss = \"poisson\"";
const OBSERVED: [(i64, f64); 4] = [(3, 25.0), (5, 75.0), (7, 227.0), (9, 296.0)];

fn write_files(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from("day,cases\n");
    for (day, cases) in OBSERVED {
        csv.push_str(&format!("{day},{cases}\n"));
    }
    std::fs::write(dir.join("observed.csv"), csv).unwrap();
    let job = format!(
        "name = \"flu\"\nreplicates = 3\nbatch_size = 5\n[parameters]\n{SPACE}\n[model]\n{MODEL}\n\
         [[targets]]\n{TARGET}\n"
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

fn builder(dir: &Path) -> JobBuilder {
    let model: ModelSpec = toml::from_str(MODEL).unwrap();
    let space: ParameterSpaceSpec = toml::from_str(SPACE).unwrap();
    JobBuilder::new("flu", dir).replicates(3).batch_size(5).model(model).space(space)
}

fn observed_table() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("day", Arc::new(Int64Array::from_iter_values(OBSERVED.map(|o| o.0))) as _),
        ("cases", Arc::new(Float64Array::from_iter_values(OBSERVED.map(|o| o.1))) as _),
    ])
    .unwrap()
}

fn run(job: &simsweep::Job) -> Vec<RecordBatch> {
    simsweep::run(job, &RunOptions::for_job(job), Arc::new(NoProgress), CancelToken::new())
        .unwrap();
    ["model_outputs/prevalence", "targets/cases", "failures"]
        .iter()
        .map(|d| read_dataset(&job.output_dir().join(d)))
        .collect()
}

#[test]
fn a_built_job_is_the_job_its_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = simsweep::load_job(&write_files(dir.path())).unwrap();
    let target: TargetSpec = toml::from_str(TARGET).unwrap();
    let mut built = builder(dir.path()).target(target).build().unwrap();
    assert_eq!(built.spec_hash(), from_file.spec_hash());
    assert_eq!(built.sweep(), from_file.sweep());
    assert_eq!(built.targets(), from_file.targets());
    assert_eq!((built.name(), built.replicates()), ("flu", 3));
    assert_eq!(built.output_dir(), dir.path().join("output"));
    let file_rows = run(&from_file);
    built.set_output_dir(dir.path().join("built"));
    assert_eq!(run(&built), file_rows);
}

#[test]
fn observations_from_an_arrow_table() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = simsweep::load_job(&write_files(dir.path())).unwrap();
    let target: TargetSpec = toml::from_str(TARGET).unwrap();
    // `data` names no file: the table is read instead.
    let target = TargetSpec { data: "nowhere.csv".into(), ..target };
    let mut job =
        builder(dir.path()).target_table(target.clone(), observed_table()).build().unwrap();
    let t = &job.targets()[0];
    assert!(t.data_from_table);
    assert_eq!(
        (&t.times, &t.observed),
        (&from_file.targets()[0].times, &from_file.targets()[0].observed)
    );
    assert_eq!(t.data_file, dir.path().join("(table of target cases)"));
    // The hash covers the observations: the same table gives the same hash, another value
    // another one.
    let again = builder(dir.path()).target_table(target.clone(), observed_table()).build().unwrap();
    assert_eq!(again.spec_hash(), job.spec_hash());
    let mut other = OBSERVED;
    other[2].1 = 228.0;
    let other = RecordBatch::try_from_iter([
        ("day", Arc::new(Int64Array::from_iter_values(other.map(|o| o.0))) as _),
        ("cases", Arc::new(Float64Array::from_iter_values(other.map(|o| o.1))) as _),
    ])
    .unwrap();
    let changed = builder(dir.path()).target_table(target.clone(), other).build().unwrap();
    assert_ne!(changed.spec_hash(), job.spec_hash());
    // Same observations, same losses as the file's.
    let file_rows = run(&from_file);
    job.set_output_dir(dir.path().join("table"));
    assert_eq!(run(&job)[1], file_rows[1]);

    // A table without the data column: a data error naming the table and the column.
    let no_cases =
        RecordBatch::try_from_iter([("day", Arc::new(Int64Array::from_iter_values([1, 2])) as _)])
            .unwrap();
    let e = builder(dir.path()).target_table(target, no_cases).build().unwrap_err();
    let EngineError::Data { file, column, .. } = &e else { panic!("{e:?}") };
    assert_eq!(file, &dir.path().join("(table of target cases)"));
    assert_eq!(column.as_deref(), Some("cases"));
    assert!(e.to_string().contains("columns present are: day"), "{e}");
}

/// A host's model: `value = a·day + seed mod 7` for days 0..5.
struct Linear(SchemaRef);

impl Linear {
    fn new() -> Linear {
        Linear(Arc::new(Schema::new(vec![
            Field::new("day", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ])))
    }
}

impl Simulator for Linear {
    fn name(&self) -> &str {
        "linear"
    }
    fn parameter_names(&self) -> Vec<String> {
        vec!["a".into()]
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec { name: "series".into(), schema: self.0.clone() }]
    }
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError> {
        let a = params.get_f64("a").ok_or_else(|| SimError::Model("no `a`".into()))?;
        let value = (0..5).map(|d| a * d as f64 + f64::from(seed % 7));
        let table = RecordBatch::try_new(
            self.0.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..5)),
                Arc::new(Float64Array::from_iter_values(value)),
            ],
        )
        .map_err(|e| SimError::Model(e.to_string()))?;
        Ok(SimOutput { tables: vec![table] })
    }
}

#[test]
fn the_hosts_own_simulator_runs_and_is_hashed_by_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let space: ParameterSpaceSpec = toml::from_str(
        "sampler = \"grid\"\npoints_per_axis = 4\nspace = { a = { min = 0.0, max = 3.0 } }",
    )
    .unwrap();
    let build = |version: &str| {
        JobBuilder::new("host", dir.path())
            .replicates(2)
            .space(space.clone())
            .simulator(Arc::new(Linear::new()), version)
            .build()
            .unwrap()
    };
    let job = build("1");
    assert_eq!(job.spec_hash(), build("1").spec_hash());
    assert_ne!(job.spec_hash(), build("2").spec_hash());
    let rows = {
        simsweep::run(&job, &RunOptions::for_job(&job), Arc::new(NoProgress), CancelToken::new())
            .unwrap();
        read_dataset(&job.output_dir().join("model_outputs/series"))
    };
    // 4 sets × 2 replicates × 5 days, each row the model's value for its set and seed.
    assert_eq!(rows.num_rows(), 40);
    let col = |n: &str| rows.column_by_name(n).unwrap().clone();
    let (a_ids, seeds, days, values) = (col("param_id"), col("seed"), col("day"), col("value"));
    let ids: Vec<String> = (0..4).map(|i| job.sweep().param_id(i).to_string()).collect();
    let id_at = |r: usize| {
        let c = arrow::compute::cast(&a_ids, &DataType::Utf8).unwrap();
        c.as_any().downcast_ref::<StringArray>().unwrap().value(r).to_string()
    };
    for r in 0..rows.num_rows() {
        let set = ids.iter().position(|id| *id == id_at(r)).expect("a set of the sweep");
        let a = job.sweep().params(set).get_f64("a").unwrap();
        let seed = seeds.as_any().downcast_ref::<arrow::array::UInt32Array>().unwrap().value(r);
        let day = days.as_any().downcast_ref::<Int64Array>().unwrap().value(r);
        let value = values.as_any().downcast_ref::<Float64Array>().unwrap().value(r);
        assert_eq!(value, a * day as f64 + f64::from(seed % 7), "row {r}");
    }
}

#[test]
fn errors_name_the_field_as_a_job_file_would() {
    let dir = tempfile::tempdir().unwrap();
    let text = |e: EngineError| {
        assert!(matches!(e, EngineError::SpecInvalid { .. }), "{e:?}");
        e.to_string()
    };
    let t = text(JobBuilder::new("x", dir.path()).replicates(1).build().unwrap_err());
    assert!(t.contains("field `model`") && t.contains("JobBuilder::model"), "{t}");
    let model: ModelSpec = toml::from_str(MODEL).unwrap();
    let space: ParameterSpaceSpec = toml::from_str(SPACE).unwrap();
    let t = text(
        JobBuilder::new("x", dir.path()).model(model.clone()).space(space).build().unwrap_err(),
    );
    assert!(t.contains("field `replicates`") && t.contains("(JobBuilder)"), "{t}");
    let bad: ParameterSpaceSpec =
        toml::from_str("sampler = \"uniform\"\ncount = 3\nspace = { beta = { min = 2.0, max = 1.0 }, gamma = 0.2 }")
            .unwrap();
    let t = text(
        JobBuilder::new("x", dir.path()).replicates(1).model(model).space(bad).build().unwrap_err(),
    );
    assert!(t.contains("parameters.space.beta.min") && t.contains("inverted"), "{t}");
    // A job file's spec, with the host's simulator in place of its model.
    let path = write_files(dir.path());
    let spec: JobSpec = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t = text(
        JobBuilder::from_spec(spec, dir.path())
            .simulator(Arc::new(Linear::new()), "1")
            .build()
            .unwrap_err(),
    );
    assert!(t.contains("model `linear` has no parameter `beta`"), "{t}");
}
