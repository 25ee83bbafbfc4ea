//! Cost of recording one committed batch, as a function of the batches already committed:
//! the commit log's append (`Manifest::commit`: one record, one `fdatasync`) against what
//! manifest format 1 did (`Manifest::record` + `write_atomic`: the whole manifest rewritten and
//! fsynced), side by side. 5 / 500 / 50,000 batches committed before = a 1K / 100K / 10M-set
//! job at batch size 200.
//!
//! ```sh
//! cargo bench --bench commit_log
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use simsweep::engine::output::{CommittedBatch, Manifest, OutputLayout};
use simsweep::engine::progress::{BestParameterSet, TargetSummary};

const BATCH_SIZE: u64 = 200;

/// A batch as the flu example records it: two targets and one model output, and its best 10
/// parameter sets per target (four parameters each).
fn batch(index: u32) -> CommittedBatch {
    let first = u64::from(index) * BATCH_SIZE;
    let best = ["in_bed", "convalescent"]
        .iter()
        .map(|target| TargetSummary {
            target: target.to_string(),
            best: (0..10)
                .map(|i| BestParameterSet {
                    param_id: format!("{:064x}", first + i),
                    point: first + i,
                    parameters: ["beta", "gamma", "mu_b", "mu_c"]
                        .iter()
                        .map(|p| {
                            (
                                p.to_string(),
                                simsweep::engine::params::ParamValue::Float(0.123456789 * i as f64),
                            )
                        })
                        .collect(),
                    loss: 100.0 + i as f64,
                    loss_se: Some(0.5),
                    n_failed: 0,
                })
                .collect(),
            rows: BATCH_SIZE,
            null_losses: 0,
            ..TargetSummary::default()
        })
        .collect();
    CommittedBatch {
        index,
        first_point: first,
        end_point: first + BATCH_SIZE,
        simulations: BATCH_SIZE * 20,
        failed: 0,
        rows: BTreeMap::from([
            ("failures".to_string(), 0),
            ("model_outputs/in_bed".to_string(), BATCH_SIZE * 20 * 15),
            ("targets/convalescent".to_string(), BATCH_SIZE),
            ("targets/in_bed".to_string(), BATCH_SIZE),
        ]),
        committed_at: "2026-12-03T00:00:00.000Z".to_string(),
        seconds: 0.05,
        best,
    }
}

/// A manifest of a sweep with `committed` batches already committed and compacted.
fn manifest_with(layout: &OutputLayout, committed: u32) -> Manifest {
    let planned = committed + 1_000_000;
    let mut m =
        Manifest::new("flu", "hash", BATCH_SIZE, u64::from(planned) * BATCH_SIZE, 20, 0, planned);
    for i in 0..committed {
        m.record(batch(i));
    }
    m.write_atomic(layout).expect("write the manifest");
    m
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_one_batch");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (committed, sets) in [(5u32, "1K"), (500, "100K"), (50_000, "10M")] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = OutputLayout::new(dir.path());
        let mut m = manifest_with(&layout, committed);
        let mut next = committed;
        group.bench_function(BenchmarkId::new("commit_log_append", format!("{sets}_sets")), |b| {
            b.iter(|| {
                m.commit(&layout, batch(next)).expect("commit");
                next += 1;
            })
        });
        let dir = tempfile::tempdir().expect("temporary directory");
        let layout = OutputLayout::new(dir.path());
        let mut m = manifest_with(&layout, committed);
        let mut next = committed;
        group.bench_function(
            BenchmarkId::new("format_1_manifest_rewrite", format!("{sets}_sets")),
            |b| {
                b.iter(|| {
                    m.record(batch(next));
                    m.write_atomic(&layout).expect("rewrite");
                    next += 1;
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
