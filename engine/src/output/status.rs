//! The state of an output directory, read from its manifest and committed files only: works on
//! a running run, a dead one and a finished one, without the job spec and without writing.

use std::collections::BTreeSet;
use std::fs::File;

use arrow::array::{Array, Float64Array, StringArray, UInt32Array};
use arrow::util::display::array_value_to_string;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::layout::{Dataset, OutputLayout};
use super::lock::OutputLock;
use super::manifest::Manifest;
use super::spec_parts::SpecIdentity;
use crate::error::{EngineError, Result};
use crate::progress::{BestParameterSet, TargetSummary};

/// Columns of a target file that are not parameters.
const NON_PARAMETER_COLUMNS: [&str; 5] = ["param_id", "loss", "n_replicates", "n_failed", "seeds"];

/// What [`read_status`] finds in an output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStatus {
    /// The manifest as read.
    pub manifest: Manifest,
    /// Simulations committed (failed ones included).
    pub simulations_committed: u64,
    /// Failed simulations among those committed.
    pub failed: u64,
    /// When the last batch was committed (RFC 3339 UTC), `None` before the first.
    pub last_commit: Option<String>,
    /// `None` when no process holds the directory's lock; `Some(pid)` when one does (`pid`
    /// `None` when the lock file does not name it).
    pub holder: Option<Option<u32>>,
    /// The `k` best parameter sets so far per target, over the committed batches.
    pub best: Vec<TargetSummary>,
}

/// Reads the state of the output directory of `layout`; keeps the `k` best parameter sets per
/// target.
///
/// # Errors
/// - [`EngineError::OutputConflict`] when the directory has no `manifest.json`.
/// - [`EngineError::Manifest`] when the manifest is unreadable; [`EngineError::Io`] or
///   [`EngineError::Parquet`] naming the file when a committed target file cannot be read.
pub fn read_status(layout: &OutputLayout, k: usize) -> Result<RunStatus> {
    let Some(manifest) = Manifest::load(&layout.manifest_path())? else {
        let what = if layout.root().is_dir() { "has no manifest.json" } else { "does not exist" };
        return Err(EngineError::OutputConflict {
            dir: layout.root().to_path_buf(),
            message: format!(
                "{what}: not a simsweep output directory (or a run that has not started \
                 writing); give the directory `simsweep run` writes to (--out, or the job's \
                 `output`)"
            ),
        });
    };
    let holder = OutputLock::holder(layout)?;
    let mut targets = SpecIdentity::target_names(&manifest.spec_parts);
    if targets.is_empty() {
        let found: BTreeSet<String> = manifest
            .batches
            .iter()
            .flat_map(|b| b.rows.keys())
            .filter_map(|dir| match Dataset::from_relative_dir(dir) {
                Some(Dataset::Target(name)) => Some(name),
                _ => None,
            })
            .collect();
        targets = found.into_iter().collect();
    }
    let best = targets
        .iter()
        .map(|t| best_of_target(layout, &manifest, t, k))
        .collect::<Result<Vec<_>>>()?;
    Ok(RunStatus {
        simulations_committed: manifest.batches.iter().map(|b| b.simulations).sum(),
        failed: manifest.batches.iter().map(|b| b.failed).sum(),
        last_commit: manifest.batches.iter().map(|b| b.committed_at.clone()).max(),
        holder,
        best,
        manifest,
    })
}

/// The `k` smallest non-null losses of `target` in the committed files, ties broken by sweep
/// position; parameters read from the file's own columns.
fn best_of_target(layout: &OutputLayout, manifest: &Manifest, target: &str, k: usize) -> Result<TargetSummary> {
    let dataset = Dataset::Target(target.to_string());
    let mut best: Vec<BestParameterSet> = Vec::with_capacity(k + 1);
    for batch in &manifest.batches {
        let path = layout.batch_file(&dataset, batch.index);
        let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        let parquet_err = |source| EngineError::Parquet { path: path.clone(), source };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(parquet_err)?;
        let mut point = batch.first_point;
        for rb in reader {
            let rb = rb?;
            let ids = rb.column_by_name("param_id").and_then(|c| c.as_any().downcast_ref::<StringArray>());
            let losses = rb.column_by_name("loss").and_then(|c| c.as_any().downcast_ref::<Float64Array>());
            let failed = rb.column_by_name("n_failed").and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
            let (Some(ids), Some(losses)) = (ids, losses) else {
                return Err(EngineError::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "target file without `param_id` (Utf8) and `loss` (Float64) columns",
                    ),
                ));
            };
            let schema = rb.schema();
            let params: Vec<usize> = (0..rb.num_columns())
                .filter(|&i| !NON_PARAMETER_COLUMNS.contains(&schema.field(i).name().as_str()))
                .collect();
            for row in 0..rb.num_rows() {
                let this = point + row as u64;
                if losses.is_null(row) || losses.value(row).is_nan() {
                    continue;
                }
                let loss = losses.value(row);
                let at = best.partition_point(|b| (b.loss, b.point) < (loss, this));
                if at >= k {
                    continue;
                }
                let parameters = params
                    .iter()
                    .map(|&i| {
                        let value = array_value_to_string(rb.column(i), row).unwrap_or_default();
                        (schema.field(i).name().clone(), value)
                    })
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
    Ok(TargetSummary { target: target.to_string(), best })
}
