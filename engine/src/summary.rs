//! The best parameter sets per target, read back from the committed target files.
//!
//! Reading the files (rather than keeping a running top list) makes the summary the same for a
//! run done in one go and one resumed any number of times. It streams one file at a time and
//! keeps `k` rows per target.

use std::collections::HashMap;
use std::fs::File;

use arrow::array::{Array, Float64Array, StringArray, UInt32Array};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{EngineError, Result};
use crate::output::{Dataset, Manifest, OutputLayout};
use crate::params::Sweep;
use crate::progress::{BestParameterSet, TargetSummary};

/// The `k` smallest non-null losses of each target over the batches the manifest lists.
/// Ties are broken by position in the sweep.
///
/// # Errors
/// I/O or Parquet errors reading a target file, naming the file.
pub fn best_per_target(
    layout: &OutputLayout,
    manifest: &Manifest,
    sweep: &Sweep,
    targets: &[String],
    k: usize,
) -> Result<Vec<TargetSummary>> {
    let position: HashMap<&str, u64> =
        sweep.points.iter().map(|p| (p.param_id.as_str(), p.index)).collect();
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        // (loss, point, n_failed), kept sorted, at most k long
        let mut best: Vec<(f64, u64, u32)> = Vec::with_capacity(k + 1);
        for batch in &manifest.batches {
            let path = layout.batch_file(&Dataset::Target(target.clone()), batch.index);
            let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            let parquet_err = |source| EngineError::Parquet { path: path.clone(), source };
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
            let schema = builder.parquet_schema();
            let wanted: Vec<usize> = ["param_id", "loss", "n_failed"]
                .iter()
                .filter_map(|name| schema.columns().iter().position(|c| c.name() == *name))
                .collect();
            let mask = ProjectionMask::leaves(schema, wanted);
            let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
            for rb in reader {
                let rb = rb?;
                let ids = column::<StringArray>(&rb, "param_id", &path)?;
                let losses = column::<Float64Array>(&rb, "loss", &path)?;
                let failed = column::<UInt32Array>(&rb, "n_failed", &path)?;
                for row in 0..rb.num_rows() {
                    if losses.is_null(row) || losses.value(row).is_nan() {
                        continue;
                    }
                    let Some(&point) = position.get(ids.value(row)) else { continue };
                    let entry = (losses.value(row), point, failed.value(row));
                    let at = best.partition_point(|b| (b.0, b.1) < (entry.0, entry.1));
                    if at < k {
                        best.insert(at, entry);
                        best.truncate(k);
                    }
                }
            }
        }
        out.push(TargetSummary {
            target: target.clone(),
            best: best
                .into_iter()
                .map(|(loss, point, n_failed)| {
                    let p = &sweep.points[point as usize];
                    BestParameterSet {
                        param_id: p.param_id.to_string(),
                        point,
                        parameters: p.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        loss,
                        n_failed,
                    }
                })
                .collect(),
        });
    }
    Ok(out)
}

fn column<'a, T: 'static>(
    rb: &'a arrow::record_batch::RecordBatch,
    name: &str,
    path: &std::path::Path,
) -> Result<&'a T> {
    rb.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| EngineError::Data {
            file: path.to_path_buf(),
            line: None,
            column: Some(name.to_string()),
            message: "column missing or of another type; this file was not written by this \
                      version of simsweep"
                .to_string(),
        })
}
