//! The per-task and per-batch bookkeeping of the dataflow, as synchronous state machines.
//!
//! - [`SimTask`] / [`SimReturn`]: one replicate to run, and what it returned.
//! - [`ReplicateCollector`] (the Aggregator's state): holds a parameter set's replicates only
//!   until all of them have returned, then scores every target ([`score_point`]) and drops them.
//! - [`BatchAssembler`] (the ParquetWriter's state): holds an open batch's rows until the batch
//!   is complete, then hands out its tables sorted by (parameter set index, replicate), so the
//!   files do not depend on the order in which replicates finished.
//!
//! Both hold data for open batches only; the Batcher keeps at most
//! [`crate::plan::Planner`]'s `max_open` batches open, which bounds them by
//! `max_open × batch_size × R` replicates.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Float64Builder, Int32Builder, Int64Array, ListBuilder,
    StringArray, StringBuilder, UInt32Array, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use arrow::record_batch::RecordBatch;

use crate::error::Result;

use crate::model::{FailureKind, OutputSpec, SimError, SimOutput};
use crate::output::{BatchTable, Dataset};
use crate::params::{ParamColumn, ParamKind, ParameterSet, Sweep};
use crate::plan::BatchRange;
use crate::target::Target;

/// One replicate to run.
#[derive(Debug, Clone)]
pub struct SimTask {
    /// The batch the task belongs to (index and point range).
    pub batch: BatchRange,
    /// Index of the parameter set in the sweep.
    pub point: u64,
    /// 0-based replicate number.
    pub replicate: u32,
    /// The replicate's seed.
    pub seed: u32,
}

/// What one replicate returned.
#[derive(Debug, Clone)]
pub struct SimReturn {
    /// The task that ran.
    pub task: SimTask,
    /// The output tables, or why the replicate's last attempt failed.
    pub result: std::result::Result<SimOutput, SimError>,
    /// Attempts that failed before the last one (retried per the job's
    /// [`crate::model::RetryPolicy`]), attempt 1 first; each is a row of `failures/`.
    pub failed_attempts: Vec<SimError>,
}

impl SimReturn {
    /// Failure records of every failed attempt: the retried ones, then the last one when it
    /// failed too.
    pub fn failure_records(&self) -> Vec<FailureRecord> {
        let last = self.result.as_ref().err();
        self.failed_attempts
            .iter()
            .chain(last)
            .enumerate()
            .map(|(i, error)| FailureRecord::new(&self.task, i as u32 + 1, error))
            .collect()
    }
}

/// Number of replicates run for a point: 1 for a point with a fixed seed, else `replicates`.
pub fn replicates_of(sweep: &Sweep, point: u64, replicates: u32) -> u32 {
    match sweep.fixed_seed(point as usize) {
        Some(_) => 1,
        None => replicates,
    }
}

/// The seed of replicate `replicate` of point `point` (computes the point's `param_id`; for
/// every replicate of a point use [`tasks_of`]).
pub fn seed_of(sweep: &Sweep, point: u64, replicate: u32) -> u32 {
    let p = point as usize;
    sweep
        .fixed_seed(p)
        .unwrap_or_else(|| crate::identity::replicate_seed(&sweep.param_id(p), replicate))
}

/// Expands a batch into its tasks, in (point, replicate) order (each point's `param_id` is
/// computed once).
/// Replicates are numbered from `first_replicate` (0 but for a refine step's job, see
/// [`crate::spec::Job::first_replicate`]); seeds derive from the set's `param_id` and that
/// number.
pub fn tasks_of<'a>(
    sweep: &'a Sweep,
    batch: &BatchRange,
    replicates: u32,
    first_replicate: u32,
) -> impl Iterator<Item = SimTask> + 'a {
    let batch = batch.clone();
    batch.points.clone().flat_map(move |point| {
        let batch = batch.clone();
        let seeds = match sweep.fixed_seed(point as usize) {
            Some(seed) => Seeds::Fixed(seed),
            None => Seeds::Derived(sweep.param_id(point as usize)),
        };
        let first = if matches!(seeds, Seeds::Fixed(_)) { 0 } else { first_replicate };
        (first..first + replicates_of(sweep, point, replicates)).map(move |replicate| SimTask {
            batch: batch.clone(),
            point,
            replicate,
            seed: match &seeds {
                Seeds::Fixed(seed) => *seed,
                Seeds::Derived(id) => crate::identity::replicate_seed(id, replicate),
            },
        })
    })
}

/// Where a point's replicate seeds come from.
enum Seeds {
    /// A parameter file's `seed` column: the one replicate's seed.
    Fixed(u32),
    /// Derived from the point's `param_id` per replicate.
    Derived(crate::identity::ParamId),
}

/// Number of tasks of the points `points`.
pub fn task_count(sweep: &Sweep, points: &Range<u64>, replicates: u32) -> u64 {
    points.clone().map(|p| u64::from(replicates_of(sweep, p, replicates))).sum()
}

/// One parameter set's losses, one per target, with how its replicates fared.
#[derive(Debug, Clone, PartialEq)]
pub struct PointLosses {
    /// The batch of the point.
    pub batch: BatchRange,
    /// Index of the parameter set in the sweep.
    pub point: u64,
    /// Loss per target, in the job's target order; `None` when no replicate succeeded or the
    /// model's output could not be aligned with the observations.
    pub losses: Vec<Option<f64>>,
    /// Monte Carlo standard error of each loss ([`crate::loss::LossEstimate`]), same order;
    /// `None` where the loss is `None` or has no standard error.
    pub standard_errors: Vec<Option<f64>>,
    /// Replicates run.
    pub n_replicates: u32,
    /// Replicates that failed.
    pub n_failed: u32,
    /// Seeds of all replicates, by replicate number.
    pub seeds: Vec<u32>,
}

struct PendingPoint {
    batch: BatchRange,
    expected: u32,
    /// (replicate, seed, tables of the scored outputs or None when failed)
    arrived: Vec<(u32, u32, Option<SimOutput>)>,
}

/// The Aggregator's state: replicates of the parameter sets whose replicates are not all in.
#[derive(Default)]
pub struct ReplicateCollector {
    pending: HashMap<u64, PendingPoint>,
    held: usize,
    /// Targets whose alignment failure was already logged at WARN.
    align_warned: std::collections::HashSet<usize>,
}

impl ReplicateCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parameter sets waiting for replicates.
    pub fn pending_points(&self) -> usize {
        self.pending.len()
    }

    /// Replicates held.
    pub fn held_replicates(&self) -> usize {
        self.held
    }

    /// Adds one replicate; when it was the last of its parameter set, scores every target and
    /// returns the losses (the replicates are dropped).
    pub fn add(
        &mut self,
        ret: SimReturn,
        sweep: &Sweep,
        replicates: u32,
        targets: &[Target],
    ) -> Option<PointLosses> {
        let point = ret.task.point;
        let entry = self.pending.entry(point).or_insert_with(|| PendingPoint {
            batch: ret.task.batch.clone(),
            expected: replicates_of(sweep, point, replicates),
            arrived: Vec::new(),
        });
        entry.arrived.push((ret.task.replicate, ret.task.seed, ret.result.ok()));
        if entry.arrived.len() < entry.expected as usize {
            self.held += 1;
            return None;
        }
        let mut done = self.pending.remove(&point)?;
        self.held -= done.arrived.len() - 1;
        done.arrived.sort_by_key(|(r, _, _)| *r);
        let warned = &mut self.align_warned;
        Some(score_point_with(done.batch, point, &done.arrived, targets, sweep, |t, error| {
            // The same misalignment usually hits every parameter set: say it once per target
            // at WARN; the run's summary counts the null losses.
            if warned.insert(t) {
                tracing::warn!(
                    target_name = %targets[t].name,
                    point,
                    %error,
                    "loss set to null; later parameter sets of this target with the same \
                     problem are logged at debug level only"
                );
            } else {
                tracing::debug!(target_name = %targets[t].name, point, %error, "loss set to null");
            }
        }))
    }
}

/// Scores every target from the replicates of one parameter set.
///
/// `replicates`: (replicate, seed, output or `None` when failed), sorted by replicate. A target
/// whose alignment fails gets a `None` loss and a line in the log at debug level.
pub fn score_point(
    batch: BatchRange,
    point: u64,
    replicates: &[(u32, u32, Option<SimOutput>)],
    targets: &[Target],
    sweep: &Sweep,
) -> PointLosses {
    score_point_with(batch, point, replicates, targets, sweep, |t, error| {
        tracing::debug!(target_name = %targets[t].name, point, %error, "loss set to null");
    })
}

/// As [`score_point`], calling `on_align_error(target index, error)` for each target whose
/// alignment fails (its loss is `None`).
pub fn score_point_with(
    batch: BatchRange,
    point: u64,
    replicates: &[(u32, u32, Option<SimOutput>)],
    targets: &[Target],
    sweep: &Sweep,
    mut on_align_error: impl FnMut(usize, crate::target::AlignError),
) -> PointLosses {
    // The set's parameters, only when a target's reporting fraction is one of them.
    let params = targets
        .iter()
        .any(|t| t.observation.parameter().is_some())
        .then(|| sweep.params(point as usize));
    let (losses, standard_errors) = targets
        .iter()
        .enumerate()
        .map(|(t, target)| {
            let tables: Vec<&RecordBatch> = replicates
                .iter()
                .filter_map(|(_, _, out)| out.as_ref())
                .filter_map(|out| out.tables.get(target.output_index))
                .collect();
            let rho = params.as_ref().map_or_else(
                || target.reporting_fraction(&ParameterSet::new()),
                |p| target.reporting_fraction(p),
            );
            match target.estimate(&tables, rho) {
                Ok(Some(e)) => (Some(e.loss), e.standard_error),
                Ok(None) => (None, None),
                Err(error) => {
                    on_align_error(t, error);
                    (None, None)
                }
            }
        })
        .unzip();
    PointLosses {
        batch,
        point,
        losses,
        standard_errors,
        n_replicates: replicates.len() as u32,
        n_failed: replicates.iter().filter(|(_, _, o)| o.is_none()).count() as u32,
        seeds: replicates.iter().map(|(_, s, _)| *s).collect(),
    }
}

/// A failed attempt of a replicate, as written to `failures/`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    /// Index of the parameter set.
    pub point: u64,
    /// Replicate number.
    pub replicate: u32,
    /// Seed of the replicate.
    pub seed: u32,
    /// `error`, `panic`, `crash`, `oom`, `timeout` or `protocol` ([`SimError::kind`]).
    pub kind: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The worker's exit status (external models), when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the worker (external models), when one did.
    pub signal: Option<i32>,
    /// The failure's message.
    pub message: String,
    /// The tail of the worker's stderr (external models, not for model errors).
    pub stderr_tail: Option<String>,
}

impl FailureRecord {
    /// The record of attempt `attempt` (1-based) of `task`, failed with `error`.
    pub fn new(task: &SimTask, attempt: u32, error: &SimError) -> Self {
        FailureRecord {
            point: task.point,
            replicate: task.replicate,
            seed: task.seed,
            kind: error.kind().to_string(),
            attempt,
            exit_code: error.exit_code(),
            signal: error.signal(),
            message: error.to_string(),
            stderr_tail: error.stderr_tail().map(str::to_string),
        }
    }
}

#[derive(Default)]
struct OpenBatch {
    expected_tasks: u64,
    tasks: u64,
    expected_points: u64,
    /// (point, replicate) → output tables
    outputs: BTreeMap<(u64, u32), (u32, SimOutput)>,
    losses: BTreeMap<u64, PointLosses>,
    /// (point, replicate, attempt) → failure
    failures: BTreeMap<(u64, u32, u32), FailureRecord>,
    /// Replicates whose last attempt failed.
    failed_replicates: u64,
    rows_buffered: u64,
    bytes_buffered: u64,
}

/// Bytes of Arrow memory one replicate's output tables hold (`RecordBatch::get_array_memory_size`
/// summed: buffers with their capacity; a buffer two tables share counts twice).
pub fn output_bytes(output: &SimOutput) -> u64 {
    output.tables.iter().map(|t| t.get_array_memory_size() as u64).sum()
}

/// A batch whose rows are all in, not yet turned into tables: [`CompleteBatch::into_tables`]
/// builds them (on the thread that commits the batch, so the writer's own thread only sorts
/// rows in).
pub struct CompleteBatch {
    /// The batch.
    pub batch: BatchRange,
    /// Replicates run.
    pub simulations: u64,
    /// Replicates whose last attempt failed.
    pub failed: u64,
    /// Failed attempts of kind `oom` (retried ones included).
    pub oom_failures: u64,
    /// Model-output rows the batch holds (the selected outputs only).
    pub model_output_rows: u64,
    /// Bytes of Arrow memory those rows hold ([`output_bytes`]).
    pub model_output_bytes: u64,
    open: OpenBatch,
    tables: Arc<TableBuilder>,
}

impl std::fmt::Debug for CompleteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleteBatch")
            .field("batch", &self.batch)
            .field("simulations", &self.simulations)
            .field("failed", &self.failed)
            .field("model_output_rows", &self.model_output_rows)
            .finish_non_exhaustive()
    }
}

impl CompleteBatch {
    /// The batch's tables, ready for [`crate::output::commit_batch`]: each selected model output
    /// (rows sorted by parameter set index, then replicate), each target (one row per parameter
    /// set), then failures (one row per failed attempt). Consumes the buffered rows.
    ///
    /// # Errors
    /// Arrow errors while concatenating the replicates' columns (a model table whose columns
    /// do not match its declared schema; the SimWorker refuses those before they get here).
    pub fn into_tables(self) -> Result<Vec<BatchTable>> {
        let points = self.batch.points.start as usize..self.batch.points.end as usize;
        let sweep = &self.tables.sweep;
        let ids = BatchIds {
            first: points.start,
            ids: sweep.param_ids(points.clone()),
            columns: sweep.columns_of(points),
        };
        self.tables.build(&self.open, &ids)
    }
}

/// The `param_id`s and values of a batch's parameter sets, computed once per batch.
struct BatchIds {
    /// Index of the batch's first set.
    first: usize,
    ids: Vec<crate::identity::ParamId>,
    /// The batch's values, one column per parameter ([`Sweep::columns_of`]).
    columns: Vec<ParamColumn>,
}

impl BatchIds {
    /// The hex `param_id` of set `point` (of this batch).
    fn hex(&self, point: u64) -> crate::identity::ParamIdHex {
        self.ids[point as usize - self.first].hex()
    }
}

/// Builds a complete batch's tables: the schemas and what the rows refer to.
struct TableBuilder {
    sweep: Arc<Sweep>,
    /// The written model outputs.
    outputs: Vec<OutputSpec>,
    /// File schema of each written output.
    output_schemas: Vec<SchemaRef>,
    /// In-memory schema of each written output (`param_id` dictionary-encoded).
    output_batch_schemas: Vec<SchemaRef>,
    target_names: Vec<String>,
    target_schema: SchemaRef,
}

/// The ParquetWriter's state: the rows of each open batch, until the batch is complete.
pub struct BatchAssembler {
    replicates: u32,
    /// For each written output, its index in the model's outputs (in a [`SimOutput`]).
    kept: Vec<usize>,
    tables: Arc<TableBuilder>,
    open: BTreeMap<u32, OpenBatch>,
}

impl BatchAssembler {
    /// An assembler for a sweep whose model has `outputs` and whose job scores `targets`.
    pub fn new(
        sweep: Arc<Sweep>,
        replicates: u32,
        outputs: Vec<OutputSpec>,
        targets: &[Target],
    ) -> Self {
        let target_schema = target_schema(&sweep, true);
        BatchAssembler {
            replicates,
            kept: (0..outputs.len()).collect(),
            tables: Arc::new(TableBuilder::new(
                sweep,
                outputs,
                targets.iter().map(|t| t.name.clone()).collect(),
                target_schema,
            )),
            open: BTreeMap::new(),
        }
    }

    /// Writes target tables without the `loss_se` column (`with_se` false): what an output
    /// begun by an engine of manifest format 2 or older holds, kept when such an output is
    /// resumed so that every file of a dataset has one schema.
    pub fn with_loss_se(mut self, with_se: bool) -> Self {
        self.tables = Arc::new(TableBuilder::new(
            self.tables.sweep.clone(),
            self.tables.outputs.clone(),
            self.tables.target_names.clone(),
            target_schema(&self.tables.sweep, with_se),
        ));
        self
    }

    /// Writes only the model outputs named in `names` (a job's `model_outputs`; those that are
    /// not among the model's outputs are ignored) instead of all of them. The other tables of
    /// each return are dropped in [`BatchAssembler::add_return`], so they are never buffered.
    pub fn with_model_outputs(mut self, names: &[String]) -> Self {
        let (kept, outputs): (Vec<usize>, Vec<OutputSpec>) = self
            .kept
            .iter()
            .zip(&self.tables.outputs)
            .filter(|(_, spec)| names.contains(&spec.name))
            .map(|(&i, spec)| (i, spec.clone()))
            .unzip();
        self.tables = Arc::new(TableBuilder::new(
            self.tables.sweep.clone(),
            outputs,
            self.tables.target_names.clone(),
            self.tables.target_schema.clone(),
        ));
        self.kept = kept;
        self
    }

    fn batch_mut(&mut self, batch: &BatchRange) -> &mut OpenBatch {
        let sweep = &self.tables.sweep;
        let replicates = self.replicates;
        self.open.entry(batch.index).or_insert_with(|| OpenBatch {
            expected_tasks: task_count(sweep, &batch.points, replicates),
            expected_points: batch.points.end - batch.points.start,
            ..OpenBatch::default()
        })
    }

    /// Model-output rows held in open batches.
    pub fn rows_buffered(&self) -> u64 {
        self.open.values().map(|b| b.rows_buffered).sum()
    }

    /// Bytes of model outputs held in open batches ([`output_bytes`] of each return).
    pub fn bytes_buffered(&self) -> u64 {
        self.open.values().map(|b| b.bytes_buffered).sum()
    }

    /// Bytes of `output` this assembler would hold: its selected tables only (the others are
    /// dropped on arrival), as [`output_bytes`] counts them.
    pub fn held_bytes(&self, output: &SimOutput) -> u64 {
        self.kept
            .iter()
            .filter_map(|&i| output.tables.get(i))
            .map(|t| t.get_array_memory_size() as u64)
            .sum()
    }

    /// Batches with rows held.
    pub fn open_batches(&self) -> usize {
        self.open.len()
    }

    /// Adds one replicate's return. Returns the batch when this completed it.
    ///
    /// # Errors
    /// Arrow errors while building the tables of a completed batch.
    pub fn add_return(&mut self, ret: SimReturn) -> Result<Option<CompleteBatch>> {
        let batch = ret.task.batch.clone();
        let failures = ret.failure_records();
        let kept = &self.kept;
        // Unselected tables are dropped here (the clones share the selected tables' buffers).
        let result = ret.result.map(|output| SimOutput {
            tables: kept.iter().filter_map(|&i| output.tables.get(i).cloned()).collect(),
        });
        let open = self.batch_mut(&batch);
        open.tasks += 1;
        let key = (ret.task.point, ret.task.replicate);
        for record in failures {
            open.failures.insert((record.point, record.replicate, record.attempt), record);
        }
        match result {
            Ok(output) => {
                open.rows_buffered +=
                    output.tables.iter().map(|t| t.num_rows() as u64).sum::<u64>();
                open.bytes_buffered += output_bytes(&output);
                open.outputs.insert(key, (ret.task.seed, output));
            }
            Err(_) => open.failed_replicates += 1,
        }
        self.finish_if_complete(batch.index)
    }

    /// Adds one parameter set's losses. Returns the batch when this completed it.
    ///
    /// # Errors
    /// Arrow errors while building the tables of a completed batch.
    pub fn add_losses(&mut self, losses: PointLosses) -> Result<Option<CompleteBatch>> {
        let index = losses.batch.index;
        let open = self.batch_mut(&losses.batch.clone());
        open.losses.insert(losses.point, losses);
        self.finish_if_complete(index)
    }

    fn finish_if_complete(&mut self, index: u32) -> Result<Option<CompleteBatch>> {
        let complete = self.open.get(&index).is_some_and(|b| {
            b.tasks == b.expected_tasks && b.losses.len() as u64 == b.expected_points
        });
        if !complete {
            return Ok(None);
        }
        let Some(open) = self.open.remove(&index) else {
            return Ok(None);
        };
        let batch = open
            .losses
            .values()
            .next()
            .map(|l| l.batch.clone())
            .unwrap_or(BatchRange { index, points: 0..0 });
        Ok(Some(CompleteBatch {
            batch,
            simulations: open.tasks,
            failed: open.failed_replicates,
            oom_failures: open
                .failures
                .values()
                .filter(|f| f.kind == FailureKind::Oom.as_str())
                .count() as u64,
            model_output_rows: open.rows_buffered,
            model_output_bytes: open.bytes_buffered,
            open,
            tables: self.tables.clone(),
        }))
    }
}

impl TableBuilder {
    /// Writes `outputs` (with their file and in-memory schemas) and the targets `target_names`
    /// of `sweep`.
    fn new(
        sweep: Arc<Sweep>,
        outputs: Vec<OutputSpec>,
        target_names: Vec<String>,
        target_schema: SchemaRef,
    ) -> Self {
        TableBuilder {
            sweep,
            output_schemas: outputs.iter().map(|o| model_output_schema(&o.schema)).collect(),
            output_batch_schemas: outputs
                .iter()
                .map(|o| model_output_batch_schema(&o.schema))
                .collect(),
            outputs,
            target_names,
            target_schema,
        }
    }

    fn build(&self, open: &OpenBatch, ids: &BatchIds) -> Result<Vec<BatchTable>> {
        let mut tables = Vec::with_capacity(self.outputs.len() + self.target_names.len() + 1);
        for (o, spec) in self.outputs.iter().enumerate() {
            tables.push(BatchTable {
                dataset: Dataset::ModelOutput(spec.name.clone()),
                schema: self.output_schemas[o].clone(),
                batches: self.model_output_rows(open, o, ids)?,
            });
        }
        for (t, name) in self.target_names.iter().enumerate() {
            tables.push(BatchTable {
                dataset: Dataset::Target(name.clone()),
                schema: self.target_schema.clone(),
                batches: vec![self.target_rows(open, t, ids)?],
            });
        }
        tables.push(BatchTable {
            dataset: Dataset::Failures,
            schema: failure_schema(),
            batches: vec![self.failure_rows(open, ids)?],
        });
        Ok(tables)
    }

    /// The rows of model output `output` for a complete batch, as one record batch: the model's
    /// columns concatenated over the replicates in (point, replicate) order, then `param_id`,
    /// `replicate` and `seed`. One large batch instead of one per replicate: the Parquet writer
    /// has a fixed cost per record batch that dominates with small model tables.
    ///
    /// `param_id` is dictionary-encoded (a `u32` key per row into the batch's parameter sets'
    /// ids): 4 bytes per row instead of 64, and no string copied per row. The file still holds
    /// a plain string column (see [`BatchTable::schema`]).
    fn model_output_rows(
        &self,
        open: &OpenBatch,
        output: usize,
        param_ids: &BatchIds,
    ) -> Result<Vec<RecordBatch>> {
        let tables: Vec<(u64, u32, u32, &RecordBatch)> = open
            .outputs
            .iter()
            .filter_map(|(&(point, replicate), (seed, sim))| {
                sim.tables.get(output).map(|t| (point, replicate, *seed, t))
            })
            .collect();
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let rows: usize = tables.iter().map(|(_, _, _, t)| t.num_rows()).sum();
        let model_columns = self.outputs[output].schema.fields().len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(model_columns + 3);
        for c in 0..model_columns {
            let parts: Vec<&dyn arrow::array::Array> =
                tables.iter().map(|(_, _, _, t)| t.column(c).as_ref()).collect();
            columns.push(arrow::compute::concat(&parts)?);
        }
        // The dictionary: each parameter set of the batch once, in point order (`tables` is
        // sorted by point, so equal points are adjacent).
        let mut ids = StringBuilder::new();
        let mut keys = Vec::with_capacity(rows);
        let mut replicates = Vec::with_capacity(rows);
        let mut seeds = Vec::with_capacity(rows);
        let mut last_point = None;
        let mut key = 0u32;
        for &(point, replicate, seed, table) in &tables {
            if last_point != Some(point) {
                if last_point.is_some() {
                    key += 1;
                }
                ids.append_value(param_ids.hex(point));
                last_point = Some(point);
            }
            keys.extend(std::iter::repeat_n(key, table.num_rows()));
            replicates.extend(std::iter::repeat_n(replicate, table.num_rows()));
            seeds.extend(std::iter::repeat_n(seed, table.num_rows()));
        }
        let param_ids = DictionaryArray::<UInt32Type>::try_new(
            UInt32Array::from(keys),
            Arc::new(ids.finish()),
        )?;
        columns.push(Arc::new(param_ids));
        columns.push(Arc::new(UInt32Array::from(replicates)));
        columns.push(Arc::new(UInt32Array::from(seeds)));
        Ok(vec![RecordBatch::try_new(self.output_batch_schemas[output].clone(), columns)?])
    }

    fn target_rows(
        &self,
        open: &OpenBatch,
        target: usize,
        param_ids: &BatchIds,
    ) -> Result<RecordBatch> {
        let n = open.losses.len();
        let mut ids = StringBuilder::with_capacity(n, n * 64);
        let mut loss = Float64Builder::with_capacity(n);
        let with_se = self.target_schema.column_with_name("loss_se").is_some();
        let mut loss_se = Float64Builder::with_capacity(if with_se { n } else { 0 });
        let mut n_rep = UInt32Builder::with_capacity(n);
        let mut n_failed = UInt32Builder::with_capacity(n);
        let mut seeds = ListBuilder::new(UInt32Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::UInt32,
            false,
        )));
        for l in open.losses.values() {
            ids.append_value(param_ids.hex(l.point));
            loss.append_option(l.losses.get(target).copied().flatten());
            if with_se {
                loss_se.append_option(l.standard_errors.get(target).copied().flatten());
            }
            n_rep.append_value(l.n_replicates);
            n_failed.append_value(l.n_failed);
            seeds.values().append_slice(&l.seeds);
            seeds.append(true);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
        for column in &param_ids.columns {
            let first = param_ids.first as u64;
            columns.push(param_column(column, open.losses.keys().map(|&p| p - first)));
        }
        columns.push(Arc::new(loss.finish()));
        if with_se {
            columns.push(Arc::new(loss_se.finish()));
        }
        columns.push(Arc::new(n_rep.finish()));
        columns.push(Arc::new(n_failed.finish()));
        columns.push(Arc::new(seeds.finish()));
        Ok(RecordBatch::try_new(self.target_schema.clone(), columns)?)
    }

    fn failure_rows(&self, open: &OpenBatch, param_ids: &BatchIds) -> Result<RecordBatch> {
        let n = open.failures.len();
        let mut ids = StringBuilder::new();
        let mut replicate = UInt32Builder::with_capacity(n);
        let mut seed = UInt32Builder::with_capacity(n);
        let mut kind = StringBuilder::new();
        let mut attempt = UInt32Builder::with_capacity(n);
        let mut exit_code = Int32Builder::with_capacity(n);
        let mut signal = Int32Builder::with_capacity(n);
        let mut message = StringBuilder::new();
        let mut stderr_tail = StringBuilder::new();
        for f in open.failures.values() {
            ids.append_value(param_ids.hex(f.point));
            replicate.append_value(f.replicate);
            seed.append_value(f.seed);
            kind.append_value(&f.kind);
            attempt.append_value(f.attempt);
            exit_code.append_option(f.exit_code);
            signal.append_option(f.signal);
            message.append_value(&f.message);
            stderr_tail.append_option(f.stderr_tail.as_deref());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids.finish()),
            Arc::new(replicate.finish()),
            Arc::new(seed.finish()),
            Arc::new(kind.finish()),
            Arc::new(attempt.finish()),
            Arc::new(exit_code.finish()),
            Arc::new(signal.finish()),
            Arc::new(message.finish()),
            Arc::new(stderr_tail.finish()),
        ];
        Ok(RecordBatch::try_new(failure_schema(), columns)?)
    }
}

/// The values of one parameter column at the positions `points` (in the column), in that
/// order.
fn param_column(column: &ParamColumn, points: impl Iterator<Item = u64>) -> ArrayRef {
    match column {
        ParamColumn::Float(values) => {
            Arc::new(Float64Array::from_iter_values(points.map(|p| values[p as usize])))
        }
        ParamColumn::Int(values) => {
            Arc::new(Int64Array::from_iter_values(points.map(|p| values[p as usize])))
        }
        ParamColumn::Str(values) => Arc::new(StringArray::from_iter_values(
            points.map(|p| values.get(p as usize).expect("a batch's points are in the sweep")),
        )),
    }
}

/// The warning for a batch in which `oom_failures` attempts ran out of memory: the numbers and
/// what to change. `memory_limit_mb` is the external model's per-process limit, when set.
pub fn oom_guidance(
    oom_failures: u64,
    memory_limit_mb: Option<u64>,
    workers: usize,
    batch_size: usize,
    replicates: u32,
) -> String {
    let limit = match memory_limit_mb {
        Some(mb) => format!("memory limit {mb} MiB per worker process"),
        None => "no memory limit set (the kernel killed it)".to_string(),
    };
    let raise = match memory_limit_mb {
        Some(_) => "raise `memory_limit_mb` if the machine has room",
        None => "set `memory_limit_mb` below the machine's memory divided by the workers",
    };
    format!(
        "{oom_failures} task attempt(s) ran out of memory ({limit}; {workers} workers, batch size \
         {batch_size} × {replicates} replicates). Each worker runs one task at a time, so peak \
         memory is about {workers} × one task's peak: run with fewer workers (`workers`), or \
         {raise}; the batch size bounds only buffered outputs"
    )
}

/// Schema of `model_outputs/<output>/`: the model's columns, then `param_id` (Utf8),
/// `replicate` (UInt32), `seed` (UInt32).
pub fn model_output_schema(model: &SchemaRef) -> SchemaRef {
    output_schema_with_param_id(model, DataType::Utf8)
}

/// The schema of a model output's record batches in memory: [`model_output_schema`] with
/// `param_id` as `Dictionary(UInt32, Utf8)`.
fn model_output_batch_schema(model: &SchemaRef) -> SchemaRef {
    output_schema_with_param_id(
        model,
        DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
    )
}

fn output_schema_with_param_id(model: &SchemaRef, param_id: DataType) -> SchemaRef {
    let mut fields: Vec<Field> = model.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("param_id", param_id, false));
    fields.push(Field::new("replicate", DataType::UInt32, false));
    fields.push(Field::new("seed", DataType::UInt32, false));
    Arc::new(Schema::new(fields))
}

/// Schema of `targets/<target>/`: `param_id`, one column per parameter (Float64, Int64 or Utf8),
/// `loss` (Float64, null when no replicate succeeded), `loss_se` (Float64, its Monte Carlo
/// standard error, null with one replicate or a non-finite loss; only when `with_se`: outputs
/// begun by engines of manifest format 2 or older lack it), `n_replicates`, `n_failed`
/// (UInt32), `seeds` (`List<UInt32>`, by replicate number).
pub fn target_schema(sweep: &Sweep, with_se: bool) -> SchemaRef {
    let mut fields = vec![Field::new("param_id", DataType::Utf8, false)];
    for (name, kind) in sweep.columns() {
        let dt = match kind {
            ParamKind::Float => DataType::Float64,
            ParamKind::Int => DataType::Int64,
            ParamKind::Str => DataType::Utf8,
        };
        fields.push(Field::new(name, dt, true));
    }
    fields.push(Field::new("loss", DataType::Float64, true));
    if with_se {
        fields.push(Field::new("loss_se", DataType::Float64, true));
    }
    fields.push(Field::new("n_replicates", DataType::UInt32, false));
    fields.push(Field::new("n_failed", DataType::UInt32, false));
    fields.push(Field::new(
        "seeds",
        DataType::List(Arc::new(Field::new("item", DataType::UInt32, false))),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// Schema of `failures/`: one row per failed attempt: `param_id`, `replicate`, `seed`, `kind`,
/// `attempt` (1-based), `exit_code`, `signal` (null unless an external worker exited or was
/// killed), `message`, `stderr_tail` (null for in-process models and model errors).
pub fn failure_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("param_id", DataType::Utf8, false),
        Field::new("replicate", DataType::UInt32, false),
        Field::new("seed", DataType::UInt32, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("attempt", DataType::UInt32, false),
        Field::new("exit_code", DataType::Int32, true),
        Field::new("signal", DataType::Int32, true),
        Field::new("message", DataType::Utf8, false),
        Field::new("stderr_tail", DataType::Utf8, true),
    ]))
}

#[cfg(test)]
mod model_outputs_tests {
    use super::*;
    use crate::output::Dataset;
    use crate::params::{ParamValue, ParameterSet};

    fn spec(name: &str) -> OutputSpec {
        OutputSpec {
            name: name.into(),
            schema: Arc::new(Schema::new(vec![Field::new("day", DataType::Int64, false)])),
        }
    }

    fn table(spec: &OutputSpec, rows: i64) -> RecordBatch {
        let col: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        RecordBatch::try_new(spec.schema.clone(), vec![col]).expect("matches the schema")
    }

    /// One point, two replicates; the model has outputs `a` (3 rows) and `b` (5 rows).
    fn run(select: Option<&[String]>) -> (u64, u64, Vec<BatchTable>) {
        let mut params = ParameterSet::new();
        params.insert("beta", ParamValue::Float(1.0));
        let sweep = Arc::new(Sweep::from_sets(&[params], None).expect("finite"));
        let specs = vec![spec("a"), spec("b")];
        let mut asm = BatchAssembler::new(sweep, 2, specs.clone(), &[]);
        if let Some(names) = select {
            asm = asm.with_model_outputs(names);
        }
        let batch = BatchRange { index: 0, points: 0..1 };
        for replicate in 0..2 {
            let ret = SimReturn {
                task: SimTask { batch: batch.clone(), point: 0, replicate, seed: 7 + replicate },
                result: Ok(SimOutput { tables: vec![table(&specs[0], 3), table(&specs[1], 5)] }),
                failed_attempts: Vec::new(),
            };
            assert!(asm.add_return(ret).expect("no arrow error").is_none());
        }
        let buffered = asm.rows_buffered();
        let losses = PointLosses {
            batch,
            point: 0,
            losses: vec![],
            standard_errors: vec![],
            n_replicates: 2,
            n_failed: 0,
            seeds: vec![7, 8],
        };
        let complete = asm.add_losses(losses).expect("no arrow error").expect("batch complete");
        assert_eq!(complete.model_output_rows, buffered);
        let simulations = complete.simulations;
        (buffered, simulations, complete.into_tables().expect("no arrow error"))
    }

    fn written(tables: &[BatchTable]) -> Vec<(String, usize)> {
        tables
            .iter()
            .filter_map(|t| match &t.dataset {
                Dataset::ModelOutput(name) => {
                    Some((name.clone(), t.batches.iter().map(|b| b.num_rows()).sum()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_output_by_default() {
        let (buffered, _, tables) = run(None);
        assert_eq!(buffered, 16);
        assert_eq!(written(&tables), [("a".to_string(), 6), ("b".to_string(), 10)]);
    }

    #[test]
    fn only_selected_outputs_are_buffered_and_written() {
        let (buffered, _, tables) = run(Some(&["b".to_string()]));
        assert_eq!(buffered, 10, "the 2 × 3 rows of `a` are dropped on arrival");
        assert_eq!(written(&tables), [("b".to_string(), 10)]);
        let b = &tables[0].batches[0];
        assert_eq!(b.schema().field(0).name(), "day");
        assert_eq!(b.num_columns(), 4, "day + param_id, replicate, seed");

        let (buffered, simulations, tables) = run(Some(&[]));
        assert_eq!(buffered, 0);
        assert!(written(&tables).is_empty());
        assert_eq!(simulations, 2);
    }
}
