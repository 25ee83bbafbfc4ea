//! The Parquet path: `commit_batch` (write, fsync, rename, fsync dir) against a bare
//! `ArrowWriter` writing the same rows with the same settings (`table_properties`: zstd level
//! `DEFAULT_ZSTD_LEVEL`, row groups of at most `DEFAULT_ROW_GROUP_BYTES` encoded bytes and
//! `DEFAULT_ROW_GROUP_ROWS` rows, no dictionary for floating-point columns), side by side.
//!
//! The rows are one batch of the overhead job's model output: 200 parameter sets × 10
//! replicates × 100 rows (`day`, `value`, `param_id`, `replicate`, `seed`), one record batch per
//! replicate as the writer receives them. Throughput is in rows.
//!
//! ```sh
//! cargo bench --bench parquet_writer
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use simsweep::engine::collect::model_output_schema;
use simsweep::engine::identity::param_id;
use simsweep::engine::model::noop::{NoopModel, NoopSettings};
use simsweep::engine::model::Simulator;
use simsweep::engine::output::{
    commit_batch, table_properties, writer_properties, BatchTable, Dataset, OutputLayout,
};
use simsweep::engine::params::{ParamValue, ParameterSet};

const POINTS: usize = 200;
const REPLICATES: u32 = 10;

fn model_output_batches() -> (arrow::datatypes::SchemaRef, Vec<RecordBatch>) {
    let model = NoopModel::new(NoopSettings::default()).expect("valid settings");
    let schema = model_output_schema(&model.outputs()[0].schema);
    let mut batches = Vec::new();
    for p in 0..POINTS {
        let mut params = ParameterSet::new();
        params.insert("a", ParamValue::Float(1.0 + p as f64 / 50.0));
        params.insert("b", ParamValue::Float(p as f64 / 20.0));
        let id = param_id(&params).expect("finite parameters");
        for r in 0..REPLICATES {
            let table = &model.simulate(&params, r * 7919 + p as u32).expect("noop runs").tables[0];
            let n = table.num_rows();
            let mut columns: Vec<ArrayRef> = table.columns().to_vec();
            columns.push(Arc::new(StringArray::from_iter_values(std::iter::repeat_n(id.hex(), n))));
            columns.push(Arc::new(UInt32Array::from_value(r, n)));
            columns.push(Arc::new(UInt32Array::from_value(r * 7919, n)));
            batches.push(RecordBatch::try_new(schema.clone(), columns).expect("schema matches"));
        }
    }
    (schema, batches)
}

/// The settings `commit_batch` uses for this schema (zstd level `DEFAULT_ZSTD_LEVEL`, row
/// groups ≤ `DEFAULT_ROW_GROUP_BYTES` and ≤ `DEFAULT_ROW_GROUP_ROWS`, no dictionary for
/// floating-point columns).
fn properties(schema: &arrow::datatypes::SchemaRef) -> WriterProperties {
    table_properties(&writer_properties().expect("valid settings"), schema)
}

fn bench(c: &mut Criterion) {
    let (schema, batches) = model_output_batches();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut group = c.benchmark_group("parquet_writer");
    group.throughput(Throughput::Elements(rows));
    group.sample_size(20);

    group.bench_function("commit_batch", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temporary directory");
                // As in a run after its first batch: the dataset's folder exists.
                let layout = OutputLayout::new(dir.path());
                std::fs::create_dir_all(layout.dataset_dir(&Dataset::ModelOutput("signal".into())))
                    .expect("create the dataset folder");
                let table = BatchTable {
                    dataset: Dataset::ModelOutput("signal".into()),
                    schema: schema.clone(),
                    batches: batches.clone(),
                };
                (dir, table)
            },
            |(dir, table)| {
                let layout = OutputLayout::new(dir.path());
                commit_batch(&layout, 0, vec![table]).expect("commit");
                dir
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("bare_arrow_writer_fsync", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temporary directory"),
            |dir| {
                let file = File::create(dir.path().join("bare.parquet")).expect("create");
                let mut writer = ArrowWriter::try_new(
                    BufWriter::new(file),
                    schema.clone(),
                    Some(properties(&schema)),
                )
                .expect("writer");
                for batch in &batches {
                    writer.write(batch).expect("write");
                }
                let file = writer.into_inner().expect("close").into_inner().expect("flush");
                file.sync_all().expect("fsync");
                dir
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("bare_arrow_writer_memory", |b| {
        b.iter(|| {
            let mut writer =
                ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties(&schema)))
                    .expect("writer");
            for batch in &batches {
                writer.write(batch).expect("write");
            }
            writer.into_inner().expect("close")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
