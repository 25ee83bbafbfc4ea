//! Writing one batch's Parquet files and committing them atomically.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::layout::{Dataset, FaultPoint, OutputLayout};
use super::{create_dir_durable, fsync_dir};
use crate::error::{EngineError, Result};

/// Largest encoded size of one Parquet row group, in bytes (the writer's estimate of the
/// encoded, compressed size).
///
/// The writer buffers a whole row group (encoded, compressed columns) before writing it, so this
/// bounds its memory per open file whatever the width of the rows; sizing by bytes rather than
/// rows keeps row groups large for narrow tables (readers skip and parallelise by row group)
/// and bounded for wide ones.
pub const DEFAULT_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Most rows in one Parquet row group (parquet's own default), whatever their size.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Rows handed to the Parquet writer at a time: the byte limit is checked between slices, so a
/// row group exceeds [`DEFAULT_ROW_GROUP_BYTES`] by at most one slice.
const WRITE_SLICE_ROWS: usize = 64 * 1024;

/// zstd compression level of the Parquet files: parquet's default level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The rows of one dataset for one batch: becomes one Parquet file.
#[derive(Debug, Clone)]
pub struct BatchTable {
    /// Which dataset (and so which folder) the rows belong to.
    pub dataset: Dataset,
    /// The file's schema. Plain Arrow types only (Utf8, Int64, UInt32, Float64,
    /// `List<UInt32>`, Boolean) so that pyarrow, DuckDB and Polars read the files. Every record
    /// batch has these columns, except that a `Utf8` column may be given as
    /// `Dictionary(UInt32, Utf8)` (cheaper in memory for repeated strings such as `param_id`):
    /// the file stores it as a plain string column, dictionary-encoded by Parquet as any
    /// string column is.
    pub schema: SchemaRef,
    /// The rows, possibly none: the file is written with the schema and no rows.
    pub batches: Vec<RecordBatch>,
}

/// Writes every table of batch `index` and commits them; returns the rows written per dataset,
/// in the order of `tables`.
///
/// Each table is written zstd-compressed, in row groups of at most [`DEFAULT_ROW_GROUP_BYTES`]
/// encoded bytes and [`DEFAULT_ROW_GROUP_ROWS`] rows, to `.batch-NNNNN.parquet.tmp` in its dataset folder (created if missing), and the
/// file is fsynced. Then each is renamed to `batch-NNNNN.parquet` and every folder touched is
/// fsynced. The batch is not committed until the manifest lists it (see the module
/// documentation): call [`crate::output::Manifest::write_atomic`] next.
///
/// An existing file of the same name is replaced (a batch redone after a crash).
///
/// # Errors
/// - [`EngineError::Io`] when a file or folder cannot be created, written, synced or renamed,
///   when two tables name the same dataset, or when a dataset name is not a plain folder name
///   ([`Dataset::is_valid_name`]). Temporary files already written are removed (best effort).
/// - [`EngineError::Parquet`] when a record batch does not match its table's schema or the
///   schema has a type Parquet cannot store.
pub fn commit_batch(
    layout: &OutputLayout,
    index: u32,
    tables: Vec<BatchTable>,
) -> Result<Vec<(Dataset, u64)>> {
    check_datasets(layout, &tables)?;
    let props = writer_properties()?;

    // Protocol step 1 (docs/commit-protocol.md): every file under a temporary name, fsynced, so
    // no final name ever points to bytes not on disk.
    // The files of a batch are independent: encode and sync them on parallel threads (a batch
    // of a model with several outputs has several files of the same size).
    let tmps: Vec<PathBuf> =
        tables.iter().map(|t| layout.batch_tmp_file(&t.dataset, index)).collect();
    let results = write_tables_parallel(layout, &tables, &tmps, &props);
    let mut written: Vec<(Dataset, u64, PathBuf)> = Vec::with_capacity(tables.len());
    for ((table, tmp), result) in tables.into_iter().zip(tmps.iter()).zip(results) {
        match result {
            Ok(rows) => {
                layout.check_fault(FaultPoint::AfterTempWrite, tmp, |b| b == index)?;
                written.push((table.dataset, rows, tmp.clone()));
            }
            Err(e) => {
                remove_best_effort(tmps.iter().map(PathBuf::as_path));
                return Err(e);
            }
        }
    }

    // Step 2: atomic renames to the final names. A crash from here to the manifest's rename
    // leaves files the manifest does not list; the next run deletes and redoes them.
    let mut dirs = BTreeSet::new();
    for (dataset, _, tmp) in &written {
        let dest = layout.batch_file(dataset, index);
        std::fs::rename(tmp, &dest).map_err(|e| EngineError::io(&dest, e))?;
        layout.check_fault(FaultPoint::AfterRename, &dest, |b| b == index)?;
        dirs.insert(layout.dataset_dir(dataset));
    }
    // Step 3: fsync the folders so the renames survive a power loss. Step 4 (the manifest) is
    // the caller's: until then the batch is not committed.
    for dir in &dirs {
        fsync_dir(dir)?;
    }

    tracing::debug!(batch = index, files = written.len(), "batch files committed");
    Ok(written.into_iter().map(|(dataset, rows, _)| (dataset, rows)).collect())
}

/// Writes `tables[i]` to `tmps[i]` for every `i`, on up to `available_parallelism` threads;
/// the results are in the order of `tables`.
///
/// The files are encoded in parallel; a large file's columns are too, with the threads the
/// large files leave (a model with one output has one large file per batch: its columns get
/// every thread; a model with as many outputs as threads, none).
fn write_tables_parallel(
    layout: &OutputLayout,
    tables: &[BatchTable],
    tmps: &[PathBuf],
    props: &WriterProperties,
) -> Vec<Result<u64>> {
    let large = tables.iter().filter(|t| is_large(&t.batches)).count();
    let column_threads = (encoding_threads() / large.max(1)).max(1);
    let write = |i: usize| {
        let table = &tables[i];
        let props = table_properties(props, &table.schema);
        create_dir_durable(&layout.dataset_dir(&table.dataset)).and_then(|()| {
            write_parquet_on(&tmps[i], &table.schema, &table.batches, props, column_threads)
        })
    };
    let threads = encoding_threads().min(tables.len());
    if threads <= 1 {
        return (0..tables.len()).map(write).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<u64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= tables.len() {
                            break done;
                        }
                        done.push((i, write(i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(done) => done,
                // A panic inside the Parquet encoder: resume it on this thread.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Refuses duplicate datasets and names that are not plain folder names.
fn check_datasets(layout: &OutputLayout, tables: &[BatchTable]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for table in tables {
        let dir = layout.dataset_dir(&table.dataset);
        let problem = if table.dataset.name().is_some_and(|n| !Dataset::is_valid_name(n)) {
            "is not a plain folder name (no `/`, `\\`, NUL or leading `.`)"
        } else if !seen.insert(&table.dataset) {
            "is given twice in one batch"
        } else {
            continue;
        };
        let message = format!("dataset `{}` {problem}", table.dataset);
        return Err(EngineError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
        ));
    }
    Ok(())
}

/// The writer settings of every batch file (before [`table_properties`]): zstd at
/// [`DEFAULT_ZSTD_LEVEL`], row groups of at most [`DEFAULT_ROW_GROUP_BYTES`] encoded bytes and
/// [`DEFAULT_ROW_GROUP_ROWS`] rows.
pub fn writer_properties() -> Result<WriterProperties> {
    sized_writer_properties(DEFAULT_ROW_GROUP_BYTES, DEFAULT_ROW_GROUP_ROWS)
}

fn sized_writer_properties(
    row_group_bytes: usize,
    row_group_rows: usize,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(DEFAULT_ZSTD_LEVEL)
        .map_err(|source| EngineError::Parquet { path: PathBuf::new(), source })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_bytes(Some(row_group_bytes.max(1)))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build())
}

/// `props` with dictionary encoding turned off for the floating-point columns of `schema`.
///
/// Model outputs' floating-point values rarely repeat, so a dictionary only costs: the writer
/// hashes every value into it until it outgrows its page limit and falls back to plain
/// encoding, for every row group. Integer and string columns (counts, days, `param_id`) keep
/// their dictionaries.
pub fn table_properties(props: &WriterProperties, schema: &SchemaRef) -> WriterProperties {
    let mut builder = props.clone().into_builder();
    for field in schema.fields() {
        let column = || ColumnPath::from(field.name().as_str());
        if matches!(field.data_type(), DataType::Float16 | DataType::Float32 | DataType::Float64) {
            builder = builder.set_column_dictionary_enabled(column(), false);
        }
        // The run columns simsweep adds: runs of one value per replicate (model outputs) or
        // one value per row (targets). Delta encodings store a run in a few bytes without the
        // dictionary's hash per row.
        match (field.name().as_str(), field.data_type()) {
            ("param_id", DataType::Utf8) => {
                builder = builder
                    .set_column_dictionary_enabled(column(), false)
                    .set_column_encoding(column(), Encoding::DELTA_BYTE_ARRAY);
            }
            ("replicate" | "seed", DataType::UInt32) => {
                builder = builder
                    .set_column_dictionary_enabled(column(), false)
                    .set_column_encoding(column(), Encoding::DELTA_BINARY_PACKED);
            }
            _ => {}
        }
    }
    builder.build()
}

/// Rows from which a file given as one record batch has its columns encoded on several threads
/// ([`write_columns_parallel`]); below it, one thread encodes the file.
pub const PARALLEL_ENCODING_MIN_ROWS: usize = 32 * 1024;

/// [`write_parquet_on`] with every encoding thread (tests).
#[cfg(test)]
fn write_parquet(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<u64> {
    write_parquet_on(path, schema, batches, props, encoding_threads())
}

/// True for a table given as one record batch of at least [`PARALLEL_ENCODING_MIN_ROWS`]
/// rows: its columns are worth encoding on several threads.
fn is_large(batches: &[RecordBatch]) -> bool {
    matches!(batches, [batch] if batch.num_rows() >= PARALLEL_ENCODING_MIN_ROWS)
}

/// Threads that encode a batch's files: `available_parallelism`, read once per process (on
/// Linux each call reads the cgroup's CPU quota files).
fn encoding_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Writes `batches` to a new file `path` and fsyncs it; returns the number of rows.
///
/// One large record batch (a model output's rows of a batch) has its column chunks encoded on
/// up to `threads` threads ([`write_columns_parallel`]); other tables go through one
/// `ArrowWriter`. Both give the same rows, encodings and compression.
fn write_parquet_on(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
    threads: usize,
) -> Result<u64> {
    let parquet_err = |source| EngineError::Parquet { path: path.to_path_buf(), source };
    let limits = RowGroupLimits {
        rows: props.max_row_group_row_count().unwrap_or(usize::MAX).max(1),
        bytes: props.max_row_group_bytes().unwrap_or(usize::MAX).max(1),
    };
    let file = File::create(path).map_err(|e| EngineError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(BufWriter::new(file), schema.clone(), Some(props))
        .map_err(parquet_err)?;
    if let [batch] = batches {
        if is_large(batches) && schema.fields().len() > 1 && threads > 1 {
            let (file_writer, factory) = writer.into_serialized_writer().map_err(parquet_err)?;
            let rows =
                write_columns_parallel(file_writer, &factory, schema, batch, limits, threads)
                    .map_err(parquet_err)?;
            let file = rows.1.into_inner().map_err(|e| EngineError::io(path, e.into_error()))?;
            file.sync_all().map_err(|e| EngineError::io(path, e))?;
            return Ok(rows.0);
        }
    }
    let mut rows = 0u64;
    for batch in batches {
        // In slices, so the writer can measure the row size and close a row group by bytes.
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = WRITE_SLICE_ROWS.min(batch.num_rows() - offset);
            writer.write(&batch.slice(offset, len)).map_err(parquet_err)?;
            offset += len;
        }
        rows += batch.num_rows() as u64;
    }
    let buffered = writer.into_inner().map_err(parquet_err)?;
    let file = buffered.into_inner().map_err(|e| EngineError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| EngineError::io(path, e))?;
    Ok(rows)
}

/// The row group limits of a file's writer properties.
#[derive(Debug, Clone, Copy)]
struct RowGroupLimits {
    rows: usize,
    bytes: usize,
}

/// Writes `batch` through `file_writer` in row groups as the serial path makes them: whole
/// slices of [`WRITE_SLICE_ROWS`] rows up to `limits.bytes` (here by the batch's in-memory
/// bytes per row, which is not less than the encoded size the serial path measures), at most
/// `limits.rows`. Each column chunk of a row group is encoded on one of `threads` threads
/// (arrow-rs's `ArrowColumnWriter`, one per column, taken in turn), then the chunks are
/// appended in schema order. Returns the rows written and the finished file's writer.
fn write_columns_parallel(
    mut file_writer: parquet::file::writer::SerializedFileWriter<BufWriter<File>>,
    factory: &parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    batch: &RecordBatch,
    limits: RowGroupLimits,
    threads: usize,
) -> parquet::errors::Result<(u64, BufWriter<File>)> {
    use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk};
    let rows = batch.num_rows();
    let bytes_per_row = (batch.get_array_memory_size() / rows.max(1)).max(1);
    let slices = (limits.bytes / bytes_per_row / WRITE_SLICE_ROWS).max(1);
    let group_rows = slices.saturating_mul(WRITE_SLICE_ROWS).min(limits.rows);
    let mut offset = 0;
    let mut group = 0;
    while offset < rows {
        let len = group_rows.min(rows - offset);
        let slice = batch.slice(offset, len);
        let mut leaves = Vec::new();
        for (field, column) in schema.fields().iter().zip(slice.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        let writers = factory.create_column_writers(group)?;
        let jobs: Vec<_> =
            writers.into_iter().zip(leaves).map(|w| std::sync::Mutex::new(Some(w))).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let encode = || -> parquet::errors::Result<Vec<(usize, ArrowColumnChunk)>> {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return Ok(done) };
                let taken = job.lock().ok().and_then(|mut j| j.take());
                if let Some((mut writer, leaf)) = taken {
                    writer.write(&leaf)?;
                    done.push((i, writer.close()?));
                }
            }
        };
        let mut chunks: Vec<(usize, ArrowColumnChunk)> = std::thread::scope(|scope| {
            let helpers: Vec<_> =
                (1..threads.min(jobs.len())).map(|_| scope.spawn(encode)).collect();
            let mut all = encode()?;
            for helper in helpers {
                match helper.join() {
                    Ok(done) => all.extend(done?),
                    // A panic inside the Parquet encoder: resume it on this thread.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok::<_, parquet::errors::ParquetError>(all)
        })?;
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = file_writer.next_row_group()?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        offset += len;
        group += 1;
    }
    Ok((rows as u64, file_writer.into_inner()?))
}

fn remove_best_effort<'a>(paths: impl IntoIterator<Item = &'a Path>) {
    for path in paths {
        if let Err(error) = std::fs::remove_file(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "could not remove temporary file");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{
        Array, ArrayRef, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
        UInt32Array,
    };
    use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    pub(crate) fn sample_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("param_id", DataType::Utf8, false),
            Field::new("step", DataType::Int64, false),
            Field::new("replicate", DataType::UInt32, false),
            Field::new("value", DataType::Float64, true),
            Field::new(
                "replicates",
                DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true))),
                true,
            ),
            Field::new("ok", DataType::Boolean, false),
        ]))
    }

    pub(crate) fn sample_batch(offset: i64, rows: usize) -> RecordBatch {
        let ids: Vec<String> = (0..rows).map(|i| format!("p{}", offset + i as i64)).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from_iter_values((0..rows as i64).map(|i| i + offset))),
            Arc::new(UInt32Array::from_iter_values((0..rows as u32).map(|i| i % 3))),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 5 != 0).then_some(i as f64 * 0.5)),
            )),
            Arc::new(ListArray::from_iter_primitive::<UInt32Type, _, _>(
                (0..rows).map(|i| Some((0..(i % 4) as u32).map(Some))),
            )),
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 0)))),
        ];
        RecordBatch::try_new(sample_schema(), columns).unwrap()
    }

    fn read_back(path: &Path) -> (SchemaRef, Vec<RecordBatch>, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let groups = builder.metadata().num_row_groups();
        let schema = builder.schema().clone();
        let batches = builder.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        (schema, batches, groups)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A large record batch, its columns encoded on 2 or 3 threads, reads back as the same
    /// rows, row groups and per-column encodings as through one `ArrowWriter`; a
    /// dictionary-encoded `param_id` in memory is a plain string column in the file either way.
    #[test]
    fn columns_encoded_in_parallel_give_what_one_writer_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = PARALLEL_ENCODING_MIN_ROWS + 1_000;
        let plain = sample_batch(0, rows);
        let ids = plain.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let keys = UInt32Array::from_iter_values((0..rows as u32).map(|i| i / 100));
        let values = StringArray::from_iter_values((0..rows.div_ceil(100)).map(|k| {
            // Each key's string: the one of its first row, so both batches hold the same rows.
            ids.value(k * 100).to_string()
        }));
        let mut columns = plain.columns().to_vec();
        let ids_by_key: StringArray =
            (0..rows).map(|i| Some(values.value(i / 100).to_string())).collect();
        columns[0] = Arc::new(ids_by_key);
        let plain = RecordBatch::try_new(sample_schema(), columns.clone()).unwrap();
        columns[0] = Arc::new(
            arrow::array::DictionaryArray::<UInt32Type>::try_new(keys, Arc::new(values)).unwrap(),
        );
        let mut fields: Vec<Field> =
            sample_schema().fields().iter().map(|f| (**f).clone()).collect();
        fields[0] = Field::new(
            "param_id",
            DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
            false,
        );
        let dictionary = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();

        let props = table_properties(&writer_properties().unwrap(), &sample_schema());
        let write = |name: &str, batch: &RecordBatch, threads: usize| {
            let path = tmp.path().join(name);
            let n =
                write_parquet_on(&path, &sample_schema(), &[batch.clone()], props.clone(), threads)
                    .unwrap();
            assert_eq!(n, rows as u64);
            path
        };
        let encodings = |path: &Path| {
            let reader =
                parquet::file::reader::SerializedFileReader::new(File::open(path).unwrap())
                    .unwrap();
            let meta = parquet::file::reader::FileReader::metadata(&reader).clone();
            (0..meta.num_row_groups())
                .flat_map(|g| {
                    let group = meta.row_group(g);
                    (0..group.num_columns())
                        .map(|c| format!("{:?}", group.column(c).encodings().collect::<Vec<_>>()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let reference = write("one.parquet", &plain, 1);
        let (schema, batches, groups) = read_back(&reference);
        assert_eq!(schema, sample_schema());
        assert_eq!(arrow::compute::concat_batches(&schema, &batches).unwrap(), plain);
        for (name, batch, threads) in [
            ("two.parquet", &plain, 2),
            ("three.parquet", &plain, 3),
            ("dict-one.parquet", &dictionary, 1),
            ("dict-two.parquet", &dictionary, 2),
        ] {
            let path = write(name, batch, threads);
            let (got_schema, got, got_groups) = read_back(&path);
            assert_eq!(got_schema, sample_schema(), "{name}");
            assert_eq!(arrow::compute::concat_batches(&schema, &got).unwrap(), plain, "{name}");
            assert_eq!(got_groups, groups, "{name}");
            assert_eq!(encodings(&path), encodings(&reference), "{name}");
        }
    }

    #[test]
    fn commit_writes_readable_files_with_same_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path().join("out"));
        let target = Dataset::Target("in_bed".into());
        let output = Dataset::ModelOutput("prevalence".into());
        let tables = vec![
            BatchTable {
                dataset: output.clone(),
                schema: sample_schema(),
                batches: vec![sample_batch(0, 10), sample_batch(10, 7)],
            },
            BatchTable {
                dataset: target.clone(),
                schema: sample_schema(),
                batches: vec![sample_batch(100, 3)],
            },
        ];
        let rows = commit_batch(&layout, 4, tables).unwrap();
        assert_eq!(rows, vec![(output.clone(), 17), (target.clone(), 3)]);

        let (schema, batches, _) = read_back(&layout.batch_file(&output, 4));
        assert_eq!(schema, sample_schema());
        let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
        let expect =
            arrow::compute::concat_batches(&schema, &[sample_batch(0, 10), sample_batch(10, 7)])
                .unwrap();
        assert_eq!(all, expect);
        let (_, batches, _) = read_back(&layout.batch_file(&target, 4));
        assert_eq!(batches, vec![sample_batch(100, 3)]);

        assert_eq!(files_in(&layout.dataset_dir(&output)), vec!["batch-00004.parquet"]);
        assert_eq!(files_in(&layout.dataset_dir(&target)), vec!["batch-00004.parquet"]);
    }

    #[test]
    fn files_are_zstd_with_row_groups_bounded_by_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rows.parquet");
        let rows = 2 * WRITE_SLICE_ROWS + 5;
        let props = sized_writer_properties(usize::MAX, WRITE_SLICE_ROWS + 10).unwrap();
        let batch = sample_batch(0, rows);
        assert_eq!(write_parquet(&path, &sample_schema(), &[batch], props).unwrap(), rows as u64);
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let meta = builder.metadata();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        let cap = (WRITE_SLICE_ROWS + 10) as i64;
        assert_eq!(sizes, vec![cap, rows as i64 - cap]);
        let compression = meta.row_group(0).column(0).compression();
        assert!(matches!(compression, Compression::ZSTD(_)), "{compression:?}");
        let (_, batches, _) = read_back(&path);
        let read: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(read, rows);
    }

    #[test]
    fn row_groups_bounded_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bytes.parquet");
        let rows = 3 * WRITE_SLICE_ROWS + 5;
        // One byte: every slice overflows it, so each slice closes its row group.
        let props = sized_writer_properties(1, usize::MAX).unwrap();
        write_parquet(&path, &sample_schema(), &[sample_batch(0, rows)], props).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        let slice = WRITE_SLICE_ROWS as i64;
        assert_eq!(sizes, vec![slice, slice, slice, 5]);

        // The default byte limit keeps a whole batch of narrow rows in one row group.
        let path = tmp.path().join("default.parquet");
        write_parquet(
            &path,
            &sample_schema(),
            &[sample_batch(0, rows)],
            writer_properties().unwrap(),
        )
        .unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(meta.num_row_groups(), 1);
    }

    #[test]
    fn zero_row_table_written_with_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let d = Dataset::Target("t".into());
        let rows = commit_batch(
            &layout,
            2,
            vec![BatchTable { dataset: d.clone(), schema: sample_schema(), batches: vec![] }],
        )
        .unwrap();
        assert_eq!(rows, vec![(d.clone(), 0)]);
        let (schema, batches, _) = read_back(&layout.batch_file(&d, 2));
        assert_eq!(schema, sample_schema());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    #[test]
    fn duplicate_or_bad_dataset_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path().join("out"));
        let t = |d: Dataset| BatchTable { dataset: d, schema: sample_schema(), batches: vec![] };
        let err =
            commit_batch(&layout, 0, vec![t(Dataset::Failures), t(Dataset::Failures)]).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
        let err = commit_batch(&layout, 0, vec![t(Dataset::Target("../x".into()))]).unwrap_err();
        assert!(err.to_string().contains("plain folder name"), "{err}");
        assert!(!layout.root().exists());
    }

    #[test]
    fn schema_mismatch_fails_and_leaves_no_tmp() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let good = BatchTable {
            dataset: Dataset::Failures,
            schema: sample_schema(),
            batches: vec![sample_batch(0, 2)],
        };
        let bad = BatchTable {
            dataset: Dataset::Target("t".into()),
            schema: other,
            batches: vec![sample_batch(0, 2)],
        };
        let err = commit_batch(&layout, 1, vec![good, bad]).unwrap_err();
        assert!(matches!(err, EngineError::Parquet { .. }), "{err}");
        assert!(files_in(&layout.dataset_dir(&Dataset::Failures)).is_empty());
        assert!(files_in(&layout.dataset_dir(&Dataset::Target("t".into()))).is_empty());
    }

    #[test]
    fn list_column_roundtrips_nulls() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        // The list column (4) holds a null list, a list with a null element, an empty list.
        let base = sample_batch(0, 4);
        let lists = ListArray::from_iter_primitive::<UInt32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            None,
            Some(vec![]),
            Some(vec![None]),
        ]);
        let mut columns = base.columns().to_vec();
        columns[4] = Arc::new(lists);
        let b = RecordBatch::try_new(sample_schema(), columns).unwrap();
        commit_batch(
            &layout,
            0,
            vec![BatchTable {
                dataset: Dataset::Failures,
                schema: sample_schema(),
                batches: vec![b.clone()],
            }],
        )
        .unwrap();
        let (_, batches, _) = read_back(&layout.batch_file(&Dataset::Failures, 0));
        let got = batches[0].column(4).as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(got.null_count(), 1, "one null list");
        assert!(got.is_null(1) && got.value(2).is_empty());
        let first = got.value(0);
        let first = first.as_any().downcast_ref::<UInt32Array>().unwrap();
        assert_eq!(first.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(3)]);
        assert_eq!(got.value(3).null_count(), 1, "a null element");
        assert_eq!(batches[0], b);
    }
}
