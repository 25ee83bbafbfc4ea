//! Parameter files: one parameter set per row of a CSV or Parquet file.
//!
//! ```toml
//! [parameters]
//! file = "params.csv"   # relative to the job file; or a .parquet file
//! ```
//!
//! Every column is a parameter, except an optional `seed` column: a row with a seed runs exactly
//! one replicate with that seed ([`crate::params::SweepPoint::fixed_seed`]) instead of
//! `replicates` replicates with derived seeds.
//!
//! Column kinds ([`ParamKind`]):
//! - CSV: a column whose every value is a number is `Float` (`2` and `2.0` alike, so that a
//!   parameter set's `param_id` does not depend on the other rows); a column with no number is
//!   `Str`; a column of numbers with a non-number among them is refused, naming the line.
//!   Values are trimmed. (The `seed` column is read as integers.)
//! - Parquet: `Int*`/`UInt*` → `Int`, `Float*` → `Float`, `Utf8`/`LargeUtf8` → `Str`; other
//!   types are refused.
//!
//! Lines are 1-based and count the header as line 1, so the first row is line 2 (for Parquet,
//! "line" is the row number + 1 in the same sense).

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};
use crate::params::{ParamKind, ParamValue, ParameterSet};

/// Name of the optional column holding a fixed replicate seed per row.
pub const SEED_COLUMN: &str = "seed";

/// The contents of a parameter file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterTable {
    /// Parameter columns (without `seed`), sorted by name, with their kinds.
    pub columns: Vec<(String, ParamKind)>,
    /// The rows in file order.
    pub rows: Vec<ParameterRow>,
}

/// One row of a parameter file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterRow {
    /// 1-based line in the file, header = line 1 (the first row is line 2).
    pub line: u64,
    /// The row's parameter values, one per column except `seed`.
    pub params: ParameterSet,
    /// The row's `seed`, when the file has that column.
    pub seed: Option<u32>,
}

/// Reads a CSV (`.csv`) or Parquet (`.parquet`, `.pq`) parameter file.
///
/// # Errors
/// [`EngineError::Data`] naming the file, and where it applies the line and column, for: a
/// missing file, an unknown extension, malformed CSV, a missing or duplicate column name, an
/// unsupported Parquet column type, an empty (null) value, a NaN or infinite value, a `seed`
/// that is not an integer in `0..2^32`, a file without rows, a file without parameter columns.
/// [`EngineError::Io`] when the file exists but cannot be read; [`EngineError::Parquet`] when
/// it is not valid Parquet.
pub fn read_parameter_file(path: &Path) -> Result<ParameterTable> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(data(
                path,
                None,
                None,
                "parameter file not found; check `parameters.file` (relative to the job file)",
            ))
        }
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let columns = match ext.as_deref() {
        Some("csv") => read_csv(path, file)?,
        Some("parquet") | Some("pq") => read_parquet(path, file)?,
        _ => {
            return Err(data(
                path,
                None,
                None,
                "unknown parameter file type; use a .csv or .parquet file",
            ))
        }
    };
    assemble(path, columns)
}

/// A column as read, before the seed is split off: values by row, with the row lines.
struct RawColumn {
    name: String,
    kind: ParamKind,
    values: Vec<ParamValue>,
}

struct RawTable {
    lines: Vec<u64>,
    columns: Vec<RawColumn>,
}

fn data(
    path: &Path,
    line: Option<u64>,
    column: Option<&str>,
    message: impl Into<String>,
) -> EngineError {
    EngineError::Data {
        file: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        message: message.into(),
    }
}

fn check_header(path: &Path, names: &[String]) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(data(
                path,
                Some(1),
                None,
                format!("column {} has no name; name every column in the header", i + 1),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(data(
                path,
                Some(1),
                Some(name),
                "the column appears twice; rename or remove one of them",
            ));
        }
    }
    Ok(())
}

fn read_csv(path: &Path, file: File) -> Result<RawTable> {
    let csv_error = |e: csv::Error| {
        let line = e.position().map(|p| p.line());
        data(path, line, None, format!("malformed CSV: {e}"))
    };
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
    let names: Vec<String> =
        reader.headers().map_err(csv_error)?.iter().map(str::to_string).collect();
    if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
        return Err(data(
            path,
            None,
            None,
            "the file is empty; it needs a header line naming the parameters and one row per \
             parameter set",
        ));
    }
    check_header(path, &names)?;

    let mut lines = Vec::new();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(lines.len() as u64 + 2, |p| p.line());
        for (i, value) in record.iter().enumerate() {
            if value.is_empty() {
                return Err(data(
                    path,
                    Some(line),
                    Some(&names[i]),
                    "empty value; give every row a value",
                ));
            }
            cells[i].push(value.to_string());
        }
        lines.push(line);
    }

    let mut columns = Vec::with_capacity(names.len());
    for (name, values) in names.into_iter().zip(cells) {
        let numeric = values.iter().filter(|v| v.parse::<f64>().is_ok()).count();
        let column = if name == SEED_COLUMN && values.iter().all(|v| v.parse::<i64>().is_ok()) {
            let values =
                values.iter().filter_map(|v| v.parse().ok()).map(ParamValue::Int).collect();
            RawColumn { name, kind: ParamKind::Int, values }
        } else if numeric == values.len() {
            // Every number is a Float, `2` as much as `2.0`: a parameter set's `param_id` must
            // not depend on how the other rows of its column are written.
            let values =
                values.iter().filter_map(|v| v.parse().ok()).map(ParamValue::Float).collect();
            RawColumn { name, kind: ParamKind::Float, values }
        } else if numeric == 0 || name == SEED_COLUMN {
            let values = values.into_iter().map(ParamValue::Str).collect();
            RawColumn { name, kind: ParamKind::Str, values }
        } else {
            // A column of numbers with a word among them is a typo, not a string column.
            let (i, bad) = values
                .iter()
                .enumerate()
                .find(|(_, v)| v.parse::<f64>().is_err())
                .expect("numeric < len, so some value does not parse");
            return Err(data(
                path,
                Some(lines[i]),
                Some(&name),
                format!(
                    "`{bad}` is not a number, but the column's other values are; fix the value"
                ),
            ));
        };
        columns.push(column);
    }
    Ok(RawTable { lines, columns })
}

fn parquet_kind(dt: &DataType) -> Option<ParamKind> {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Some(ParamKind::Int),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(ParamKind::Float),
        DataType::Utf8 | DataType::LargeUtf8 => Some(ParamKind::Str),
        _ => None,
    }
}

fn read_parquet(path: &Path, file: File) -> Result<RawTable> {
    // A parameter file is input: a file that cannot be decoded is the user's to fix (exit 2).
    let parquet_error = |source: parquet::errors::ParquetError| {
        data(path, None, None, format!("cannot read this Parquet file: {source}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(parquet_error)?;

    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    check_header(path, &names)?;
    let mut columns = Vec::with_capacity(names.len());
    for field in schema.fields() {
        let kind = parquet_kind(field.data_type()).ok_or_else(|| {
            data(
                path,
                None,
                Some(field.name()),
                format!(
                    "column type {} is not supported; use an integer, floating-point or string \
                     column",
                    field.data_type()
                ),
            )
        })?;
        columns.push(RawColumn { name: field.name().clone(), kind, values: Vec::new() });
    }

    let mut rows: u64 = 0;
    for batch in reader {
        let batch = batch
            .map_err(|e| data(path, None, None, format!("cannot read this Parquet file: {e}")))?;
        for (column, array) in columns.iter_mut().zip(batch.columns()) {
            let line_of = |i: usize| rows + i as u64 + 2;
            if let Some(i) = (0..array.len()).find(|&i| array.is_null(i)) {
                return Err(data(
                    path,
                    Some(line_of(i)),
                    Some(&column.name),
                    "empty (null) value; give every row a value",
                ));
            }
            match column.kind {
                ParamKind::Int if array.data_type() == &DataType::UInt64 => {
                    for (i, v) in array.as_primitive::<UInt64Type>().values().iter().enumerate() {
                        let v = i64::try_from(*v).map_err(|_| {
                            data(
                                path,
                                Some(line_of(i)),
                                Some(&column.name),
                                format!("{v} does not fit in a 64-bit signed integer"),
                            )
                        })?;
                        column.values.push(ParamValue::Int(v));
                    }
                }
                ParamKind::Int => {
                    let a = arrow::compute::cast(array, &DataType::Int64)?;
                    column.values.extend(
                        a.as_primitive::<Int64Type>().values().iter().map(|v| ParamValue::Int(*v)),
                    );
                }
                ParamKind::Float => {
                    let a = arrow::compute::cast(array, &DataType::Float64)?;
                    column.values.extend(
                        a.as_primitive::<Float64Type>()
                            .values()
                            .iter()
                            .map(|v| ParamValue::Float(*v)),
                    );
                }
                ParamKind::Str => {
                    let a = arrow::compute::cast(array, &DataType::Utf8)?;
                    column.values.extend(
                        a.as_string::<i32>()
                            .iter()
                            .map(|v| ParamValue::Str(v.unwrap_or_default().to_string())),
                    );
                }
            }
        }
        rows += batch.num_rows() as u64;
    }
    Ok(RawTable { lines: (0..rows).map(|r| r + 2).collect(), columns })
}

/// Splits off the seed, checks values, and builds the rows.
fn assemble(path: &Path, raw: RawTable) -> Result<ParameterTable> {
    let RawTable { lines, columns } = raw;
    if lines.is_empty() {
        return Err(data(path, None, None, "the file has no rows; add one row per parameter set"));
    }
    let (seed, mut params): (Vec<RawColumn>, Vec<RawColumn>) =
        columns.into_iter().partition(|c| c.name == SEED_COLUMN);
    if params.is_empty() {
        return Err(data(
            path,
            None,
            None,
            "the file has no parameter columns; add one column per model parameter",
        ));
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));

    let seeds: Option<Vec<u32>> = match seed.into_iter().next() {
        None => None,
        Some(column) => Some(
            column
                .values
                .iter()
                .zip(&lines)
                .map(|(v, &line)| seed_value(v).ok_or_else(|| {
                    data(
                        path,
                        Some(line),
                        Some(SEED_COLUMN),
                        format!("seed `{v}` is not an integer in 0..=4294967295 (a 32-bit unsigned seed); fix it or drop the column"),
                    )
                }))
                .collect::<Result<_>>()?,
        ),
    };

    for column in &params {
        for (v, &line) in column.values.iter().zip(&lines) {
            if let ParamValue::Float(x) = v {
                if !x.is_finite() {
                    return Err(data(
                        path,
                        Some(line),
                        Some(&column.name),
                        format!("value {x} is not a finite number; give a real number"),
                    ));
                }
            }
        }
    }

    let mut iters: Vec<_> = params.iter().map(|c| (c.name.as_str(), c.values.iter())).collect();
    let mut rows = Vec::with_capacity(lines.len());
    for (r, &line) in lines.iter().enumerate() {
        let mut set = ParameterSet::new();
        for (name, values) in iters.iter_mut() {
            if let Some(v) = values.next() {
                set.insert(*name, v.clone());
            }
        }
        rows.push(ParameterRow { line, params: set, seed: seeds.as_ref().map(|s| s[r]) });
    }
    Ok(ParameterTable { columns: params.iter().map(|c| (c.name.clone(), c.kind)).collect(), rows })
}

fn seed_value(v: &ParamValue) -> Option<u32> {
    match v {
        ParamValue::Int(i) => u32::try_from(*i).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float32Array, Int32Array, StringArray, UInt32Array};
    use arrow::record_batch::RecordBatch;
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn csv_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        path
    }

    fn csv_err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = csv_file(&dir, "p.csv", text);
        let e = read_parameter_file(&path).unwrap_err();
        assert!(matches!(e, EngineError::Data { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn csv_kinds_and_seed_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = csv_file(
            &dir,
            "p.csv",
            "gamma,beta,seed,scenario,n\n0.5, 1.7,12,a,3\n0.25,2,4294967295,b,4\n",
        );
        let t = read_parameter_file(&path).unwrap();
        assert_eq!(
            t.columns,
            vec![
                ("beta".to_string(), ParamKind::Float),
                ("gamma".to_string(), ParamKind::Float),
                ("n".to_string(), ParamKind::Float),
                ("scenario".to_string(), ParamKind::Str),
            ]
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].line, 2);
        assert_eq!(t.rows[0].seed, Some(12));
        assert_eq!(t.rows[1].seed, Some(u32::MAX));
        assert_eq!(t.rows[1].params.get("beta"), Some(&ParamValue::Float(2.0)));
        // Integers in a CSV are floats: `4` and `4.0` give one `param_id`.
        assert_eq!(t.rows[1].params.get("n"), Some(&ParamValue::Float(4.0)));
        assert_eq!(t.rows[1].params.get("scenario"), Some(&ParamValue::Str("b".into())));
        assert_eq!(t.rows[0].params.get("seed"), None);
    }

    #[test]
    fn csv_word_among_numbers_is_refused() {
        let t = csv_err("beta,gamma\n1.0,0.2\nabc,0.3\n");
        assert!(t.contains(":3: column `beta`") && t.contains("`abc` is not a number"), "{t}");
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let t = csv_err("beta,gamma\n1,2\n3,\n");
        assert!(t.contains(":3: column `gamma`") && t.contains("empty value"), "{t}");
        let t = csv_err("beta,gamma\n1,2\nNaN,3\n");
        assert!(t.contains(":3: column `beta`") && t.contains("finite"), "{t}");
        let t = csv_err("beta,gamma\n1,inf\n");
        assert!(t.contains(":2: column `gamma`"), "{t}");
        let t = csv_err("beta,seed\n1,5\n2,4294967296\n");
        assert!(t.contains(":3: column `seed`") && t.contains("0..=4294967295"), "{t}");
        let t = csv_err("beta,seed\n1,-1\n");
        assert!(t.contains(":2: column `seed`"), "{t}");
        let t = csv_err("beta,seed\n1,2.5\n");
        assert!(t.contains(":2: column `seed`") && t.contains("not an integer"), "{t}");
        let t = csv_err("beta,gamma\n");
        assert!(t.contains("no rows"), "{t}");
        let t = csv_err("seed\n1\n");
        assert!(t.contains("no parameter columns"), "{t}");
        let t = csv_err("");
        assert!(t.contains("empty"), "{t}");
        let t = csv_err("beta,beta\n1,2\n");
        assert!(t.contains(":1: column `beta`") && t.contains("twice"), "{t}");
        let t = csv_err("beta,gamma\n1,2\n3\n");
        assert!(t.contains(":3") && t.contains("malformed"), "{t}");
    }

    #[test]
    fn missing_file_and_bad_extension() {
        let e = read_parameter_file(Path::new("/nonexistent/params.csv")).unwrap_err();
        assert!(matches!(e, EngineError::Data { .. }));
        assert!(e.to_string().contains("not found"));
        let dir = tempfile::tempdir().unwrap();
        let path = csv_file(&dir, "p.txt", "beta\n1\n");
        assert!(read_parameter_file(&path).unwrap_err().to_string().contains(".csv or .parquet"));
    }

    fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn parquet_kinds_and_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        write_parquet(
            &path,
            vec![
                ("beta", Arc::new(Float32Array::from(vec![1.5, 2.5])) as ArrayRef),
                ("k", Arc::new(Int32Array::from(vec![3, -4])) as ArrayRef),
                ("name", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
                ("seed", Arc::new(UInt32Array::from(vec![7, u32::MAX])) as ArrayRef),
            ],
        );
        let t = read_parameter_file(&path).unwrap();
        assert_eq!(
            t.columns,
            vec![
                ("beta".to_string(), ParamKind::Float),
                ("k".to_string(), ParamKind::Int),
                ("name".to_string(), ParamKind::Str),
            ]
        );
        assert_eq!(t.rows[1].line, 3);
        assert_eq!(t.rows[1].params.get("beta"), Some(&ParamValue::Float(2.5)));
        assert_eq!(t.rows[1].params.get("k"), Some(&ParamValue::Int(-4)));
        assert_eq!(t.rows[1].params.get("name"), Some(&ParamValue::Str("b".into())));
        assert_eq!(t.rows[1].seed, Some(u32::MAX));
    }

    #[test]
    fn parquet_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        write_parquet(
            &path,
            vec![(
                "beta",
                Arc::new(arrow::array::Float64Array::from(vec![Some(1.0), None])) as ArrayRef,
            )],
        );
        let t = read_parameter_file(&path).unwrap_err().to_string();
        assert!(t.contains(":3: column `beta`") && t.contains("null"), "{t}");
        write_parquet(
            &path,
            vec![
                ("beta", Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0])) as ArrayRef),
                ("seed", Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0])) as ArrayRef),
            ],
        );
        let t = read_parameter_file(&path).unwrap_err().to_string();
        assert!(t.contains(":2: column `seed`") && t.contains("not an integer"), "{t}");
        write_parquet(
            &path,
            vec![("flag", Arc::new(arrow::array::BooleanArray::from(vec![true])) as ArrayRef)],
        );
        let t = read_parameter_file(&path).unwrap_err().to_string();
        assert!(t.contains("column `flag`") && t.contains("not supported"), "{t}");
    }
}
