//! The message path: whole runs of the no-op model through Batcher → SimWorker ×W →
//! Aggregator → ParquetWriter, committed to Parquet. Throughput is in simulations.
//!
//! - `noop_1row_no_targets`: 1-row tables and no target, so the cost is the messages and
//!   bookkeeping per task (the Parquet files are tiny);
//! - `noop_100rows_6_targets`: the overhead job's shape (100 rows per replicate, 6 targets).
//!
//! Both run 1,000 parameter sets × 10 replicates at batch size 200 with the default workers.
//!
//! ```sh
//! cargo bench --bench dataflow
//! ```

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use simsweep::{CancelToken, NoProgress, RunOptions};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dataflow");
    group.sample_size(10);
    for (name, rows, targets) in
        [("noop_1row_no_targets", 1, false), ("noop_100rows_6_targets", 100, true)]
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = common::write_noop_job(dir.path(), 1000, 10, rows, 200);
        let text = std::fs::read_to_string(&path).expect("read the job");
        let mut spec: simsweep::engine::spec::JobSpec = toml::from_str(&text).expect("a job spec");
        if !targets {
            spec.targets.clear();
        }
        let job = spec.resolve(&path).expect("a valid job");
        group.throughput(Throughput::Elements(job.simulations()));
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let out = tempfile::tempdir().expect("temporary directory");
                    let mut job = job.clone();
                    job.set_output_dir(out.path().join("output"));
                    (out, job)
                },
                |(out, job)| {
                    let report = simsweep::run(
                        &job,
                        &RunOptions::default(),
                        Arc::new(NoProgress),
                        CancelToken::new(),
                    )
                    .expect("run");
                    assert_eq!(report.progress.simulations_committed, job.simulations());
                    out
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
