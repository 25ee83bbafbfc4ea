//! Aggregation and losses: the Aggregator's work per replicate ([`ReplicateCollector`] and
//! [`score_point`] over the overhead job's 6 targets), and the loss functions alone.
//!
//! ```sh
//! cargo bench --bench aggregation
//! ```

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use simsweep::engine::collect::{score_point, ReplicateCollector, SimReturn, SimTask};
use simsweep::engine::loss;
use simsweep::engine::plan::BatchRange;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = common::write_noop_job(dir.path(), 200, 10, 100, 200);
    let job = simsweep::load_job(&path).expect("load the overhead job");
    let batch = BatchRange { index: 0, points: 0..200 };
    let returns: Vec<SimReturn> = (0..200u64)
        .flat_map(|point| (0..job.replicates()).map(move |replicate| (point, replicate)))
        .map(|(point, replicate)| {
            let seed = simsweep::engine::collect::seed_of(&job.sweep(), point, replicate);
            let result = job.simulator().simulate(&job.sweep().params(point as usize), seed);
            SimReturn {
                task: SimTask { batch: batch.clone(), point, replicate, seed },
                result,
                failed_attempts: Vec::new(),
            }
        })
        .collect();

    let mut group = c.benchmark_group("aggregation");
    group.throughput(Throughput::Elements(returns.len() as u64));
    group.bench_function("collector_6_targets_per_replicate", |b| {
        b.iter_batched(
            || returns.clone(),
            |returns| {
                let mut collector = ReplicateCollector::new();
                let mut scored = 0;
                for ret in returns {
                    scored += usize::from(
                        collector.add(ret, &job.sweep(), job.replicates(), job.targets()).is_some(),
                    );
                }
                assert_eq!(scored, 200);
            },
            BatchSize::LargeInput,
        )
    });
    let replicates: Vec<(u32, u32, Option<_>)> = returns[..10]
        .iter()
        .map(|r| (r.task.replicate, r.task.seed, r.result.clone().ok()))
        .collect();
    group.throughput(Throughput::Elements(10));
    group.bench_function("score_point_10_replicates_6_targets", |b| {
        b.iter(|| score_point(batch.clone(), 0, &replicates, job.targets(), job.sweep()))
    });
    group.finish();

    let predicted: Vec<f64> = (0..20).map(|i| 3.0 + i as f64 * 0.4).collect();
    let observed: Vec<f64> = (0..20).map(|i| 4.0 + (i / 4) as f64).collect();
    let mut group = c.benchmark_group("losses_20_observations");
    group.throughput(Throughput::Elements(20));
    group.bench_function("mse", |b| b.iter(|| loss::mse(&predicted, &observed)));
    group.bench_function("poisson_nll", |b| b.iter(|| loss::poisson_nll(&predicted, &observed)));
    group.bench_function("negative_binomial_nll", |b| {
        b.iter(|| loss::negative_binomial_nll(&predicted, &observed, 10.0))
    });
    group.bench_function("logsumexp", |b| b.iter(|| loss::logsumexp(&predicted)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
