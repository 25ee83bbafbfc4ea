//! Targets: observed data, which model output it is compared with, and how.
//!
//! OWNED BY THE TARGETS HELPER: fill in the bodies; keep the public signatures (others compile
//! against them) or tell the lead what changed.

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::loss::{Aggregation, LossKind};
use crate::model::OutputSpec;

/// The `[[targets]]` section of a job, as written.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Target name; also the folder under `targets/`.
    pub name: String,
    /// Model output table compared, e.g. `in_bed`.
    pub output: String,
    /// Column of that output holding the model's values.
    pub column: String,
    /// Column of that output holding model time (default `day`).
    #[serde(default = "default_time_column")]
    pub time_column: String,
    /// Observed data file (CSV or Parquet), relative to the job file.
    pub data: PathBuf,
    /// Column of the data file holding the observed values.
    pub data_column: String,
    /// Column of the data file holding time: numeric (model time units) or dates.
    pub data_time_column: String,
    /// For a date time column: the date that is model time 0, `YYYY-MM-DD`.
    #[serde(default)]
    pub origin: Option<String>,
    /// For a date time column: length of one model time unit, `day` or `week` (default `day`).
    #[serde(default)]
    pub time_unit: Option<String>,
    /// How replicates are combined: `mean_signal`, `annealed` or `likelihood`.
    pub aggregation: Aggregation,
    /// Loss: `mse`, `poisson` or `negative_binomial`.
    pub loss: LossKind,
    /// Dispersion `k` (size) of the negative binomial; required for that loss, refused otherwise.
    #[serde(default)]
    pub dispersion: Option<f64>,
}

fn default_time_column() -> String {
    "day".to_string()
}

/// A target ready to score replicates: observed data loaded and aligned to model time.
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
    /// The loss function (with its dispersion for the negative binomial).
    pub loss: LossKind,
    /// The observed data file, as resolved.
    pub data_file: PathBuf,
}
