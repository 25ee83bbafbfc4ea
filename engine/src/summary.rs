//! The best parameter sets per target, read back from the committed target files.
//!
//! Reading the files (rather than keeping a running top list) makes the summary the same for a
//! run done in one go and one resumed any number of times, and lets `simsweep status` show the
//! best so far of a run it knows only by its directory. It streams one file at a time and keeps
//! `k` rows per target.

use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};
use crate::output::{Dataset, Manifest, OutputLayout};
use crate::params::ParamValue;
use crate::progress::{BestParameterSet, TargetSummary};

/// Columns of a target file that are not parameters.
const NON_PARAMETER_COLUMNS: [&str; 5] = ["param_id", "loss", "n_replicates", "n_failed", "seeds"];

/// The `k` smallest non-null losses of each of `targets` over the batches the manifest lists
/// (see [`best_of_target`]).
///
/// # Errors
/// As [`best_of_target`].
pub fn best_per_target(
    layout: &OutputLayout,
    manifest: &Manifest,
    targets: &[String],
    k: usize,
) -> Result<Vec<TargetSummary>> {
    targets.iter().map(|t| best_of_target(layout, manifest, t, k)).collect()
}

/// A parameter column's value as written (Float64, Int64 or Utf8 — see
/// [`crate::collect::target_schema`]).
fn param_value(column: &ArrayRef, row: usize) -> ParamValue {
    match column.data_type() {
        DataType::Float64 => ParamValue::Float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Int64 => ParamValue::Int(column.as_primitive::<Int64Type>().value(row)),
        _ => ParamValue::Str(
            arrow::util::display::array_value_to_string(column, row).unwrap_or_default(),
        ),
    }
}

/// The `k` smallest non-null losses of `target` in the committed files, ties broken by sweep
/// position; parameters read from the file's own columns.
///
/// # Errors
/// [`EngineError::Io`] naming a committed file that cannot be opened or read;
/// [`EngineError::Damaged`] naming one that is not valid Parquet (truncated or altered) or has
/// no `param_id` and `loss` columns.
pub fn best_of_target(
    layout: &OutputLayout,
    manifest: &Manifest,
    target: &str,
    k: usize,
) -> Result<TargetSummary> {
    let dataset = Dataset::Target(target.to_string());
    let mut best: Vec<BestParameterSet> = Vec::with_capacity(k + 1);
    let (mut rows, mut null_losses) = (0u64, 0u64);
    for batch in &manifest.batches {
        let path = layout.batch_file(&dataset, batch.index);
        let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        let damaged = |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Damaged {
            path: path.clone(),
            what: "this committed batch file".to_string(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| damaged(Box::new(e)))?;
        let mut point = batch.first_point;
        for rb in reader {
            let rb = rb.map_err(|e| damaged(Box::new(e)))?;
            let ids = rb
                .column_by_name("param_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>());
            let losses =
                rb.column_by_name("loss").and_then(|c| c.as_any().downcast_ref::<Float64Array>());
            let failed = rb
                .column_by_name("n_failed")
                .and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
            let (Some(ids), Some(losses)) = (ids, losses) else {
                return Err(damaged(
                    "a target file without `param_id` (Utf8) and `loss` (Float64) columns".into(),
                ));
            };
            let schema = rb.schema();
            let params: Vec<usize> = (0..rb.num_columns())
                .filter(|&i| !NON_PARAMETER_COLUMNS.contains(&schema.field(i).name().as_str()))
                .collect();
            rows += rb.num_rows() as u64;
            for row in 0..rb.num_rows() {
                let this = point + row as u64;
                if losses.is_null(row) || losses.value(row).is_nan() {
                    null_losses += 1;
                    continue;
                }
                let loss = losses.value(row);
                let at = best.partition_point(|b| (b.loss, b.point) < (loss, this));
                if at >= k {
                    continue;
                }
                let parameters = params
                    .iter()
                    .map(|&i| (schema.field(i).name().clone(), param_value(rb.column(i), row)))
                    .collect();
                best.insert(
                    at,
                    BestParameterSet {
                        param_id: ids.value(row).to_string(),
                        point: this,
                        parameters,
                        loss,
                        n_failed: failed.map_or(0, |f| f.value(row)),
                    },
                );
                best.truncate(k);
            }
            point += rb.num_rows() as u64;
        }
    }
    Ok(TargetSummary { target: target.to_string(), best, rows, null_losses })
}
