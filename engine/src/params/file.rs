//! Parameter files: one parameter set per row of a CSV or Parquet file.
//!
//! ```toml
//! [parameters]
//! file = "params.csv"   # relative to the job file; or a .parquet file
//! ```
//!
//! Every column is a parameter, except an optional `seed` column: a row with a seed runs exactly
//! one replicate with that seed ([`crate::params::Sweep::fixed_seed`]) instead of
//! `replicates` replicates with derived seeds.
//!
//! Column kinds ([`ParamKind`]):
//! - CSV: a column whose every value is a number is `Float` (`2` and `2.0` alike, so that a
//!   parameter set's `param_id` does not depend on the other rows); a column with no number is
//!   `Str`; a column of numbers with a non-number among them is refused, naming the line.
//!   Values are trimmed. (The `seed` column is read as integers; the first value that is not
//!   one is refused, naming its line.)
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
use crate::params::{ParamColumn, ParamKind, StrColumn, Sweep};

/// Name of the optional column holding a fixed replicate seed per row.
pub const SEED_COLUMN: &str = "seed";

/// The contents of a parameter file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterTable {
    /// One parameter set per row, in file order: the parameter columns (without `seed`), and
    /// the rows' seeds as fixed seeds when the file has that column.
    pub sweep: Sweep,
    /// `lines[i]`: the 1-based line of row `i`, header = line 1 (the first row is line 2), for
    /// errors found later; drop it once the sweep is checked.
    pub lines: Vec<u64>,
}

/// Reads a CSV (`.csv`) or Parquet (`.parquet`, `.pq`) parameter file.
///
/// The values are read straight into typed columns (no per-value allocation, whatever the
/// number of rows); every value must be finite (a parameter set's `param_id` needs it).
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

/// A column as read, before the seed is split off.
struct RawColumn {
    name: String,
    /// The values; for a CSV `seed` column, `Err` with the line and text of its first value that
    /// is not an integer (reported after the checks that come first).
    values: std::result::Result<ParamColumn, (u64, String)>,
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

/// A CSV column while the rows are read: its kind follows from its values, so it is decided
/// as they come, keeping only the values of the kind it has so far.
enum CsvCells {
    /// Every value so far is a number (a column of numbers is `Float`, `2` as much as `2.0`:
    /// a parameter set's `param_id` must not depend on how the other rows are written).
    Numbers(Vec<f64>),
    /// No value so far is a number (a `Str` column), with the first one's line.
    Words(StrColumn, u64),
    /// The `seed` column while every value is an integer.
    Integers(Vec<i64>),
    /// The first value that does not fit the column, with its line: for a parameter column, the
    /// first word of a column that also has numbers (a typo, not a string column); for the
    /// seed column, the first value that is not an integer.
    Invalid(u64, String),
}

impl CsvCells {
    fn push(&mut self, value: &str, line: u64) {
        match self {
            CsvCells::Numbers(v) => match value.parse::<f64>() {
                Ok(x) => v.push(x),
                Err(_) if v.is_empty() => {
                    let mut words = StrColumn::new();
                    words.push(value);
                    *self = CsvCells::Words(words, line);
                }
                Err(_) => *self = CsvCells::Invalid(line, value.to_string()),
            },
            CsvCells::Words(words, first_line) => {
                if value.parse::<f64>().is_ok() {
                    // The first word of the column is its first value.
                    let first = words.get(0).unwrap_or_default().to_string();
                    *self = CsvCells::Invalid(*first_line, first);
                } else {
                    words.push(value);
                }
            }
            CsvCells::Integers(v) => match value.parse::<i64>() {
                Ok(i) => v.push(i),
                Err(_) => *self = CsvCells::Invalid(line, value.to_string()),
            },
            CsvCells::Invalid(..) => {}
        }
    }
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
    let mut cells: Vec<CsvCells> = names
        .iter()
        .map(|n| {
            if n == SEED_COLUMN {
                CsvCells::Integers(Vec::new())
            } else {
                CsvCells::Numbers(Vec::new())
            }
        })
        .collect();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
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
            cells[i].push(value, line);
        }
        lines.push(line);
    }

    let mut columns = Vec::with_capacity(names.len());
    for (name, cells) in names.into_iter().zip(cells) {
        let values = match cells {
            CsvCells::Numbers(v) => Ok(ParamColumn::Float(v)),
            CsvCells::Words(v, _) => Ok(ParamColumn::Str(v)),
            CsvCells::Integers(v) => Ok(ParamColumn::Int(v)),
            CsvCells::Invalid(line, value) if name == SEED_COLUMN => Err((line, value)),
            CsvCells::Invalid(line, bad) => {
                return Err(data(
                    path,
                    Some(line),
                    Some(&name),
                    format!(
                        "`{bad}` is not a number, but the column's other values are; fix the value"
                    ),
                ))
            }
        };
        columns.push(RawColumn { name, values });
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
        columns.push((field.name().clone(), ParamColumn::new(kind)));
    }

    let mut rows: u64 = 0;
    for batch in reader {
        let batch = batch
            .map_err(|e| data(path, None, None, format!("cannot read this Parquet file: {e}")))?;
        for ((name, column), array) in columns.iter_mut().zip(batch.columns()) {
            let line_of = |i: usize| rows + i as u64 + 2;
            if let Some(i) = (0..array.len()).find(|&i| array.is_null(i)) {
                return Err(data(
                    path,
                    Some(line_of(i)),
                    Some(name),
                    "empty (null) value; give every row a value",
                ));
            }
            match column {
                ParamColumn::Int(values) if array.data_type() == &DataType::UInt64 => {
                    for (i, v) in array.as_primitive::<UInt64Type>().values().iter().enumerate() {
                        let v = i64::try_from(*v).map_err(|_| {
                            data(
                                path,
                                Some(line_of(i)),
                                Some(name),
                                format!("{v} does not fit in a 64-bit signed integer"),
                            )
                        })?;
                        values.push(v);
                    }
                }
                ParamColumn::Int(values) => {
                    let a = arrow::compute::cast(array, &DataType::Int64)?;
                    values.extend_from_slice(a.as_primitive::<Int64Type>().values());
                }
                ParamColumn::Float(values) => {
                    let a = arrow::compute::cast(array, &DataType::Float64)?;
                    values.extend_from_slice(a.as_primitive::<Float64Type>().values());
                }
                ParamColumn::Str(values) => {
                    let a = arrow::compute::cast(array, &DataType::Utf8)?;
                    for v in a.as_string::<i32>().iter() {
                        values.push(v.unwrap_or_default());
                    }
                }
            }
        }
        rows += batch.num_rows() as u64;
    }
    let columns =
        columns.into_iter().map(|(name, values)| RawColumn { name, values: Ok(values) }).collect();
    Ok(RawTable { lines: (0..rows).map(|r| r + 2).collect(), columns })
}

/// Splits off the seed, checks values, and builds the sweep.
fn assemble(path: &Path, raw: RawTable) -> Result<ParameterTable> {
    let RawTable { lines, columns } = raw;
    if lines.is_empty() {
        return Err(data(path, None, None, "the file has no rows; add one row per parameter set"));
    }
    let (seed, params): (Vec<RawColumn>, Vec<RawColumn>) =
        columns.into_iter().partition(|c| c.name == SEED_COLUMN);
    if params.is_empty() {
        return Err(data(
            path,
            None,
            None,
            "the file has no parameter columns; add one column per model parameter",
        ));
    }
    let mut params: Vec<(String, ParamColumn)> = params
        .into_iter()
        .map(|c| (c.name, c.values.expect("only the seed column holds a deferred error")))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));

    let seeds = match seed.into_iter().next() {
        None => None,
        Some(column) => Some(seeds(column.values, &lines).map_err(|(line, value)| {
            data(
                path,
                Some(line),
                Some(SEED_COLUMN),
                format!(
                    "seed `{value}` is not an integer in 0..=4294967295 (a 32-bit unsigned \
                     seed); fix it or drop the column"
                ),
            )
        })?),
    };

    for (name, column) in &params {
        if let ParamColumn::Float(values) = column {
            if let Some((x, &line)) = values.iter().zip(&lines).find(|(x, _)| !x.is_finite()) {
                return Err(data(
                    path,
                    Some(line),
                    Some(name),
                    format!("value {x} is not a finite number; give a real number"),
                ));
            }
        }
    }

    let sweep = Sweep::from_columns(params, seeds).map_err(|e| {
        data(path, Some(lines[e.index]), Some(&e.source.name), e.source.to_string())
    })?;
    Ok(ParameterTable { sweep, lines })
}

/// The seed column's values as seeds, or the line and text of the first that is not one.
fn seeds(
    values: std::result::Result<ParamColumn, (u64, String)>,
    lines: &[u64],
) -> std::result::Result<Vec<u32>, (u64, String)> {
    match values? {
        ParamColumn::Int(values) => values
            .iter()
            .zip(lines)
            .map(|(&v, &line)| u32::try_from(v).map_err(|_| (line, v.to_string())))
            .collect(),
        // A float or string column holds no seeds at all: its first value is the one to fix.
        other => {
            let first = other.get(0).map(|v| v.to_owned_value().to_string()).unwrap_or_default();
            Err((lines[0], first))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamValue, ParameterSet};
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
            t.sweep.columns(),
            [
                ("beta".to_string(), ParamKind::Float),
                ("gamma".to_string(), ParamKind::Float),
                ("n".to_string(), ParamKind::Float),
                ("scenario".to_string(), ParamKind::Str),
            ]
        );
        assert_eq!(t.sweep.len(), 2);
        assert_eq!(t.lines, [2, 3]);
        assert_eq!(t.sweep.fixed_seed(0), Some(12));
        assert_eq!(t.sweep.fixed_seed(1), Some(u32::MAX));
        let row1 = t.sweep.params(1);
        assert_eq!(row1.get("beta"), Some(&ParamValue::Float(2.0)));
        // Integers in a CSV are floats: `4` and `4.0` give one `param_id`.
        assert_eq!(row1.get("n"), Some(&ParamValue::Float(4.0)));
        assert_eq!(row1.get("scenario"), Some(&ParamValue::Str("b".into())));
        assert_eq!(t.sweep.params(0).get("seed"), None);
        assert_eq!(t.sweep.param_id(1), crate::identity::param_id(&row1).unwrap());
    }

    #[test]
    fn csv_word_among_numbers_is_refused() {
        let t = csv_err("beta,gamma\n1.0,0.2\nabc,0.3\n");
        assert!(t.contains(":3: column `beta`") && t.contains("`abc` is not a number"), "{t}");
        // Words first: the first word is the value to fix.
        let t = csv_err("beta,gamma\nabc,0.2\nxyz,0.3\n2,0.4\n");
        assert!(t.contains(":2: column `beta`") && t.contains("`abc` is not a number"), "{t}");
        // An empty value anywhere is reported first, as is malformed CSV.
        let t = csv_err("beta,gamma\nabc,0.2\n2,0.3\n3,\n");
        assert!(t.contains(":4: column `gamma`") && t.contains("empty value"), "{t}");
    }

    #[test]
    fn csv_columns_round_trip_many_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("scenario,beta,seed,k\n");
        for i in 0..2000 {
            text.push_str(&format!("s{},{}.5,{},{}\n", i % 7, i, 3 * i, i % 4));
        }
        let path = csv_file(&dir, "p.csv", &text);
        let t = read_parameter_file(&path).unwrap();
        assert_eq!(t.sweep.len(), 2000);
        for i in [0usize, 1, 999, 1999] {
            let mut expected = ParameterSet::new();
            expected.insert("scenario", ParamValue::Str(format!("s{}", i % 7)));
            expected.insert("beta", ParamValue::Float(i as f64 + 0.5));
            expected.insert("k", ParamValue::Float((i % 4) as f64));
            assert_eq!(t.sweep.params(i), expected, "row {i}");
            assert_eq!(t.sweep.param_id(i), crate::identity::param_id(&expected).unwrap());
            assert_eq!(t.sweep.fixed_seed(i), Some(3 * i as u32));
            assert_eq!(t.lines[i], i as u64 + 2);
        }
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
        let t = csv_err("beta,seed\n1,7\n2,x\n3,8\n");
        assert!(t.contains(":3: column `seed`") && t.contains("seed `x`"), "{t}");
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
            t.sweep.columns(),
            [
                ("beta".to_string(), ParamKind::Float),
                ("k".to_string(), ParamKind::Int),
                ("name".to_string(), ParamKind::Str),
            ]
        );
        assert_eq!(t.lines[1], 3);
        let row1 = t.sweep.params(1);
        assert_eq!(row1.get("beta"), Some(&ParamValue::Float(2.5)));
        assert_eq!(row1.get("k"), Some(&ParamValue::Int(-4)));
        assert_eq!(row1.get("name"), Some(&ParamValue::Str("b".into())));
        assert_eq!(t.sweep.fixed_seed(1), Some(u32::MAX));
        assert_eq!(t.sweep.param_id(1), crate::identity::param_id(&row1).unwrap());
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
