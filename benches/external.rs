//! Per-task overhead of the external-model protocol: a no-op Python model
//! (`benches/noop_model.py`, one 1-row table per call) through one persistent worker, i.e. a
//! JSON request, a JSON header and one Arrow IPC stream back, and the checks on both sides:
//! `simulate` (one task per `execute`, as protocol version 1) and `simulate_many` of 64 tasks
//! (one `execute_many`, version 2; throughput counted in tasks). Needs python3 with pyarrow.
//! Run: `cargo bench --bench external`. Whole jobs against a plain Python loop:
//! `benches/external.sh`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use simsweep::engine::model::external::{ExternalModel, ExternalSettings};
use simsweep::engine::model::Simulator;
use simsweep::engine::params::{ParamValue, ParameterSet};

fn protocol_overhead(c: &mut Criterion) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/noop_model.py");
    let model = ExternalModel::new(ExternalSettings::new([
        "python3".to_string(),
        script.display().to_string(),
    ]))
    .expect("the no-op model needs python3 with pyarrow");
    let mut params = ParameterSet::new();
    params.insert("beta", ParamValue::Float(1.0));
    let mut group = c.benchmark_group("external");
    group.throughput(Throughput::Elements(1));
    let mut seed = 0u32;
    group.bench_function("noop_python_task", |b| {
        b.iter(|| {
            seed = seed.wrapping_add(1);
            model.simulate(&params, seed).expect("runs")
        })
    });
    let tasks: Vec<(&ParameterSet, u32)> = (0..64).map(|s| (&params, s)).collect();
    group.throughput(Throughput::Elements(tasks.len() as u64));
    group.bench_function("noop_python_64_tasks_per_message", |b| {
        b.iter(|| {
            let results = model.simulate_many(&tasks).expect("runs");
            assert!(results.iter().all(Result::is_ok));
            results
        })
    });
    group.finish();
}

criterion_group!(benches, protocol_overhead);
criterion_main!(benches);
