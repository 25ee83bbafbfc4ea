//! Targets: observed data, which model output it is compared with, and how.
//!
//! A [`TargetSpec`] is a `[[targets]]` section as written; [`TargetSpec::resolve`] checks it
//! against the model's outputs, reads the observed data (CSV or Parquet), converts its time
//! column to model time, and returns a [`Target`]. A [`Target`] then scores the replicates of a
//! parameter set: [`Target::align`] picks, for each observation, the model's value at the same
//! time, and [`Target::loss`] combines the replicates with [`crate::loss::aggregate`].
//!
//! Time: model time is the model output's `time_column` (usually `day`, Int64, `0..=days`).
//! Observed times are either numbers in model time units, used as they are, or dates
//! `YYYY-MM-DD`, converted as `(date − origin) / unit` with `unit` 1 day (`day`) or 7 days
//! (`week`). Alignment is by exact equality of the two times as `f64`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Float16Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, Schema, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};
use crate::loss::{self, Aggregation, Loss, LossKind};
use crate::model::OutputSpec;

/// The date format of date time columns and of `origin`.
pub const DATE_FORMAT: &str = "%Y-%m-%d";

/// The `[[targets]]` section of a job, as written.
///
/// ```toml
/// [[targets]]
/// name = "in_bed"
/// output = "prevalence"
/// column = "in_bed"
/// data = "data/boarding_school.csv"
/// data_column = "in_bed"
/// data_time_column = "date"
/// origin = "1978-01-21"
/// aggregation = "likelihood"
/// loss = "negative_binomial"
/// dispersion = 5.0
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Target name; also the folder under `targets/`, so only `[A-Za-z0-9_-]`.
    pub name: String,
    /// Model output table compared, e.g. `in_bed`.
    pub output: String,
    /// Column of that output holding the model's values (numeric).
    pub column: String,
    /// Column of that output holding model time (numeric; default `day`).
    #[serde(default = "default_time_column")]
    pub time_column: String,
    /// Observed data file (`.csv` with a header row, or `.parquet`), relative to the job file.
    pub data: PathBuf,
    /// Column of the data file holding the observed values.
    pub data_column: String,
    /// Column of the data file holding time: numeric (model time units) or dates `YYYY-MM-DD`.
    pub data_time_column: String,
    /// For a date time column: the date that is model time 0, `YYYY-MM-DD` (quoted, or a bare
    /// TOML date). Refused for a numeric time column.
    #[serde(default, deserialize_with = "date_or_string")]
    pub origin: Option<String>,
    /// For a date time column: length of one model time unit, `day` or `week` (default `day`).
    /// Refused for a numeric time column.
    #[serde(default)]
    pub time_unit: Option<String>,
    /// How replicates are combined: `mean_signal`, `annealed` or `likelihood`.
    pub aggregation: Aggregation,
    /// Loss: `mse`, `poisson` or `negative_binomial`.
    pub loss: LossKind,
    /// Dispersion `k` (size) of the negative binomial; required for that loss, refused otherwise.
    #[serde(default)]
    pub dispersion: Option<f64>,
    /// Reporting fraction ρ of the measurement model: the expected observation is
    /// `ρ · model value + floor`. A number in `(0, 1]`, or the name of a parameter of the
    /// sweep (fitted like the others; the model receives it too and built-in models ignore
    /// it). Default 1: every modelled case is observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_fraction: Option<ReportingFractionSpec>,
    /// Floor added to the expected observation of the `poisson` and `negative_binomial` losses
    /// (counts, ≥ 0), so that a replicate predicting 0 where cases were observed has a finite
    /// (if large) cost: King et al.'s sbied boarding-school model measures
    /// `B ~ Poisson(ρ·R1 + 1e-6)`. Default 0: the exact likelihood, where such a replicate makes
    /// the observations impossible (loss `+∞`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

/// A target's reporting fraction as written: a number, or the name of a parameter.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum ReportingFractionSpec {
    /// The same fraction for every parameter set, in `(0, 1]`.
    Value(f64),
    /// The name of a parameter of the sweep holding each set's fraction.
    Parameter(String),
}

/// The reporting fraction ρ of a resolved target.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportingFraction {
    /// A fixed fraction in `(0, 1]` (1 when the spec gives none).
    Value(f64),
    /// Each parameter set's value of this parameter (checked to be in `[0, 1]`).
    Parameter(String),
}

/// A target's measurement model: the expected observation at each observation time is
/// `ρ · model value + floor`, which the loss compares with the observed value (for the
/// likelihood losses: the mean of the Poisson or negative binomial the observation is drawn
/// from). As in pomp's `dmeasure`, e.g. sbied's `dpois(B, rho*R1 + 1e-6)` (King, Nguyen &
/// Ionides 2016, *J. Stat. Softw.* 69(12); the sbied lessons, `bsflu`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The reporting fraction ρ.
    pub reporting: ReportingFraction,
    /// The floor added to the expected observation (counts, ≥ 0; 0 unless the spec gives one).
    pub floor: f64,
}

impl Default for Observation {
    /// Every case observed, no floor: the expected observation is the model's value.
    fn default() -> Self {
        Observation { reporting: ReportingFraction::Value(1.0), floor: 0.0 }
    }
}

impl Observation {
    /// True for the default (ρ = 1, no floor), which leaves model values as they are.
    pub fn is_identity(&self) -> bool {
        *self == Observation::default()
    }

    /// The parameter holding ρ, when it is one.
    pub fn parameter(&self) -> Option<&str> {
        match &self.reporting {
            ReportingFraction::Parameter(name) => Some(name),
            ReportingFraction::Value(_) => None,
        }
    }
}

/// Accepts `origin = "1978-01-21"` and the bare TOML date `origin = 1978-01-21` alike.
fn date_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Origin {
        Text(String),
        Date(toml::value::Datetime),
    }
    Ok(Some(match <Origin as serde::Deserialize>::deserialize(d)? {
        Origin::Text(s) => s,
        Origin::Date(d) => d.to_string(),
    }))
}

fn default_time_column() -> String {
    "day".to_string()
}

/// A target ready to score replicates: observed data loaded and converted to model time.
///
/// Built by [`TargetSpec::resolve`], which guarantees: `times` and `observed` are non-empty,
/// of equal length, finite, with no duplicate time; `loss_fn` matches `loss`; `aggregation` is
/// not `likelihood` with `mse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Target name.
    pub name: String,
    /// Model output table compared.
    pub output: String,
    /// Index of that output in the model's [`OutputSpec`] list.
    pub output_index: usize,
    /// Model value column.
    pub column: String,
    /// Model time column.
    pub time_column: String,
    /// Observation times, in model time units, in file order.
    pub times: Vec<f64>,
    /// Observed values, same length as `times`.
    pub observed: Vec<f64>,
    /// How replicates are combined.
    pub aggregation: Aggregation,
    /// The loss function with its parameters (the negative binomial's dispersion); this is
    /// what [`Target::loss`] uses. Its kind, as written in the spec: `loss_fn.kind()`.
    pub loss_fn: Loss,
    /// The observed data file, as resolved (`base_dir` joined with the spec's `data`); for
    /// observations given as a table ([`TargetSpec::resolve_table`]), a label naming it.
    pub data_file: PathBuf,
    /// True when the observations came from a table given in code rather than a file: the
    /// spec hash then covers the observations themselves.
    pub data_from_table: bool,
    /// Column of the data file holding time.
    pub data_time_column: String,
    /// Line of each observation in the data file (header = line 1), same order as `times`.
    pub lines: Vec<u64>,
    /// The measurement model: reporting fraction and floor (the default leaves model values as
    /// they are).
    pub observation: Observation,
}

/// Why a replicate's output table cannot be aligned with a target's observations.
///
/// These are model-side problems (the model's output does not cover the data, or returned a
/// table that does not match its declared schema); the replicate's loss cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AlignError {
    /// An observation time has no row in the model's output.
    #[error(
        "target `{target}`: observed time {time} is not among the model's `{time_column}` values \
         {}; {}",
        range_text(.model_range),
        missing_hint(*.time, .model_range)
    )]
    MissingTime {
        /// Target name.
        target: String,
        /// The observation time (model time units) that has no model row.
        time: f64,
        /// The model's time column.
        time_column: String,
        /// Smallest and largest model time in the table; `None` when it has no rows.
        model_range: Option<(f64, f64)>,
    },
    /// The model's table lacks a column the target reads.
    #[error(
        "target `{target}`: the model's output has no column `{column}` (it has: {}); the model \
         returned a table that does not match its declared outputs",
        available.join(", ")
    )]
    MissingColumn {
        /// Target name.
        target: String,
        /// The missing column.
        column: String,
        /// The columns the table has.
        available: Vec<String>,
    },
    /// A column the target reads is not numeric.
    #[error(
        "target `{target}`: the model's column `{column}` has type {data_type}; expected \
         Int*/UInt*/Float*"
    )]
    NotNumeric {
        /// Target name.
        target: String,
        /// The column.
        column: String,
        /// Its Arrow type, as text.
        data_type: String,
    },
    /// The model's value at an observation time is null.
    #[error("target `{target}`: the model's `{column}` is null at time {time}")]
    NullValue {
        /// Target name.
        target: String,
        /// The value column.
        column: String,
        /// The observation time (model time units).
        time: f64,
    },
}

fn range_text(range: &Option<(f64, f64)>) -> String {
    match range {
        Some((lo, hi)) => format!("{lo}..={hi}"),
        None => "(the table has no rows)".to_string(),
    }
}

fn missing_hint(time: f64, range: &Option<(f64, f64)>) -> &'static str {
    match range {
        Some((_, hi)) if time > *hi => "raise the model's `days` or drop that observation",
        Some((lo, _)) if time < *lo => {
            "drop that observation, or check the data's time column (and `origin`)"
        }
        Some(_) => {
            "the model has no row at that time (model times are usually whole days); drop that \
             observation or check the data's time column (and `origin`, `time_unit`)"
        }
        None => "the model returned an empty table",
    }
}

impl TargetSpec {
    /// Checks this `[[targets]]` section (the `index`-th) against the model's `outputs`, reads
    /// its data file `base_dir.join(&self.data)` and returns the [`Target`].
    ///
    /// `job_file` is only used in error messages; `base_dir` is the job file's folder.
    ///
    /// Checks, in order: `name` is non-empty and `[A-Za-z0-9_-]` only; `output` is one of
    /// `outputs`; `column` and `time_column` are numeric (Int*/UInt*/Float*) columns of it;
    /// `dispersion` is given (finite, > 0) exactly when `loss = "negative_binomial"`;
    /// `aggregation = "likelihood"` has a likelihood loss; `data` ends in `.csv` or `.parquet`;
    /// `origin` (if given) is `YYYY-MM-DD` and `time_unit` (if given) is `day` or `week`. Then
    /// it reads the data: observed values must be finite numbers (and ≥ 0 for the likelihood
    /// losses, which compare counts); times must be all numbers (then `origin` and `time_unit`
    /// must be absent) or all dates (then `origin` is required); no time may repeat.
    ///
    /// # Errors
    /// - [`EngineError::SpecInvalid`] on the field `targets[index].<field>` for a spec problem.
    /// - [`EngineError::Data`] for a data-file problem, with the line (CSV: 1-based, header is
    ///   line 1; Parquet: row + 1, header counted as line 1) and column when known; a missing
    ///   file is a `Data` error too (it is the user's input).
    /// - [`EngineError::Io`] when the file exists but cannot be read.
    ///
    /// # Example
    /// ```no_run
    /// # fn main() -> simsweep_engine::Result<()> {
    /// use std::path::Path;
    /// use simsweep_engine::target::TargetSpec;
    /// # use simsweep_engine::model::{sir_bed, Simulator};
    /// # let simulator = sir_bed::SirBed::new(toml::from_str(
    /// #     "population = 763\ninitial_infected = 1\ndays = 14").unwrap()).unwrap();
    ///
    /// let spec: TargetSpec = toml::from_str(r#"
    ///     name = "in_bed"
    ///     output = "prevalence"
    ///     column = "in_bed"
    ///     data = "data/in_bed.csv"
    ///     data_column = "in_bed"
    ///     data_time_column = "date"
    ///     origin = "1978-01-21"
    ///     aggregation = "likelihood"
    ///     loss = "poisson"
    /// "#).expect("valid TOML");
    /// let job_file = Path::new("jobs/boarding_school.toml");
    /// let target = spec.resolve(0, job_file, Path::new("jobs"), &simulator.outputs())?;
    /// // ... later, for the replicates of one parameter set (their `prevalence` tables):
    /// # let tables: Vec<arrow::record_batch::RecordBatch> = Vec::new();
    /// let refs: Vec<_> = tables.iter().collect();
    /// let loss = target.loss(&refs).expect("model covers the data");
    /// # Ok(()) }
    /// ```
    pub fn resolve(
        &self,
        index: usize,
        job_file: &Path,
        base_dir: &Path,
        outputs: &[OutputSpec],
    ) -> Result<Target> {
        self.resolve_from(index, job_file, base_dir, outputs, None)
    }

    /// [`TargetSpec::resolve`] with the observations in `table` (an Arrow record batch with
    /// the columns `data_column` and `data_time_column`, of the types a Parquet data file may
    /// have) instead of the file `data`, which is then ignored. The target's
    /// [`Target::data_file`] is a label, `<base_dir>/(table of target <name>)`, and its
    /// [`Target::data_from_table`] is set.
    ///
    /// # Errors
    /// As [`TargetSpec::resolve`]; data errors name the label as the file and the row as line
    /// `row + 2` (as if the table had a header line).
    pub fn resolve_table(
        &self,
        index: usize,
        job_file: &Path,
        base_dir: &Path,
        outputs: &[OutputSpec],
        table: &RecordBatch,
    ) -> Result<Target> {
        self.resolve_from(index, job_file, base_dir, outputs, Some(table))
    }

    /// The measurement model the spec gives (checked: ρ a number in `(0, 1]` or a parameter
    /// name, the floor finite and ≥ 0 and only with a likelihood loss).
    fn observation(&self, invalid: &dyn Fn(&str, String) -> EngineError) -> Result<Observation> {
        let reporting = match &self.reporting_fraction {
            None => ReportingFraction::Value(1.0),
            Some(ReportingFractionSpec::Value(v)) if *v > 0.0 && *v <= 1.0 => {
                ReportingFraction::Value(*v)
            }
            Some(ReportingFractionSpec::Value(v)) => {
                return Err(invalid(
                    "reporting_fraction",
                    format!(
                        "{v} is not a fraction of cases reported: give a number in (0, 1], or \
                         the name of a parameter to fit it"
                    ),
                ))
            }
            Some(ReportingFractionSpec::Parameter(name)) if name.trim().is_empty() => {
                return Err(invalid(
                    "reporting_fraction",
                    "is empty: give a number in (0, 1] or the name of a parameter".to_string(),
                ))
            }
            Some(ReportingFractionSpec::Parameter(name)) => {
                ReportingFraction::Parameter(name.clone())
            }
        };
        let floor = match self.floor {
            None => 0.0,
            Some(_) if !self.loss.is_likelihood() => {
                return Err(invalid(
                    "floor",
                    format!(
                        "only the poisson and negative_binomial losses take a floor on the \
                         expected count; remove it (the loss is `{}`)",
                        self.loss.as_str()
                    ),
                ))
            }
            Some(f) if f >= 0.0 && f.is_finite() => f,
            Some(f) => {
                return Err(invalid(
                    "floor",
                    format!("{f} is not a usable floor: give a finite count ≥ 0 (sbied uses 1e-6)"),
                ))
            }
        };
        Ok(Observation { reporting, floor })
    }

    fn resolve_from(
        &self,
        index: usize,
        job_file: &Path,
        base_dir: &Path,
        outputs: &[OutputSpec],
        table: Option<&RecordBatch>,
    ) -> Result<Target> {
        let invalid = |field: &str, message: String| EngineError::SpecInvalid {
            file: job_file.to_path_buf(),
            field: format!("targets[{index}].{field}"),
            message,
        };

        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "name",
                format!(
                    "`{}` is not a usable target name: it becomes a folder name, so use only \
                     letters, digits, `_` and `-` (and at least one)",
                    self.name
                ),
            ));
        }

        let Some(output_index) = outputs.iter().position(|o| o.name == self.output) else {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(invalid(
                "output",
                format!(
                    "the model has no output `{}`; its outputs are: {}",
                    self.output,
                    names.join(", ")
                ),
            ));
        };
        let schema = &outputs[output_index].schema;
        for (field, column) in [("column", &self.column), ("time_column", &self.time_column)] {
            check_model_column(schema, &self.output, column).map_err(|m| invalid(field, m))?;
        }

        let loss_fn =
            match (self.loss, self.dispersion) {
                (LossKind::NegativeBinomial, Some(k)) if k > 0.0 && k.is_finite() => {
                    Loss::NegativeBinomial { k }
                }
                (LossKind::NegativeBinomial, Some(k)) => {
                    return Err(invalid(
                        "dispersion",
                        format!("{k} is not a usable dispersion: give a finite number > 0"),
                    ))
                }
                (LossKind::NegativeBinomial, None) => return Err(invalid(
                    "dispersion",
                    "the negative_binomial loss needs `dispersion`, its size k > 0 (variance = \
                     μ + μ²/k; large k is close to Poisson)"
                        .to_string(),
                )),
                (kind, Some(_)) => {
                    return Err(invalid(
                        "dispersion",
                        format!(
                            "only the negative_binomial loss takes `dispersion`; remove it or set \
                         `loss = \"negative_binomial\"` (the loss is `{}`)",
                            kind.as_str()
                        ),
                    ))
                }
                (LossKind::Mse, None) => Loss::Mse,
                (LossKind::Poisson, None) => Loss::Poisson,
            };
        if self.aggregation == Aggregation::Likelihood && !self.loss.is_likelihood() {
            return Err(invalid(
                "aggregation",
                format!(
                    "the likelihood aggregation needs a likelihood loss (poisson or \
                     negative_binomial), not `{}`; use `mean_signal` or `annealed` with mse",
                    self.loss.as_str()
                ),
            ));
        }

        let observation = self.observation(&invalid)?;

        let origin = match &self.origin {
            None => None,
            Some(text) => Some(NaiveDate::parse_from_str(text, DATE_FORMAT).map_err(|_| {
                invalid(
                    "origin",
                    format!("`{text}` is not a date; write it as YYYY-MM-DD, e.g. 2020-03-01"),
                )
            })?),
        };
        let unit_days = match self.time_unit.as_deref() {
            None | Some("day") => 1.0,
            Some("week") => 7.0,
            Some(other) => {
                return Err(invalid(
                    "time_unit",
                    format!("`{other}` is not a time unit; use `day` or `week`"),
                ))
            }
        };

        let (data_file, rows) = match table {
            Some(table) => {
                let label = base_dir.join(format!("(table of target {})", self.name));
                let batches = std::iter::once(Ok(table.clone()));
                let rows = read_record_batches(
                    &label,
                    &table.schema(),
                    batches,
                    &self.data_column,
                    &self.data_time_column,
                )?;
                (label, rows)
            }
            None => {
                let format = match self
                    .data
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("csv") => DataFormat::Csv,
                    Some("parquet") => DataFormat::Parquet,
                    _ => {
                        return Err(invalid(
                            "data",
                            format!(
                        "`{}`: cannot tell the format; the data file must end in `.csv` or \
                         `.parquet`",
                        self.data.display()
                    ),
                        ))
                    }
                };
                let data_file = base_dir.join(&self.data);
                if data_file.is_dir() {
                    return Err(invalid(
                        "data",
                        format!(
                    "`{}` is a directory, not a data file; give the target's CSV or Parquet file",
                    data_file.display()
                ),
                    ));
                }
                let rows = match format {
                    DataFormat::Csv => {
                        read_csv(&data_file, &self.data_column, &self.data_time_column)
                    }
                    DataFormat::Parquet => {
                        read_parquet(&data_file, &self.data_column, &self.data_time_column)
                    }
                }
                .map_err(|e| match e {
                    EngineError::Data { file, line, column, message }
                        if message == FILE_NOT_FOUND =>
                    {
                        EngineError::Data {
                            file,
                            line,
                            column,
                            message: format!(
                                "{FILE_NOT_FOUND}; check `targets[{index}].data` ({})",
                                if self.data.is_absolute() {
                                    "an absolute path".to_string()
                                } else if base_dir.as_os_str().is_empty() {
                                    "relative to the job file's folder, the current directory"
                                        .to_string()
                                } else {
                                    format!(
                                        "relative to the job file's folder {}",
                                        base_dir.display()
                                    )
                                }
                            ),
                        }
                    }
                    other => other,
                })?;
                (data_file, rows)
            }
        };
        let data_error = |line: u64, column: &str, message: String| EngineError::Data {
            file: data_file.clone(),
            line: Some(line),
            column: Some(column.to_string()),
            message,
        };
        if rows.is_empty() {
            return Err(EngineError::Data {
                file: data_file.clone(),
                line: None,
                column: None,
                message: "no observations: the file has no data rows".to_string(),
            });
        }

        let times = match numeric_times(&rows) {
            Some(times) => {
                if self.origin.is_some() {
                    return Err(invalid(
                        "origin",
                        format!(
                            "the time column `{}` of {} is numeric (model time units), so \
                             `origin` does not apply; remove it, or give dates in the data",
                            self.data_time_column,
                            data_file.display()
                        ),
                    ));
                }
                if self.time_unit.is_some() {
                    return Err(invalid(
                        "time_unit",
                        format!(
                            "the time column `{}` of {} is numeric (model time units), so \
                             `time_unit` does not apply; remove it",
                            self.data_time_column,
                            data_file.display()
                        ),
                    ));
                }
                for (row, t) in rows.iter().zip(&times) {
                    if !t.is_finite() {
                        return Err(data_error(
                            row.line,
                            &self.data_time_column,
                            format!("time `{t}` is not a finite number"),
                        ));
                    }
                }
                times
            }
            None => {
                let dates = date_times(&rows)
                    .map_err(|(line, message)| data_error(line, &self.data_time_column, message))?;
                let Some(origin) = origin else {
                    return Err(invalid(
                        "origin",
                        format!(
                            "the time column `{}` of {} holds dates, so `origin` is required: \
                             add `origin = \"YYYY-MM-DD\"`, the date that is model time 0",
                            self.data_time_column,
                            data_file.display()
                        ),
                    ));
                };
                dates
                    .iter()
                    .map(|d| d.signed_duration_since(origin).num_days() as f64 / unit_days)
                    .collect()
            }
        };

        let mut first_line: HashMap<u64, u64> = HashMap::with_capacity(times.len());
        for (row, t) in rows.iter().zip(&times) {
            // `+ 0.0` folds −0.0 into 0.0 so that both hash alike.
            if let Some(first) = first_line.insert((t + 0.0).to_bits(), row.line) {
                return Err(data_error(
                    row.line,
                    &self.data_time_column,
                    format!(
                        "observation time {t} appears twice (first at line {first}); keep one \
                         row per time"
                    ),
                ));
            }
        }

        if self.loss.is_likelihood() {
            if let Some(row) = rows.iter().find(|r| r.value.fract() != 0.0) {
                return Err(data_error(
                    row.line,
                    &self.data_column,
                    format!(
                        "{} is not a whole number; the {} loss compares counts; use `mse` for \
                         other data",
                        row.value,
                        self.loss.as_str()
                    ),
                ));
            }
            if let Some(row) = rows.iter().find(|r| r.value < 0.0) {
                return Err(data_error(
                    row.line,
                    &self.data_column,
                    format!(
                        "{} is negative; the {} loss compares counts, which must be ≥ 0",
                        row.value,
                        self.loss.as_str()
                    ),
                ));
            }
        }

        Ok(Target {
            name: self.name.clone(),
            output: self.output.clone(),
            output_index,
            column: self.column.clone(),
            time_column: self.time_column.clone(),
            times,
            observed: rows.iter().map(|r| r.value).collect(),
            aggregation: self.aggregation,
            loss_fn,
            data_file,
            data_from_table: table.is_some(),
            data_time_column: self.data_time_column.clone(),
            lines: rows.iter().map(|r| r.line).collect(),
            observation,
        })
    }
}

/// The message of the `Data` error for a missing data file (completed by `resolve`).
const FILE_NOT_FOUND: &str = "file not found";

#[derive(Debug, Clone, Copy)]
enum DataFormat {
    Csv,
    Parquet,
}

/// One data row: observed value and raw time, with its line for messages.
#[derive(Debug)]
struct RawRow {
    line: u64,
    value: f64,
    time: RawTime,
}

/// A time cell before the column's kind (numbers or dates) is known.
#[derive(Debug)]
enum RawTime {
    Number(f64),
    Date(NaiveDate),
    Text(String),
}

fn is_numeric_type(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_floating()
}

/// `Err(message)` unless `column` is a numeric column of `schema`.
fn check_model_column(schema: &Schema, output: &str, column: &str) -> Result<(), String> {
    match schema.field_with_name(column) {
        Ok(field) if is_numeric_type(field.data_type()) => Ok(()),
        Ok(field) => Err(format!(
            "column `{column}` of output `{output}` has type {}; a target needs a numeric \
             (Int*/UInt*/Float*) column",
            field.data_type()
        )),
        Err(_) => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(format!(
                "output `{output}` has no column `{column}`; its columns are: {}",
                names.join(", ")
            ))
        }
    }
}

/// Opens a data file; a missing file is the user's input, hence a `Data` error.
fn open_data(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EngineError::Data {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: FILE_NOT_FOUND.to_string(),
            }
        } else {
            EngineError::io(path, source)
        }
    })
}

fn missing_column(path: &Path, column: &str, present: &[&str]) -> EngineError {
    EngineError::Data {
        file: path.to_path_buf(),
        line: None,
        column: Some(column.to_string()),
        message: format!("no such column; the columns present are: {}", present.join(", ")),
    }
}

/// Parses an observed value written as text.
fn parse_value(text: &str) -> Result<f64, String> {
    if text.is_empty() {
        return Err("empty value; every row needs an observed value".to_string());
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite number")),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

fn csv_error(path: &Path, error: csv::Error) -> EngineError {
    if error.is_io_error() {
        if let csv::ErrorKind::Io(source) = error.into_kind() {
            return EngineError::io(path, source);
        }
        return EngineError::io(path, std::io::Error::other("CSV I/O error"));
    }
    EngineError::Data {
        file: path.to_path_buf(),
        line: error.position().map(|p| p.line()),
        column: None,
        message: format!("cannot read CSV: {error}"),
    }
}

/// Reads the value and time columns of a CSV file with a header row.
fn read_csv(path: &Path, value_column: &str, time_column: &str) -> Result<Vec<RawRow>> {
    let file = open_data(path)?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(file);
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    if headers.iter().all(str::is_empty) {
        return Err(EngineError::Data {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!(
                "the file is empty; it needs a header line with the columns `{time_column}` and \
                 `{value_column}`, then one row per observation"
            ),
        });
    }
    let present: Vec<&str> = headers.iter().collect();
    let find = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| missing_column(path, name, &present))
    };
    let (value_index, time_index) = (find(value_column)?, find(time_column)?);

    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| csv_error(path, e))? {
        let line = record.position().map_or(rows.len() as u64 + 2, |p| p.line());
        let cell = |index: usize| record.get(index).unwrap_or("");
        let data_error = |column: &str, message: String| EngineError::Data {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column.to_string()),
            message,
        };
        let value = parse_value(cell(value_index)).map_err(|m| data_error(value_column, m))?;
        let time = cell(time_index);
        if time.is_empty() {
            return Err(data_error(time_column, "empty time; every row needs one".to_string()));
        }
        rows.push(RawRow { line, value, time: RawTime::Text(time.to_string()) });
    }
    Ok(rows)
}

/// Reads the value and time columns of a Parquet file.
///
/// Values: any Int*/UInt*/Float* column. Times: Int*/UInt*/Float* (model time units), Date32,
/// Date64, or strings (numbers or dates, as in CSV).
fn read_parquet(path: &Path, value_column: &str, time_column: &str) -> Result<Vec<RawRow>> {
    let file = open_data(path)?;
    // Observed data is input: a file that cannot be decoded is the user's to fix (exit 2).
    let parquet_error = |source: parquet::errors::ParquetError| EngineError::Data {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read this Parquet file: {source}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(parquet_error)?;
    read_record_batches(path, &schema, reader, value_column, time_column)
}

/// Reads the value and time columns of Arrow record batches of schema `schema` (a Parquet
/// file's, or a table given in code), as [`read_parquet`] describes; `path` names them in
/// errors, and "lines" count rows from 2 (as if under a header).
fn read_record_batches(
    path: &Path,
    schema: &arrow::datatypes::SchemaRef,
    batches: impl Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
    value_column: &str,
    time_column: &str,
) -> Result<Vec<RawRow>> {
    let present: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let find = |name: &str| schema.index_of(name).map_err(|_| missing_column(path, name, &present));
    let (value_index, time_index) = (find(value_column)?, find(time_column)?);
    let type_error = |column: &str, data_type: &DataType, expected: &str| EngineError::Data {
        file: path.to_path_buf(),
        line: None,
        column: Some(column.to_string()),
        message: format!("the column has type {data_type}; expected {expected}"),
    };
    let value_type = schema.field(value_index).data_type().clone();
    if !is_numeric_type(&value_type) {
        return Err(type_error(value_column, &value_type, "numbers (Int*/UInt*/Float*)"));
    }
    let time_type = schema.field(time_index).data_type().clone();
    let time_is_string =
        matches!(time_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !(is_numeric_type(&time_type)
        || time_is_string
        || matches!(time_type, DataType::Date32 | DataType::Date64))
    {
        return Err(type_error(time_column, &time_type, "numbers, Date32/Date64, or strings"));
    }

    let mut rows = Vec::new();
    for batch in batches {
        let read_error = |e: arrow::error::ArrowError| EngineError::Data {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read Parquet data: {e}"),
        };
        let batch = batch.map_err(read_error)?;
        let first_line = rows.len() as u64 + 2;
        // The `as_*` downcasts below cannot panic: each follows a cast to, or a check of, the
        // very type it asks for.
        let values = cast(batch.column(value_index), &DataType::Float64).map_err(read_error)?;
        let values = values.as_primitive::<Float64Type>();
        let time_array = batch.column(time_index);
        let time_f64;
        let time_text;
        let times = if time_is_string {
            time_text = cast(time_array, &DataType::Utf8).map_err(read_error)?;
            TimeCells::Text(time_text.as_string::<i32>())
        } else if time_type == DataType::Date32 {
            TimeCells::Date32(time_array.as_primitive::<Date32Type>())
        } else if time_type == DataType::Date64 {
            TimeCells::Date64(time_array.as_primitive::<Date64Type>())
        } else {
            time_f64 = cast(time_array, &DataType::Float64).map_err(read_error)?;
            TimeCells::Number(time_f64.as_primitive::<Float64Type>())
        };
        for i in 0..batch.num_rows() {
            let line = first_line + i as u64;
            let data_error = |column: &str, message: String| EngineError::Data {
                file: path.to_path_buf(),
                line: Some(line),
                column: Some(column.to_string()),
                message,
            };
            if values.is_null(i) {
                return Err(data_error(
                    value_column,
                    "empty (null) value; every row needs an observed value".to_string(),
                ));
            }
            let value = values.value(i);
            if !value.is_finite() {
                return Err(data_error(value_column, format!("`{value}` is not a finite number")));
            }
            let time = times.get(i).map_err(|m| data_error(time_column, m))?;
            rows.push(RawRow { line, value, time });
        }
    }
    Ok(rows)
}

/// The time column of one Parquet batch, by kind.
enum TimeCells<'a> {
    Number(&'a arrow::array::Float64Array),
    Date32(&'a arrow::array::Date32Array),
    Date64(&'a arrow::array::Date64Array),
    Text(&'a arrow::array::StringArray),
}

impl TimeCells<'_> {
    fn get(&self, i: usize) -> Result<RawTime, String> {
        let is_null = match self {
            TimeCells::Number(a) => a.is_null(i),
            TimeCells::Date32(a) => a.is_null(i),
            TimeCells::Date64(a) => a.is_null(i),
            TimeCells::Text(a) => a.is_null(i),
        };
        if is_null {
            return Err("empty (null) time; every row needs one".to_string());
        }
        let out_of_range = || "date out of range".to_string();
        Ok(match self {
            TimeCells::Number(a) => RawTime::Number(a.value(i)),
            TimeCells::Date32(a) => {
                RawTime::Date(NaiveDate::from_epoch_days(a.value(i)).ok_or_else(out_of_range)?)
            }
            TimeCells::Date64(a) => {
                let days =
                    i32::try_from(a.value(i).div_euclid(86_400_000)).map_err(|_| out_of_range())?;
                RawTime::Date(NaiveDate::from_epoch_days(days).ok_or_else(out_of_range)?)
            }
            TimeCells::Text(a) => {
                let text = a.value(i).trim();
                if text.is_empty() {
                    return Err("empty time; every row needs one".to_string());
                }
                RawTime::Text(text.to_string())
            }
        })
    }
}

/// The times as numbers when every cell is a number (or text that parses as one).
fn numeric_times(rows: &[RawRow]) -> Option<Vec<f64>> {
    rows.iter()
        .map(|r| match &r.time {
            RawTime::Number(x) => Some(*x),
            RawTime::Text(s) => s.parse::<f64>().ok(),
            RawTime::Date(_) => None,
        })
        .collect()
}

/// The times as dates; `Err((line, message))` at the first cell that is not a date.
fn date_times(rows: &[RawRow]) -> Result<Vec<NaiveDate>, (u64, String)> {
    let as_date = |time: &RawTime| match time {
        RawTime::Date(d) => Some(*d),
        RawTime::Text(s) => NaiveDate::parse_from_str(s, DATE_FORMAT).ok(),
        RawTime::Number(_) => None,
    };
    let example = rows.iter().find(|r| as_date(&r.time).is_some()).map(|r| (r.line, r));
    rows.iter()
        .map(|r| {
            as_date(&r.time).ok_or_else(|| {
                let shown = match &r.time {
                    RawTime::Text(s) => s.clone(),
                    RawTime::Number(x) => x.to_string(),
                    RawTime::Date(d) => d.to_string(),
                };
                let message = match example {
                    Some((line, ex)) => format!(
                        "`{shown}` is not a date YYYY-MM-DD; the time column holds dates (e.g. \
                         `{}` at line {line}), so every time must be one",
                        match &ex.time {
                            RawTime::Text(s) => s.clone(),
                            RawTime::Date(d) => d.to_string(),
                            RawTime::Number(x) => x.to_string(),
                        }
                    ),
                    None => {
                        format!("`{shown}` is neither a number (model time) nor a date YYYY-MM-DD")
                    }
                };
                (r.line, message)
            })
        })
        .collect()
}

/// Arrow's half-precision float (`half::f16`, which this crate does not name directly).
type F16 = <Float16Type as ArrowPrimitiveType>::Native;

fn f16_to_f64(x: F16) -> f64 {
    x.to_f64()
}

/// `i64`/`u64` to `f64`, exact up to 2⁵³ (model times and counts are far below).
fn i64_to_f64(x: i64) -> f64 {
    x as f64
}

fn u64_to_f64(x: u64) -> f64 {
    x as f64
}

/// Read-only `f64` view of a numeric Arrow column, without copying it.
macro_rules! numeric_view {
    ($($variant:ident($arrow:ty, $native:ty, $to_f64:expr)),* $(,)?) => {
        /// A numeric column's values, by native type.
        enum NumericView<'a> {
            $($variant(&'a [$native]),)*
        }

        impl<'a> NumericView<'a> {
            /// `None` unless `array` is Int*/UInt*/Float*.
            fn new(array: &'a dyn Array) -> Option<Self> {
                match array.data_type() {
                    $(DataType::$variant => {
                        Some(Self::$variant(&array.as_primitive_opt::<$arrow>()?.values()[..]))
                    })*
                    _ => None,
                }
            }

            /// (type, address, length) of the values: equal for two views of the same memory,
            /// which therefore hold the same values while both are borrowed.
            fn identity(&self) -> (usize, usize, usize) {
                let mut variant = 0usize;
                $(
                    if let Self::$variant(v) = self {
                        return (variant, v.as_ptr() as usize, v.len());
                    }
                    variant += 1;
                )*
                (variant, 0, 0)
            }

            #[inline]
            fn get(&self, i: usize) -> f64 {
                match self {
                    $(Self::$variant(v) => $to_f64(v[i]),)*
                }
            }
        }
    };
}

numeric_view!(
    Int8(Int8Type, i8, f64::from),
    Int16(Int16Type, i16, f64::from),
    Int32(Int32Type, i32, f64::from),
    Int64(Int64Type, i64, i64_to_f64),
    UInt8(UInt8Type, u8, f64::from),
    UInt16(UInt16Type, u16, f64::from),
    UInt32(UInt32Type, u32, f64::from),
    UInt64(UInt64Type, u64, u64_to_f64),
    Float16(Float16Type, F16, f16_to_f64),
    Float32(Float32Type, f32, f64::from),
    Float64(Float64Type, f64, f64::from),
);

/// The rows matched to a target's observations for one time column, by that column's identity
/// (see [`Target::align_into`]).
#[derive(Default)]
struct RowCache {
    /// [`NumericView::identity`] of the time column the rows are for.
    key: Option<(usize, usize, usize)>,
    /// Per observation, its row.
    rows: Vec<usize>,
}

/// Result of one merge pass of model rows against the sorted observation times.
enum Merge {
    /// Every observation found its row.
    Complete,
    /// Not proven complete: the rows were not in ascending time order, or this observation
    /// (an index into `times`) was passed over or left without a match.
    Incomplete(usize),
}

impl Target {
    /// Checks that every observation time is among `model_times`, the times the model reports
    /// (see [`crate::model::Simulator::output_times`]), so that a target no model row can match
    /// is refused before the sweep runs rather than scoring every parameter set as null.
    ///
    /// # Errors
    /// [`EngineError::Data`] naming the data file, the line and the time column, with the
    /// model's range and what to change.
    pub fn check_times(&self, model_times: &[f64]) -> Result<()> {
        let mut known: Vec<f64> = model_times.to_vec();
        known.sort_by(f64::total_cmp);
        for (k, t) in self.times.iter().enumerate() {
            if known.binary_search_by(|m| m.total_cmp(t)).is_err() {
                let range = match (known.first(), known.last()) {
                    (Some(a), Some(b)) => format!("{a}..={b}"),
                    _ => "none".to_string(),
                };
                return Err(EngineError::Data {
                    file: self.data_file.clone(),
                    line: self.lines.get(k).copied(),
                    column: Some(self.data_time_column.clone()),
                    message: format!(
                        "target `{}`: observation time {t} is not among the model's `{}` values \
                         ({range}) for output `{}`; drop the observation, or change the model's \
                         settings (e.g. `days`) or the target's `origin`/`time_unit`",
                        self.name, self.time_column, self.output
                    ),
                });
            }
        }
        Ok(())
    }

    /// The model's values at the observation times, from one replicate's table of this
    /// target's output: `result[i]` is `column` at the row whose `time_column` equals
    /// `times[i]` (as `f64`; the first such row if several).
    ///
    /// Cost: one pass over the table's rows when its times are ascending (the usual case)
    /// and the observation times are ascending, plus a sort of the rows otherwise (or of the
    /// observations, when the data file is not in time order). Rows whose time is null or NaN
    /// are ignored.
    ///
    /// # Errors
    /// [`AlignError::MissingTime`] when an observation time has no row;
    /// [`AlignError::MissingColumn`] / [`AlignError::NotNumeric`] when the table lacks the
    /// columns or they are not numeric; [`AlignError::NullValue`] for a null model value at an
    /// observation time.
    pub fn align(&self, table: &RecordBatch) -> Result<Vec<f64>, AlignError> {
        let mut out = vec![f64::NAN; self.times.len()];
        self.align_into(table, &mut out, &mut RowCache::default())?;
        Ok(out)
    }

    /// [`Target::align`] into `out` (length `times.len()`). `cache` remembers the rows matched
    /// to the observations for one time column: a table whose time column is the very same
    /// array (replicates of a model sharing its time column) reuses them instead of merging
    /// again, which gives the same rows.
    fn align_into(
        &self,
        table: &RecordBatch,
        out: &mut [f64],
        cache: &mut RowCache,
    ) -> Result<(), AlignError> {
        let column = |name: &str| {
            let array = table.column_by_name(name).ok_or_else(|| AlignError::MissingColumn {
                target: self.name.clone(),
                column: name.to_string(),
                available: table.schema().fields().iter().map(|f| f.name().to_string()).collect(),
            })?;
            let view = NumericView::new(array.as_ref()).ok_or_else(|| AlignError::NotNumeric {
                target: self.name.clone(),
                column: name.to_string(),
                data_type: array.data_type().to_string(),
            })?;
            Ok::<_, AlignError>((view, array.logical_nulls()))
        };
        let (model_times, time_nulls) = column(&self.time_column)?;
        let (values, value_nulls) = column(&self.column)?;
        let key = time_nulls.is_none().then(|| model_times.identity());
        let value_at = |obs: usize, row: usize| {
            if value_nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                return Err(AlignError::NullValue {
                    target: self.name.clone(),
                    column: self.column.clone(),
                    time: self.times[obs],
                });
            }
            Ok(values.get(row))
        };
        if key.is_some() && cache.key == key {
            for ((obs, &row), slot) in cache.rows.iter().enumerate().zip(out.iter_mut()) {
                *slot = value_at(obs, row)?;
            }
            return Ok(());
        }
        let present = |row: usize| {
            !time_nulls.as_ref().is_some_and(|n| n.is_null(row)) && !model_times.get(row).is_nan()
        };

        // Observation indices in ascending time order; the identity (no allocation) when the
        // data file is already in time order.
        let sorted_obs: Option<Vec<usize>> = if self.times.windows(2).all(|w| w[0] < w[1]) {
            None
        } else {
            let mut order: Vec<usize> = (0..self.times.len()).collect();
            order.sort_by(|&a, &b| self.times[a].total_cmp(&self.times[b]));
            Some(order)
        };
        let obs_at = |j: usize| sorted_obs.as_ref().map_or(j, |o| o[j]);

        cache.key = None;
        let mut rows_taken = std::mem::take(&mut cache.rows);
        rows_taken.clear();
        rows_taken.resize(self.times.len(), usize::MAX);
        let mut take = |obs: usize, row: usize| {
            out[obs] = value_at(obs, row)?;
            rows_taken[obs] = row;
            Ok(())
        };

        let rows = (0..table.num_rows())
            .filter(|&row| present(row))
            .map(|row| (model_times.get(row), row));
        if let Merge::Complete = merge(&self.times, &obs_at, rows, &mut take)? {
            cache.key = key;
            cache.rows = rows_taken;
            return Ok(());
        }

        // Rows out of time order, or an observation without a row: sort the rows and merge
        // again, which settles it.
        let mut sorted_rows: Vec<(f64, usize)> = (0..table.num_rows())
            .filter(|&row| present(row))
            .map(|row| (model_times.get(row), row))
            .collect();
        sorted_rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        match merge(&self.times, &obs_at, sorted_rows.iter().copied(), &mut take)? {
            Merge::Complete => {
                cache.key = key;
                cache.rows = rows_taken;
                Ok(())
            }
            Merge::Incomplete(obs) => Err(AlignError::MissingTime {
                target: self.name.clone(),
                time: self.times[obs],
                time_column: self.time_column.clone(),
                model_range: sorted_rows
                    .first()
                    .zip(sorted_rows.last())
                    .map(|(lo, hi)| (lo.0, hi.0)),
            }),
        }
    }

    /// This target's loss for the replicates of one parameter set: each replicate's table
    /// (of output `output_index`) is aligned with [`Target::align`], then combined with
    /// [`loss::aggregate`] using `aggregation` and `loss_fn`.
    ///
    /// `Ok(None)` when `replicates` is empty (every replicate of the parameter set failed).
    ///
    /// # Errors
    /// The first [`AlignError`] of any replicate.
    ///
    /// With a measurement model ([`Target::observation`]) each aligned value `x` becomes
    /// `ρ·x + floor`; a reporting fraction that is a parameter is taken as 1 here (use
    /// [`Target::estimate`] with the set's value).
    pub fn loss(&self, replicates: &[&RecordBatch]) -> Result<Option<f64>, AlignError> {
        let rho = match self.observation.reporting {
            ReportingFraction::Value(v) => v,
            ReportingFraction::Parameter(_) => 1.0,
        };
        Ok(self.estimate(replicates, rho)?.map(|e| e.loss))
    }

    /// The reporting fraction of the parameter set `params`: the fixed value, or the set's
    /// value of the parameter (NaN when the set lacks it or it is not a number, which gives a
    /// NaN loss; the spec check rules that out for a sweep).
    pub fn reporting_fraction(&self, params: &crate::params::ParameterSet) -> f64 {
        match &self.observation.reporting {
            ReportingFraction::Value(v) => *v,
            ReportingFraction::Parameter(name) => match params.get(name) {
                Some(crate::params::ParamValue::Float(v)) => *v,
                Some(crate::params::ParamValue::Int(v)) => *v as f64,
                _ => f64::NAN,
            },
        }
    }

    /// This target's loss and its Monte Carlo standard error ([`loss::aggregate_with_se`]) for
    /// the replicates of one parameter set whose reporting fraction is `reporting_fraction`
    /// (see [`Target::reporting_fraction`]): each replicate is aligned ([`Target::align`]),
    /// mapped through the measurement model (`ρ·x + floor`), then aggregated.
    ///
    /// `Ok(None)` when `replicates` is empty (every replicate of the parameter set failed).
    ///
    /// # Errors
    /// The first [`AlignError`] of any replicate.
    pub fn estimate(
        &self,
        replicates: &[&RecordBatch],
        reporting_fraction: f64,
    ) -> Result<Option<loss::LossEstimate>, AlignError> {
        if replicates.is_empty() {
            return Ok(None);
        }
        let n = self.times.len();
        if n == 0 {
            let empty: Vec<&[f64]> = vec![&[]; replicates.len()];
            return Ok(loss::aggregate_with_se(
                self.aggregation,
                &self.loss_fn,
                &empty,
                &self.observed,
            ));
        }
        let mut predicted = vec![f64::NAN; n * replicates.len()];
        let mut cache = RowCache::default();
        for (chunk, table) in predicted.chunks_mut(n).zip(replicates) {
            self.align_into(table, chunk, &mut cache)?;
        }
        let floor = self.observation.floor;
        if reporting_fraction != 1.0 || floor != 0.0 {
            for x in &mut predicted {
                *x = reporting_fraction * *x + floor;
            }
        }
        let slices: Vec<&[f64]> = predicted.chunks(n).collect();
        Ok(loss::aggregate_with_se(self.aggregation, &self.loss_fn, &slices, &self.observed))
    }
}

/// Merges model rows `(time, row)` with the observations in ascending time order
/// (`obs_at(j)` is the index in `times` of the `j`-th smallest), calling `take(obs, row)` on each
/// match. Stops early at the first row out of order or the first observation passed over.
fn merge(
    times: &[f64],
    obs_at: &dyn Fn(usize) -> usize,
    rows: impl Iterator<Item = (f64, usize)>,
    take: &mut dyn FnMut(usize, usize) -> Result<(), AlignError>,
) -> Result<Merge, AlignError> {
    let n = times.len();
    let mut j = 0;
    let mut previous = f64::NEG_INFINITY;
    for (t, row) in rows {
        if j == n {
            break;
        }
        if t < previous {
            return Ok(Merge::Incomplete(obs_at(j)));
        }
        previous = t;
        let obs = obs_at(j);
        if times[obs] < t {
            return Ok(Merge::Incomplete(obs));
        }
        if times[obs] == t {
            take(obs, row)?;
            j += 1;
        }
    }
    if j < n {
        Ok(Merge::Incomplete(obs_at(j)))
    } else {
        Ok(Merge::Complete)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use parquet::arrow::ArrowWriter;

    use super::*;

    const JOB: &str = "/jobs/job.toml";

    /// A spec for target `in_bed` against output `prevalence` (columns `day`, `in_bed`), data
    /// `data` with columns `cases` (values) and `date` (time), mean_signal + mse.
    fn spec(data: &str) -> TargetSpec {
        TargetSpec {
            name: "in_bed".to_string(),
            output: "prevalence".to_string(),
            column: "in_bed".to_string(),
            time_column: default_time_column(),
            data: PathBuf::from(data),
            data_column: "cases".to_string(),
            data_time_column: "date".to_string(),
            origin: None,
            time_unit: None,
            aggregation: Aggregation::MeanSignal,
            loss: LossKind::Mse,
            dispersion: None,
            reporting_fraction: None,
            floor: None,
        }
    }

    fn outputs() -> Vec<OutputSpec> {
        let schema = |fields: Vec<Field>| Arc::new(Schema::new(fields));
        vec![
            OutputSpec {
                name: "events".to_string(),
                schema: schema(vec![Field::new("day", DataType::Int64, false)]),
            },
            OutputSpec {
                name: "prevalence".to_string(),
                schema: schema(vec![
                    Field::new("day", DataType::Int64, false),
                    Field::new("in_bed", DataType::Float64, false),
                    Field::new("label", DataType::Utf8, false),
                ]),
            },
        ]
    }

    /// Writes `contents` to `name` in a fresh temporary folder.
    fn write(name: &str, contents: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), contents).unwrap();
        dir
    }

    fn resolve(spec: &TargetSpec, dir: &Path) -> Result<Target> {
        spec.resolve(0, Path::new(JOB), dir, &outputs())
    }

    /// Asserts a `SpecInvalid` on `targets[0].<field>` whose message contains `needle`.
    fn assert_spec_invalid(result: Result<Target>, expected_field: &str, needle: &str) {
        match result {
            Err(e @ EngineError::SpecInvalid { .. }) => {
                let EngineError::SpecInvalid { file, field, message } = &e else { unreachable!() };
                assert_eq!(file, Path::new(JOB));
                assert_eq!(field, &format!("targets[0].{expected_field}"));
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                assert!(e.to_string().starts_with("/jobs/job.toml: field `targets[0]."));
            }
            other => panic!("expected SpecInvalid on {expected_field}, got {other:?}"),
        }
    }

    /// Asserts a `Data` error at `line`/`column` whose message contains `needle`.
    fn assert_data_error(
        result: Result<Target>,
        expected_file: &Path,
        expected_line: Option<u64>,
        expected_column: Option<&str>,
        needle: &str,
    ) {
        match result {
            Err(EngineError::Data { file, line, column, message }) => {
                assert_eq!(file, expected_file);
                assert_eq!(line, expected_line);
                assert_eq!(column.as_deref(), expected_column);
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
            other => panic!("expected a Data error, got {other:?}"),
        }
    }

    const DATES_CSV: &str = "date,cases\n2020-03-02,3\n2020-03-03,5\n2020-03-04,0\n";

    #[test]
    fn csv_dates_with_origin() {
        let dir = write("obs.csv", DATES_CSV);
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        let t = resolve(&s, dir.path()).unwrap();
        assert_eq!(t.times, vec![1.0, 2.0, 3.0]);
        assert_eq!(t.observed, vec![3.0, 5.0, 0.0]);
        assert_eq!(t.output_index, 1);
        assert_eq!(t.loss_fn, Loss::Mse);
        assert_eq!(t.data_file, dir.path().join("obs.csv"));
    }

    #[test]
    fn csv_week_unit() {
        // 2020-03-08 − 2020-03-01 = 7 days = 1 week; 2020-03-22 is 21 days = 3 weeks.
        let dir = write("obs.csv", "date,cases\n2020-03-08,10\n2020-03-22,30\n2020-03-01,1\n");
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        s.time_unit = Some("week".to_string());
        let t = resolve(&s, dir.path()).unwrap();
        assert_eq!(t.times, vec![1.0, 3.0, 0.0]);
        assert_eq!(t.observed, vec![10.0, 30.0, 1.0]);
    }

    #[test]
    fn csv_numeric_time_column() {
        let dir = write("obs.csv", "cases,date\n1, 0\n4,2\n9,5\n");
        let mut s = spec("obs.csv");
        s.loss = LossKind::NegativeBinomial;
        s.aggregation = Aggregation::Likelihood;
        s.dispersion = Some(2.5);
        let t = resolve(&s, dir.path()).unwrap();
        assert_eq!(t.times, vec![0.0, 2.0, 5.0]);
        assert_eq!(t.observed, vec![1.0, 4.0, 9.0]);
        assert_eq!(t.loss_fn, Loss::NegativeBinomial { k: 2.5 });
        assert_eq!(t.lines, vec![2, 3, 4]);
        // Counts must be whole numbers for a likelihood loss.
        let dir = write("obs.csv", "cases,date\n1, 0\n4,2\n9.5,5\n");
        let e = resolve(&s, dir.path()).unwrap_err().to_string();
        assert!(e.contains("obs.csv:4: column `cases`") && e.contains("not a whole number"), "{e}");
        // Observation times must be among the model's.
        let dir = write("obs.csv", "cases,date\n1, 0\n4,2\n9,5\n");
        let t = resolve(&s, dir.path()).unwrap();
        assert!(t.check_times(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).is_ok());
        let e = t.check_times(&[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap_err().to_string();
        assert!(e.contains("obs.csv:4: column `date`") && e.contains("0..=4"), "{e}");
        assert_eq!(t.loss_fn.kind(), LossKind::NegativeBinomial);
    }

    #[test]
    fn spec_errors_name_the_field() {
        let dir = write("obs.csv", DATES_CSV);
        let d = dir.path();
        let with = |f: &dyn Fn(&mut TargetSpec)| {
            let mut s = spec("obs.csv");
            s.origin = Some("2020-03-01".to_string());
            f(&mut s);
            resolve(&s, d)
        };
        assert_spec_invalid(
            with(&|s| s.output = "incidence".into()),
            "output",
            "outputs are: events, prevalence",
        );
        assert_spec_invalid(
            with(&|s| s.column = "nope".into()),
            "column",
            "its columns are: day, in_bed, label",
        );
        assert_spec_invalid(with(&|s| s.column = "label".into()), "column", "has type Utf8");
        assert_spec_invalid(with(&|s| s.time_column = "t".into()), "time_column", "no column `t`");
        assert_spec_invalid(
            with(&|s| s.loss = LossKind::NegativeBinomial),
            "dispersion",
            "needs `dispersion`",
        );
        assert_spec_invalid(
            with(&|s| {
                s.loss = LossKind::NegativeBinomial;
                s.dispersion = Some(0.0);
            }),
            "dispersion",
            "finite number > 0",
        );
        assert_spec_invalid(
            with(&|s| {
                s.loss = LossKind::NegativeBinomial;
                s.dispersion = Some(f64::INFINITY);
            }),
            "dispersion",
            "finite number > 0",
        );
        assert_spec_invalid(
            with(&|s| {
                s.loss = LossKind::Poisson;
                s.dispersion = Some(3.0);
            }),
            "dispersion",
            "only the negative_binomial",
        );
        assert_spec_invalid(
            with(&|s| s.aggregation = Aggregation::Likelihood),
            "aggregation",
            "not `mse`",
        );
        assert_spec_invalid(with(&|s| s.name = String::new()), "name", "folder name");
        assert_spec_invalid(with(&|s| s.name = "a/b".into()), "name", "`a/b`");
        assert_spec_invalid(with(&|s| s.data = "obs.xlsx".into()), "data", "`.csv` or `.parquet`");
        assert_spec_invalid(
            with(&|s| s.origin = Some("01/03/2020".into())),
            "origin",
            "`01/03/2020` is not a date",
        );
        assert_spec_invalid(with(&|s| s.time_unit = Some("month".into())), "time_unit", "`month`");
        assert_spec_invalid(with(&|s| s.origin = None), "origin", "holds dates");
    }

    #[test]
    fn numeric_times_refuse_origin_and_unit() {
        let dir = write("obs.csv", "date,cases\n1,3\n2,4\n");
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        assert_spec_invalid(resolve(&s, dir.path()), "origin", "is numeric");
        s.origin = None;
        s.time_unit = Some("week".to_string());
        assert_spec_invalid(resolve(&s, dir.path()), "time_unit", "is numeric");
    }

    #[test]
    fn missing_file_is_a_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nowhere.csv");
        let result = resolve(&spec("nowhere.csv"), dir.path());
        assert_data_error(result, &file, None, None, "file not found; check `targets[0].data`");
        let file = dir.path().join("nowhere.parquet");
        let result = resolve(&spec("nowhere.parquet"), dir.path());
        assert_data_error(result, &file, None, None, "file not found");
    }

    #[test]
    fn csv_data_errors_name_line_and_column() {
        let cases: [(&str, Option<u64>, Option<&str>, &str); 8] = [
            ("date,count\n2020-03-02,3\n", None, Some("cases"), "columns present are: date, count"),
            (
                "date,cases\n2020-03-02,3\n2020-03-03,many\n",
                Some(3),
                Some("cases"),
                "`many` is not a number",
            ),
            ("date,cases\n2020-03-02,\n", Some(2), Some("cases"), "empty value"),
            ("date,cases\n2020-03-02,inf\n", Some(2), Some("cases"), "not a finite number"),
            (
                "date,cases\n2020-03-02,3\n2020-02-30,4\n",
                Some(3),
                Some("date"),
                "`2020-02-30` is not a date YYYY-MM-DD; the time column holds dates (e.g. \
                 `2020-03-02` at line 2)",
            ),
            ("date,cases\n2020-03-02,3\n,4\n", Some(3), Some("date"), "empty time"),
            (
                "date,cases\n2020-03-02,3\n2020-03-03,4\n2020-03-02,5\n",
                Some(4),
                Some("date"),
                "observation time 1 appears twice (first at line 2)",
            ),
            ("date,cases\n", None, None, "no observations"),
        ];
        for (contents, line, column, needle) in cases {
            let dir = write("obs.csv", contents);
            let mut s = spec("obs.csv");
            s.origin = Some("2020-03-01".to_string());
            let file = dir.path().join("obs.csv");
            assert_data_error(resolve(&s, dir.path()), &file, line, column, needle);
        }
    }

    #[test]
    fn csv_ragged_row_and_words_in_time_column() {
        let dir = write("obs.csv", "date,cases\n2020-03-02,3\n2020-03-03,4,9\n");
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        let file = dir.path().join("obs.csv");
        assert_data_error(resolve(&s, dir.path()), &file, Some(3), None, "cannot read CSV");

        let dir = write("obs.csv", "date,cases\nmonday,3\n");
        let file = dir.path().join("obs.csv");
        let expected = "`monday` is neither a number (model time) nor a date YYYY-MM-DD";
        assert_data_error(
            resolve(&spec("obs.csv"), dir.path()),
            &file,
            Some(2),
            Some("date"),
            expected,
        );
    }

    #[test]
    fn likelihood_loss_refuses_negative_counts() {
        let dir = write("obs.csv", "date,cases\n0,3\n1,-2\n");
        let mut s = spec("obs.csv");
        s.loss = LossKind::Poisson;
        let file = dir.path().join("obs.csv");
        assert_data_error(
            resolve(&s, dir.path()),
            &file,
            Some(3),
            Some("cases"),
            "-2 is negative; the poisson loss compares counts",
        );
        // mse takes any finite value.
        s.loss = LossKind::Mse;
        assert_eq!(resolve(&s, dir.path()).unwrap().observed, vec![3.0, -2.0]);
    }

    #[test]
    fn data_error_display_names_file_line_column() {
        let dir = write("obs.csv", "date,cases\n2020-03-02,x\n");
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        let e = resolve(&s, dir.path()).unwrap_err();
        assert!(e.is_input_error());
        let expected = format!(
            "{}:2: column `cases`: `x` is not a number",
            dir.path().join("obs.csv").display()
        );
        assert_eq!(e.to_string(), expected);
    }

    fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_date32_times() {
        let dir = tempfile::tempdir().unwrap();
        // 2020-03-02 is 18323 days after 1970-01-01.
        let dates = Date32Array::from(vec![18_323, 18_324, 18_330]);
        let cases = Int64Array::from(vec![3, 5, 0]);
        write_parquet(
            &dir.path().join("obs.parquet"),
            vec![("date", Arc::new(dates) as ArrayRef), ("cases", Arc::new(cases))],
        );
        let mut s = spec("obs.parquet");
        s.origin = Some("2020-03-01".to_string());
        let t = resolve(&s, dir.path()).unwrap();
        assert_eq!(t.times, vec![1.0, 2.0, 8.0]);
        assert_eq!(t.observed, vec![3.0, 5.0, 0.0]);
    }

    #[test]
    fn parquet_numeric_and_string_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obs.parquet");
        write_parquet(
            &path,
            vec![
                ("date", Arc::new(Float64Array::from(vec![0.0, 7.0])) as ArrayRef),
                ("cases", Arc::new(Float64Array::from(vec![1.5, 2.5]))),
            ],
        );
        let t = resolve(&spec("obs.parquet"), dir.path()).unwrap();
        assert_eq!((t.times, t.observed), (vec![0.0, 7.0], vec![1.5, 2.5]));

        write_parquet(
            &path,
            vec![
                ("date", Arc::new(StringArray::from(vec!["2020-03-15", "2020-03-29"])) as ArrayRef),
                ("cases", Arc::new(Int64Array::from(vec![4, 8]))),
            ],
        );
        let mut s = spec("obs.parquet");
        s.origin = Some("2020-03-01".to_string());
        s.time_unit = Some("week".to_string());
        let t = resolve(&s, dir.path()).unwrap();
        assert_eq!((t.times, t.observed), (vec![2.0, 4.0], vec![4.0, 8.0]));
    }

    #[test]
    fn parquet_data_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obs.parquet");
        // Null value in row 2 → line 3 (header counted as line 1).
        write_parquet(
            &path,
            vec![
                ("date", Arc::new(Int64Array::from(vec![0, 1, 2])) as ArrayRef),
                ("cases", Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]))),
            ],
        );
        assert_data_error(
            resolve(&spec("obs.parquet"), dir.path()),
            &path,
            Some(3),
            Some("cases"),
            "null",
        );
        // String value column.
        write_parquet(
            &path,
            vec![
                ("date", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
                ("cases", Arc::new(StringArray::from(vec!["1"]))),
            ],
        );
        assert_data_error(
            resolve(&spec("obs.parquet"), dir.path()),
            &path,
            None,
            Some("cases"),
            "has type Utf8",
        );
        // Missing column.
        write_parquet(&path, vec![("day", Arc::new(Int64Array::from(vec![0])) as ArrayRef)]);
        assert_data_error(
            resolve(&spec("obs.parquet"), dir.path()),
            &path,
            None,
            Some("cases"),
            "columns present are: day",
        );
        // Duplicate time at row 2 → line 3.
        write_parquet(
            &path,
            vec![
                ("date", Arc::new(Int64Array::from(vec![4, 4])) as ArrayRef),
                ("cases", Arc::new(Int64Array::from(vec![1, 2]))),
            ],
        );
        assert_data_error(
            resolve(&spec("obs.parquet"), dir.path()),
            &path,
            Some(3),
            Some("date"),
            "appears twice (first at line 2)",
        );
        // Not a Parquet file.
        std::fs::write(&path, "date,cases\n").unwrap();
        assert!(matches!(
            resolve(&spec("obs.parquet"), dir.path()),
            Err(EngineError::Data { file: p, .. }) if p == path
        ));
    }

    /// A target over output `prevalence` comparing `in_bed` at `times` with `observed`.
    fn target(times: &[f64], observed: &[f64], aggregation: Aggregation, loss_fn: Loss) -> Target {
        Target {
            name: "in_bed".to_string(),
            output: "prevalence".to_string(),
            output_index: 1,
            column: "in_bed".to_string(),
            time_column: "day".to_string(),
            times: times.to_vec(),
            observed: observed.to_vec(),
            aggregation,
            loss_fn,
            data_file: PathBuf::from("obs.csv"),
            data_from_table: false,
            data_time_column: "day".to_string(),
            lines: (2..2 + times.len() as u64).collect(),
            observation: Observation::default(),
        }
    }

    /// A model table with Int64 `day` and Float64 `in_bed`.
    fn table(days: &[i64], values: &[f64]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("day", Arc::new(Int64Array::from(days.to_vec())) as ArrayRef),
            ("in_bed", Arc::new(Float64Array::from(values.to_vec()))),
        ])
        .unwrap()
    }

    #[test]
    fn align_on_int64_days() {
        let days: Vec<i64> = (0..=14).collect();
        let values: Vec<f64> = days.iter().map(|d| (d * 10) as f64).collect();
        let t = target(&[3.0, 7.0, 14.0], &[0.0; 3], Aggregation::Annealed, Loss::Mse);
        assert_eq!(t.align(&table(&days, &values)).unwrap(), vec![30.0, 70.0, 140.0]);
        // Observations out of time order keep their order.
        let t = target(&[14.0, 0.0, 7.0], &[0.0; 3], Aggregation::Annealed, Loss::Mse);
        assert_eq!(t.align(&table(&days, &values)).unwrap(), vec![140.0, 0.0, 70.0]);
    }

    #[test]
    fn align_on_unsorted_and_other_numeric_tables() {
        let t = target(&[1.0, 2.0], &[0.0; 2], Aggregation::Annealed, Loss::Mse);
        let shuffled = table(&[2, 0, 1], &[20.0, 0.0, 10.0]);
        assert_eq!(t.align(&shuffled).unwrap(), vec![10.0, 20.0]);
        // UInt32 days and Int32 values.
        let other = RecordBatch::try_from_iter(vec![
            ("day", Arc::new(arrow::array::UInt32Array::from(vec![0, 1, 2])) as ArrayRef),
            ("in_bed", Arc::new(arrow::array::Int32Array::from(vec![5, 6, 7]))),
        ])
        .unwrap();
        assert_eq!(t.align(&other).unwrap(), vec![6.0, 7.0]);
    }

    #[test]
    fn align_missing_time() {
        let t = target(&[3.0, 15.0], &[0.0; 2], Aggregation::Annealed, Loss::Mse);
        let days: Vec<i64> = (0..=14).collect();
        let err = t.align(&table(&days, &[1.0; 15])).unwrap_err();
        assert_eq!(
            err,
            AlignError::MissingTime {
                target: "in_bed".to_string(),
                time: 15.0,
                time_column: "day".to_string(),
                model_range: Some((0.0, 14.0)),
            }
        );
        assert_eq!(
            err.to_string(),
            "target `in_bed`: observed time 15 is not among the model's `day` values 0..=14; \
             raise the model's `days` or drop that observation"
        );
        // A time inside the range that falls between rows.
        let t = target(&[2.5], &[0.0], Aggregation::Annealed, Loss::Mse);
        let err = t.align(&table(&days, &[1.0; 15])).unwrap_err();
        assert!(err.to_string().contains("observed time 2.5 is not among"), "{err}");
        assert!(err.to_string().contains("no row at that time"), "{err}");
    }

    #[test]
    fn align_column_errors() {
        let t = target(&[0.0], &[0.0], Aggregation::Annealed, Loss::Mse);
        let no_value = RecordBatch::try_from_iter(vec![(
            "day",
            Arc::new(Int64Array::from(vec![0])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            t.align(&no_value).unwrap_err(),
            AlignError::MissingColumn {
                target: "in_bed".to_string(),
                column: "in_bed".to_string(),
                available: vec!["day".to_string()],
            }
        );
        let text = RecordBatch::try_from_iter(vec![
            ("day", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("in_bed", Arc::new(StringArray::from(vec!["1"]))),
        ])
        .unwrap();
        assert!(matches!(
            t.align(&text).unwrap_err(),
            AlignError::NotNumeric { column, .. } if column == "in_bed"
        ));
        let null = RecordBatch::try_from_iter(vec![
            ("day", Arc::new(Int64Array::from(vec![0])) as ArrayRef),
            ("in_bed", Arc::new(Float64Array::from(vec![None]))),
        ])
        .unwrap();
        assert!(matches!(
            t.align(&null).unwrap_err(),
            AlignError::NullValue { time, .. } if time == 0.0
        ));
    }

    #[test]
    fn loss_aggregations_hand_computed() {
        // Observed y = [1, 2] at days 1 and 2.
        // Replicate 1: in_bed = [0, 1, 1, 5] on days 0..=3 → aligned [1, 1].
        // Replicate 2: in_bed = [0, 3, 3, 0]               → aligned [3, 3].
        let r1 = table(&[0, 1, 2, 3], &[0.0, 1.0, 1.0, 5.0]);
        let r2 = table(&[0, 1, 2, 3], &[0.0, 3.0, 3.0, 0.0]);
        let reps = [&r1, &r2];
        let times = [1.0, 2.0];
        let y = [1.0, 2.0];

        // mean_signal, mse: mean [2, 2] vs [1, 2] → (1 + 0)/2 = 0.5.
        let t = target(&times, &y, Aggregation::MeanSignal, Loss::Mse);
        assert_eq!(t.loss(&reps).unwrap(), Some(0.5));

        // annealed, mse: ((0 + 1)/2 + (4 + 1)/2)/2 = (0.5 + 2.5)/2 = 1.5.
        let t = target(&times, &y, Aggregation::Annealed, Loss::Mse);
        assert_eq!(t.loss(&reps).unwrap(), Some(1.5));

        // likelihood, poisson:
        // ℓ₁ = ln Pois(1|1) + ln Pois(2|1) = −1 + (−1 − ln 2) = −2 − ln 2 = −2.69314718
        // ℓ₂ = ln Pois(1|3) + ln Pois(2|3) = (ln 3 − 3) + (2 ln 3 − 3 − ln 2) = −3.39731031
        // −ln((e^ℓ₁ + e^ℓ₂)/2) = 2.98448777
        let t = target(&times, &y, Aggregation::Likelihood, Loss::Poisson);
        let got = t.loss(&reps).unwrap().unwrap();
        let (l1, l2) = (-2.0 - 2f64.ln(), 3.0 * 3f64.ln() - 6.0 - 2f64.ln());
        let expected = -((l1.exp() + l2.exp()) / 2.0).ln();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((got - 2.984_487_77).abs() < 1e-8, "{got}");

        assert_eq!(t.loss(&[]).unwrap(), None);
    }

    /// Replicates sharing one time column (the row cache) align as replicates with copies of it
    /// (merged each), in and out of time order, with a null value found either way.
    #[test]
    fn a_shared_time_column_aligns_as_copies_of_it_do() {
        for days in [vec![0i64, 1, 2, 3, 4], vec![4, 2, 0, 3, 1, 2]] {
            let shared: ArrayRef = Arc::new(Int64Array::from(days.clone()));
            let values = |r: usize| -> ArrayRef {
                Arc::new(Float64Array::from(
                    (0..days.len()).map(|i| (i * 7 + r * 3) as f64).collect::<Vec<_>>(),
                ))
            };
            let with = |time: ArrayRef, r: usize| {
                RecordBatch::try_from_iter(vec![("day", time), ("in_bed", values(r))]).unwrap()
            };
            let sharing: Vec<RecordBatch> = (0..4).map(|r| with(Arc::clone(&shared), r)).collect();
            let copies: Vec<RecordBatch> =
                (0..4).map(|r| with(Arc::new(Int64Array::from(days.clone())), r)).collect();
            for aggregation in
                [Aggregation::MeanSignal, Aggregation::Annealed, Aggregation::Likelihood]
            {
                let t = target(&[3.0, 1.0, 2.0], &[20.0, 9.0, 16.0], aggregation, Loss::Poisson);
                let a = t.estimate(&sharing.iter().collect::<Vec<_>>(), 1.0).unwrap().unwrap();
                let b = t.estimate(&copies.iter().collect::<Vec<_>>(), 1.0).unwrap().unwrap();
                assert_eq!(a, b, "{days:?} {aggregation:?}");
                let aligned: Vec<Vec<f64>> = sharing.iter().map(|r| t.align(r).unwrap()).collect();
                let by_copy: Vec<Vec<f64>> = copies.iter().map(|r| t.align(r).unwrap()).collect();
                assert_eq!(aligned, by_copy);
            }
        }
        // A null value in the second replicate is found on the cached path too.
        let shared: ArrayRef = Arc::new(Int64Array::from(vec![0i64, 1, 2]));
        let ok = RecordBatch::try_from_iter(vec![
            ("day", Arc::clone(&shared)),
            ("in_bed", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef),
        ])
        .unwrap();
        let null = RecordBatch::try_from_iter(vec![
            ("day", shared),
            ("in_bed", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)])) as ArrayRef),
        ])
        .unwrap();
        let t = target(&[1.0], &[2.0], Aggregation::Annealed, Loss::Mse);
        assert!(matches!(
            t.estimate(&[&ok, &null], 1.0),
            Err(AlignError::NullValue { time, .. }) if time == 1.0
        ));
    }

    #[test]
    fn loss_reports_the_failing_replicate() {
        let ok = table(&[0, 1, 2], &[1.0, 1.0, 1.0]);
        let short = table(&[0, 1], &[1.0, 1.0]);
        let t = target(&[2.0], &[1.0], Aggregation::Annealed, Loss::Mse);
        let err = t.loss(&[&ok, &short]).unwrap_err();
        assert!(matches!(
            err,
            AlignError::MissingTime { time, model_range: Some((lo, hi)), .. }
                if time == 2.0 && lo == 0.0 && hi == 1.0
        ));
    }

    #[test]
    fn resolve_then_score_end_to_end() {
        let dir = write("obs.csv", DATES_CSV);
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        let t = resolve(&s, dir.path()).unwrap();
        // Observed [3, 5, 0] at days 1, 2, 3; model predicts day * 2 → [2, 4, 6].
        // mse = (1 + 1 + 36)/3 = 38/3.
        let days: Vec<i64> = (0..=14).collect();
        let values: Vec<f64> = days.iter().map(|d| (2 * d) as f64).collect();
        let r = table(&days, &values);
        assert_eq!(t.loss(&[&r]).unwrap(), Some(38.0 / 3.0));
    }

    #[test]
    fn floor_and_reporting_fraction_give_the_exact_finite_value() {
        // Observed 3 and 4 on days 1 and 2; a replicate predicting 0 and 10.
        let mut t = target(&[1.0, 2.0], &[3.0, 4.0], Aggregation::Likelihood, Loss::Poisson);
        let r = table(&[0, 1, 2], &[0.0, 0.0, 10.0]);
        // Exact likelihood: a zero prediction where 3 were observed is impossible.
        assert_eq!(t.loss(&[&r]).unwrap(), Some(f64::INFINITY));
        t.observation = Observation { reporting: ReportingFraction::Value(0.5), floor: 1e-6 };
        // −ln Pois(3 | 1e-6) − ln Pois(4 | 5 + 1e-6), by hand.
        let nll = |y: f64, l: f64| l - y * l.ln() + statrs::function::gamma::ln_gamma(y + 1.0);
        let expected = nll(3.0, 1e-6) + nll(4.0, 5.0 + 1e-6);
        let got = t.loss(&[&r]).unwrap().unwrap();
        assert!((got - expected).abs() < 1e-12 * expected, "{got} vs {expected}");
        assert!((got - 44.9786).abs() < 1e-4, "{got}"); // 3·ln 1e6 + ln 3! + 1.740 ≈ 44.98
                                                        // A reporting fraction that is a parameter: `estimate` takes the set's value.
        t.observation.reporting = ReportingFraction::Parameter("rho".to_string());
        let e = t.estimate(&[&r], 0.5).unwrap().unwrap();
        assert_eq!(e.loss, got);
        assert_eq!(e.standard_error, None, "one replicate: no standard error");
        let mut params = crate::params::ParameterSet::new();
        params.insert("rho", crate::params::ParamValue::Float(0.25));
        assert_eq!(t.reporting_fraction(&params), 0.25);
        assert!(t.reporting_fraction(&crate::params::ParameterSet::new()).is_nan());
    }

    #[test]
    fn measurement_model_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("obs.csv"), "date,cases\n2020-03-02,3\n").unwrap();
        let mut s = spec("obs.csv");
        s.origin = Some("2020-03-01".to_string());
        s.loss = LossKind::Poisson;
        let field = |s: &TargetSpec| match resolve(s, dir.path()) {
            Err(EngineError::SpecInvalid { field, message, .. }) => format!("{field}: {message}"),
            other => format!("{other:?}"),
        };
        s.floor = Some(-1.0);
        assert!(
            field(&s).starts_with("targets[0].floor: -1 is not a usable floor"),
            "{}",
            field(&s)
        );
        s.floor = Some(1e-6);
        s.reporting_fraction = Some(ReportingFractionSpec::Value(1.5));
        assert!(field(&s).starts_with("targets[0].reporting_fraction: 1.5"), "{}", field(&s));
        s.reporting_fraction = Some(ReportingFractionSpec::Parameter("rho".into()));
        let t = resolve(&s, dir.path()).expect("valid");
        assert_eq!(
            t.observation,
            Observation { reporting: ReportingFraction::Parameter("rho".into()), floor: 1e-6 }
        );
        s.loss = LossKind::Mse;
        assert!(field(&s).starts_with("targets[0].floor: only the poisson"), "{}", field(&s));
        // Absent: the identity, and the spec's JSON (its hash) as before these settings.
        let plain = spec("obs.csv");
        assert!(!serde_json::to_string(&plain).unwrap().contains("floor"));
        let toml_text = "name = \"a\"\noutput = \"o\"\ncolumn = \"c\"\ndata = \"d.csv\"\n\
            data_column = \"y\"\ndata_time_column = \"t\"\naggregation = \"likelihood\"\n\
            loss = \"poisson\"\nreporting_fraction = \"rho\"\nfloor = 1e-6\n";
        let parsed: TargetSpec = toml::from_str(toml_text).unwrap();
        assert_eq!(parsed.reporting_fraction, Some(ReportingFractionSpec::Parameter("rho".into())));
        let parsed: TargetSpec = toml::from_str(&toml_text.replace("\"rho\"", "0.9")).unwrap();
        assert_eq!(parsed.reporting_fraction, Some(ReportingFractionSpec::Value(0.9)));
    }
}
