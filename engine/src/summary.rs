//! The best parameter sets per target.
//!
//! Each batch's best are computed from its target tables when it is committed
//! ([`batch_summaries`]) and travel in its commit record; the manifest folds them together
//! ([`merge_summaries`]). The best `k` of the union of per-batch best `k` lists are the best `k`
//! overall, and ties are broken by sweep position, so the summary is the same for a run done in
//! one go and one resumed any number of times, and `simsweep status` answers from the manifest
//! and commit log alone, without opening a batch file. Outputs of manifest format 1 carry no
//! best lists: [`best_per_target`] then reads the committed target files, one at a time.

use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};
use crate::output::{BatchTable, Dataset, Manifest, OutputLayout};
use crate::params::ParamValue;
use crate::progress::{BestParameterSet, TargetSummary};

/// Best parameter sets kept per target in commit records, the manifest, `summary.json` and
/// `simsweep status`.
pub const BEST_PER_TARGET: usize = 10;

/// Columns of a target file that are not parameters.
const NON_PARAMETER_COLUMNS: [&str; 6] =
    ["param_id", "loss", "loss_se", "n_replicates", "n_failed", "seeds"];

/// The `k` smallest non-null losses of each of `targets` over the committed batches: from
/// [`Manifest::best`] when the manifest has best lists ([`Manifest::has_best`]), else read from
/// the committed target files (see [`best_of_target`]). A target with no row yet has an empty
/// summary.
///
/// # Errors
/// As [`best_of_target`] (only for a format-1 manifest; otherwise none).
pub fn best_per_target(
    layout: &OutputLayout,
    manifest: &Manifest,
    targets: &[String],
    k: usize,
) -> Result<Vec<TargetSummary>> {
    if !manifest.has_best() {
        return targets.iter().map(|t| best_of_target(layout, manifest, t, k)).collect();
    }
    Ok(targets
        .iter()
        .map(|t| {
            let mut summary = manifest
                .best
                .iter()
                .find(|s| &s.target == t)
                .cloned()
                .unwrap_or_else(|| empty_summary(t));
            summary.best.truncate(k);
            summary
        })
        .collect())
}

/// The parameter sets a refine step re-runs: for each of `targets`, its `k` best parameter sets
/// with a finite loss (ties by sweep position); the union, as sweep positions in ascending
/// order. From the manifest's best lists when they hold `k` ([`BEST_PER_TARGET`] or fewer),
/// else read from the committed target files (one at a time, holding `k` per target).
///
/// # Errors
/// As [`best_of_target`].
pub fn refine_selection(
    layout: &OutputLayout,
    manifest: &Manifest,
    targets: &[String],
    k: usize,
) -> Result<Vec<u64>> {
    let summaries: Vec<TargetSummary> = if k <= BEST_PER_TARGET {
        best_per_target(layout, manifest, targets, k)?
    } else {
        targets.iter().map(|t| best_of_target(layout, manifest, t, k)).collect::<Result<_>>()?
    };
    let mut points: Vec<u64> = summaries
        .iter()
        .flat_map(|s| s.best.iter().filter(|b| b.loss.is_finite()).map(|b| b.point))
        .collect();
    points.sort_unstable();
    points.dedup();
    Ok(points)
}

/// The sweep's rows of `target` at the sweep positions `points` (ascending), as best-list
/// entries (`param_id`, loss, standard error, failures; no parameters), in `points` order; a
/// position with a null loss is left out. Reads only the committed target files holding them.
///
/// # Errors
/// As [`best_of_target`].
pub fn rows_at(
    layout: &OutputLayout,
    manifest: &Manifest,
    target: &str,
    points: &[u64],
) -> Result<TargetSummary> {
    let dataset = Dataset::Target(target.to_string());
    let mut summary = empty_summary(target);
    for batch in &manifest.batches {
        let wanted: Vec<u64> =
            points.iter().copied().filter(|p| batch.points().contains(p)).collect();
        if wanted.is_empty() {
            continue;
        }
        visit_batch_file(layout, &dataset, batch, |rb, point| {
            let mut acc = BestAccumulator::new(target, usize::MAX);
            let end = point + rb.num_rows() as u64;
            for &p in wanted.iter().filter(|&&p| p >= point && p < end) {
                acc.add(&rb.slice((p - point) as usize, 1), p)?;
            }
            summary.best.extend(acc.finish().best);
            Ok(())
        })?;
    }
    summary.best.sort_by_key(|b| b.point);
    Ok(summary)
}

fn empty_summary(target: &str) -> TargetSummary {
    TargetSummary { target: target.to_string(), ..TargetSummary::default() }
}

/// Folds `other` (summaries of batches not yet counted in `into`) into `into`, by target: rows
/// and null losses add up, best lists merge keeping the `k` smallest losses, ties broken by
/// sweep position. A parameter set (sweep position) already in a list is not added twice.
pub fn merge_summaries(into: &mut Vec<TargetSummary>, other: Vec<TargetSummary>, k: usize) {
    for summary in other {
        let Some(existing) = into.iter_mut().find(|s| s.target == summary.target) else {
            into.push(summary);
            continue;
        };
        existing.rows += summary.rows;
        existing.null_losses += summary.null_losses;
        existing.nan_losses += summary.nan_losses;
        existing.infinite_losses += summary.infinite_losses;
        for candidate in summary.best {
            insert_best(&mut existing.best, candidate, k);
        }
    }
}

/// Inserts `candidate` into `best` (sorted by loss then sweep position) if it is among the `k`
/// smallest and its position is not there yet.
fn insert_best(best: &mut Vec<BestParameterSet>, candidate: BestParameterSet, k: usize) {
    if best.iter().any(|b| b.point == candidate.point) {
        return;
    }
    let key = (candidate.loss, candidate.point);
    let at = best.partition_point(|b| (b.loss, b.point) < key);
    if at < k {
        best.insert(at, candidate);
        best.truncate(k);
    }
}

/// The best `k` parameter sets of one batch per target, from the batch's tables (those of
/// [`Dataset::Target`]; others are skipped) before they are written. Rows of a target table
/// are the batch's parameter sets in sweep order from `first_point`.
///
/// # Errors
/// [`EngineError::Io`] naming the dataset folder when a target table has no `param_id` (Utf8
/// or dictionary of Utf8) or `loss` (Float64) column, which would be a defect of the engine.
pub fn batch_summaries(
    layout: &OutputLayout,
    tables: &[BatchTable],
    first_point: u64,
    k: usize,
) -> Result<Vec<TargetSummary>> {
    let mut out = Vec::new();
    for table in tables {
        let Dataset::Target(name) = &table.dataset else { continue };
        let mut acc = BestAccumulator::new(name, k);
        let mut point = first_point;
        for rb in &table.batches {
            acc.add(rb, point).map_err(|why| {
                EngineError::io(
                    layout.dataset_dir(&table.dataset),
                    std::io::Error::other(format!("target table: {why}")),
                )
            })?;
            point += rb.num_rows() as u64;
        }
        out.push(acc.finish());
    }
    Ok(out)
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

/// The running best `k` rows of one target's tables.
struct BestAccumulator {
    summary: TargetSummary,
    k: usize,
}

impl BestAccumulator {
    fn new(target: &str, k: usize) -> Self {
        BestAccumulator { summary: empty_summary(target), k }
    }

    /// Counts the rows of `rb` (parameter sets from sweep position `first_point` on) and keeps
    /// the best. `Err` says what the table lacks.
    fn add(&mut self, rb: &RecordBatch, first_point: u64) -> std::result::Result<(), String> {
        let ids = rb.column_by_name("param_id");
        let losses =
            rb.column_by_name("loss").and_then(|c| c.as_any().downcast_ref::<Float64Array>());
        let failed =
            rb.column_by_name("n_failed").and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
        let loss_se =
            rb.column_by_name("loss_se").and_then(|c| c.as_any().downcast_ref::<Float64Array>());
        let (Some(ids), Some(losses)) = (ids, losses) else {
            return Err("no `param_id` and `loss` (Float64) columns".to_string());
        };
        let id_at = |row: usize| -> Option<String> {
            if let Some(strings) = ids.as_any().downcast_ref::<StringArray>() {
                return Some(strings.value(row).to_string());
            }
            match ids.data_type() {
                DataType::Dictionary(_, value) if **value == DataType::Utf8 => {
                    arrow::util::display::array_value_to_string(ids, row).ok()
                }
                _ => None,
            }
        };
        let schema = rb.schema();
        let params: Vec<usize> = (0..rb.num_columns())
            .filter(|&i| !NON_PARAMETER_COLUMNS.contains(&schema.field(i).name().as_str()))
            .collect();
        self.summary.rows += rb.num_rows() as u64;
        for row in 0..rb.num_rows() {
            let point = first_point + row as u64;
            if losses.is_null(row) {
                self.summary.null_losses += 1;
                continue;
            }
            let loss = losses.value(row);
            if loss.is_nan() {
                self.summary.nan_losses += 1;
                continue;
            }
            if loss.is_infinite() {
                self.summary.infinite_losses += 1;
            }
            if let Some(last) = self.summary.best.get(self.k.wrapping_sub(1)) {
                if (last.loss, last.point) < (loss, point) {
                    continue;
                }
            }
            if self.k == 0 {
                continue;
            }
            let Some(param_id) = id_at(row) else {
                return Err("`param_id` is not a Utf8 column".to_string());
            };
            let parameters = params
                .iter()
                .map(|&i| (schema.field(i).name().clone(), param_value(rb.column(i), row)))
                .collect();
            let candidate = BestParameterSet {
                param_id,
                point,
                parameters,
                loss,
                loss_se: loss_se.and_then(|c| (!c.is_null(row)).then(|| c.value(row))),
                n_failed: failed.map_or(0, |f| f.value(row)),
            };
            insert_best(&mut self.summary.best, candidate, self.k);
        }
        Ok(())
    }

    fn finish(self) -> TargetSummary {
        self.summary
    }
}

/// The `k` smallest non-null losses of `target` in the committed files, ties broken by sweep
/// position; parameters read from the file's own columns. Opens every committed target file:
/// what outputs of manifest format 1 need (later ones carry their best in the manifest).
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
    let mut acc = BestAccumulator::new(target, k);
    for batch in &manifest.batches {
        visit_batch_file(layout, &dataset, batch, |rb, point| acc.add(rb, point))?;
    }
    Ok(acc.finish())
}

/// Calls `visit(record batch, sweep position of its first row)` for each record batch of the
/// committed file of `dataset` in `batch`; `visit`'s `Err` says what the file lacks.
///
/// # Errors
/// [`EngineError::Io`] naming the file when it cannot be opened; [`EngineError::Damaged`] when
/// it is not valid Parquet or `visit` finds it lacking.
fn visit_batch_file(
    layout: &OutputLayout,
    dataset: &Dataset,
    batch: &crate::output::CommittedBatch,
    mut visit: impl FnMut(&RecordBatch, u64) -> std::result::Result<(), String>,
) -> Result<()> {
    let path = layout.batch_file(dataset, batch.index);
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
        visit(&rb, point).map_err(|why| damaged(format!("a target file with {why}").into()))?;
        point += rb.num_rows() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(point: u64, loss: f64) -> BestParameterSet {
        BestParameterSet {
            param_id: format!("id{point}"),
            point,
            parameters: vec![("beta".to_string(), ParamValue::Float(point as f64))],
            loss,
            loss_se: None,
            n_failed: 0,
        }
    }

    fn summary(target: &str, best: Vec<BestParameterSet>, rows: u64, nulls: u64) -> TargetSummary {
        TargetSummary {
            target: target.to_string(),
            best,
            rows,
            null_losses: nulls,
            ..TargetSummary::default()
        }
    }

    #[test]
    fn merging_per_batch_best_lists_gives_the_overall_best_in_any_order() {
        // Batches of 4 points each; the overall best 3 by (loss, point): 5 (0.5), 2 (1.0), 9 (1.0).
        let b0 = summary("t", vec![set(2, 1.0), set(1, 3.0), set(0, 4.0)], 4, 1);
        let b1 = summary("t", vec![set(5, 0.5), set(4, 2.0), set(6, 2.5)], 4, 0);
        let b2 = summary("t", vec![set(9, 1.0), set(8, f64::INFINITY)], 4, 2);
        let expected = vec![set(5, 0.5), set(2, 1.0), set(9, 1.0)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let batches = [&b0, &b1, &b2];
            let mut merged = Vec::new();
            for i in order {
                merge_summaries(&mut merged, vec![batches[i].clone()], 3);
            }
            assert_eq!(merged, vec![summary("t", expected.clone(), 12, 3)], "order {order:?}");
        }
    }

    #[test]
    fn infinite_losses_rank_after_finite_ones_and_are_counted() {
        use arrow::array::{Float64Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("param_id", DataType::Utf8, false),
            Field::new("loss", DataType::Float64, true),
        ]));
        let rb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(Float64Array::from(vec![
                    f64::INFINITY,
                    Some(7.0).unwrap(),
                    f64::NAN,
                    9.0,
                ])),
            ],
        )
        .unwrap();
        let table = BatchTable { dataset: Dataset::Target("t".into()), schema, batches: vec![rb] };
        let got = batch_summaries(&OutputLayout::new("o"), &[table], 0, 3).unwrap().remove(0);
        let ranked: Vec<(u64, f64)> = got.best.iter().map(|b| (b.point, b.loss)).collect();
        assert_eq!(ranked, vec![(1, 7.0), (3, 9.0), (0, f64::INFINITY)]);
        assert_eq!((got.rows, got.null_losses, got.nan_losses, got.infinite_losses), (4, 0, 1, 1));
    }

    #[test]
    fn a_set_already_listed_is_not_added_twice() {
        let mut merged = vec![summary("t", vec![set(1, 1.0), set(2, 2.0)], 2, 0)];
        insert_best(&mut merged[0].best, set(1, 1.0), 10);
        assert_eq!(merged[0].best, vec![set(1, 1.0), set(2, 2.0)]);
        // Other targets stay apart.
        merge_summaries(&mut merged, vec![summary("u", vec![set(7, 0.1)], 1, 0)], 10);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].best.len(), 2);
        assert_eq!(merged[1], summary("u", vec![set(7, 0.1)], 1, 0));
    }

    #[test]
    fn batch_summary_reads_dictionary_ids_and_skips_null_and_nan() {
        use arrow::array::{DictionaryArray, Float64Array, UInt32Array};
        use arrow::datatypes::{Field, Schema, UInt32Type};
        use std::sync::Arc;
        let ids: DictionaryArray<UInt32Type> = vec!["a", "b", "c", "d"].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("param_id", ids.data_type().clone(), false),
            Field::new("beta", DataType::Float64, false),
            Field::new("loss", DataType::Float64, true),
            Field::new("n_failed", DataType::UInt32, false),
        ]));
        let rb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(ids),
                Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3, 0.4])),
                Arc::new(Float64Array::from(vec![Some(2.0), None, Some(f64::NAN), Some(1.5)])),
                Arc::new(UInt32Array::from(vec![0, 3, 0, 1])),
            ],
        )
        .unwrap();
        let table = BatchTable { dataset: Dataset::Target("t".into()), schema, batches: vec![rb] };
        let failures = BatchTable {
            dataset: Dataset::Failures,
            schema: Arc::new(Schema::empty()),
            batches: vec![],
        };
        let layout = OutputLayout::new("out");
        let got = batch_summaries(&layout, &[failures, table], 40, 10).unwrap();
        let best = |point, id: &str, beta, loss, n_failed| BestParameterSet {
            param_id: id.to_string(),
            point,
            parameters: vec![("beta".to_string(), ParamValue::Float(beta))],
            loss,
            loss_se: None,
            n_failed,
        };
        let mut expected =
            summary("t", vec![best(43, "d", 0.4, 1.5, 1), best(40, "a", 0.1, 2.0, 0)], 4, 1);
        expected.nan_losses = 1;
        assert_eq!(got, vec![expected]);
    }
}

/// Failed simulations of one kind (`crash`, `oom`, `timeout`, `panic`, …), as
/// [`failures_by_kind`] counts them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureKind {
    /// The failure kind (the `kind` column of `failures/`).
    pub kind: String,
    /// Failed attempts of this kind.
    pub count: u64,
    /// The message of the first one in sweep order.
    pub first_message: String,
}

/// The failed attempts of the committed batches by kind, most frequent first (ties by kind):
/// what a user needs to know why simulations failed without opening `failures/`. Reads only
/// the `kind` and `message` columns of the batches whose failure file has rows.
///
/// # Errors
/// [`EngineError::Io`] / [`EngineError::Damaged`] naming a failure file that cannot be read.
pub fn failures_by_kind(layout: &OutputLayout, manifest: &Manifest) -> Result<Vec<FailureKind>> {
    let dataset = Dataset::Failures;
    let key = dataset.relative_dir();
    let mut batches: Vec<_> =
        manifest.batches.iter().filter(|b| b.rows.get(&key).is_some_and(|&n| n > 0)).collect();
    batches.sort_by_key(|b| b.first_point);
    let mut kinds: Vec<FailureKind> = Vec::new();
    for batch in batches {
        let path = layout.batch_file(&dataset, batch.index);
        let damaged = |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Damaged {
            path: path.clone(),
            what: "this committed failure file".to_string(),
            source,
        };
        let file = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| damaged(Box::new(e)))?;
        for rb in reader {
            let rb = rb.map_err(|e| damaged(Box::new(e)))?;
            let column = |name: &str| {
                rb.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>())
            };
            let (Some(kind), Some(message)) = (column("kind"), column("message")) else {
                return Err(damaged("no `kind` and `message` (Utf8) columns".into()));
            };
            for row in 0..rb.num_rows() {
                match kinds.iter_mut().find(|k| k.kind == kind.value(row)) {
                    Some(k) => k.count += 1,
                    None => kinds.push(FailureKind {
                        kind: kind.value(row).to_string(),
                        count: 1,
                        first_message: message.value(row).to_string(),
                    }),
                }
            }
        }
    }
    kinds.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Ok(kinds)
}
