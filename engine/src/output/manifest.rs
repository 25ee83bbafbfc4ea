//! The manifest: what the sweep is and which batches are committed.
//!
//! On disk it is two files: `manifest.json` (the job, the plan, and the batches compacted into
//! it, replaced atomically) and `commits.log` (one record appended per batch committed since the
//! last compaction, see [`super::commit_log`]). [`Manifest::load`] reads both;
//! [`Manifest::commit`] appends one record (O(1) per batch); [`Manifest::write_atomic`] compacts.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::commit_log;
use super::fsync_dir;
use super::layout::{tmp_path_of, Dataset, FaultPoint, OutputLayout};
use crate::error::{EngineError, Result};
use crate::progress::TargetSummary;
use crate::summary::{merge_summaries, BEST_PER_TARGET};

/// Version of the manifest format written by this engine; bumped on incompatible changes.
///
/// - 1: `manifest.json` only, rewritten after every batch.
/// - 2: `manifest.json` compacted at a run's start and end, plus `commits.log` (a record per
///   batch committed since); `best` holds the best parameter sets per target. A format-1
///   output is read as it is and upgraded by the next run that resumes it.
/// - 3: target tables have a `loss_se` column (the loss's Monte Carlo standard error). A
///   format-2 output resumed stays format 2 and its new batches have no `loss_se`, so that
///   every file of a dataset has one schema.
pub const MANIFEST_FORMAT_VERSION: u32 = 3;

/// `manifest.json`: the job, the plan, and every committed batch.
///
/// The manifest is the source of truth of the output directory: a batch is committed when, and
/// only when, the manifest lists it (see [`crate::output`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] of the engine that wrote it.
    pub format_version: u32,
    /// Version of the engine that wrote it.
    pub engine_version: String,
    /// The job's name.
    pub job_name: String,
    /// Hash of the resolved job spec; a resumed run must have the same.
    pub spec_hash: String,
    /// Parameter sets per batch of the current run (earlier runs may have used another size).
    pub batch_size: u64,
    /// Parameter sets of the sweep.
    pub n_parameter_sets: u64,
    /// Replicates per parameter set.
    pub replicates: u32,
    /// Simulations of the whole sweep.
    pub simulations_planned: u64,
    /// Batches of the whole sweep, committed and planned.
    pub batches_planned: u32,
    /// Committed batches, by index.
    pub batches: Vec<CommittedBatch>,
    /// When the output directory was first written, RFC 3339 UTC.
    pub created_at: String,
    /// When the manifest was last replaced, RFC 3339 UTC.
    pub updated_at: String,
    /// True once every batch is committed.
    pub finished: bool,
    /// Fingerprint of each part of the spec (see [`crate::output::SpecIdentity`]), to say what
    /// changed when a resume is refused. Absent in manifests of older engines.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spec_parts: BTreeMap<String, String>,
    /// Optional peak counters of the run, e.g. `simulations_in_flight`; for diagnosis.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peak_in_flight: BTreeMap<String, u64>,
    /// The [`BEST_PER_TARGET`] best parameter sets per target over the committed batches, with
    /// the rows and null losses counted (format 2 on; a format-1 manifest has none: its best
    /// are read from the committed target files, see [`Manifest::has_best`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub best: Vec<TargetSummary>,
    /// For the output of one shard of a sharded run: which shard, and its slice of the sweep
    /// (fixed when the shard first ran, whatever batch size later runs use). `None` for an
    /// unsharded output, whose slice is the whole sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSlice>,
    /// Each target's observations as the run aligned them (model time), for readers of the
    /// output such as `simsweep report`; written at every run's start. Absent in outputs of
    /// older engines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<TargetObservations>,
    /// Simulation workers of the latest run (for readers such as `simsweep report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
}

/// One target's observed data and how it is compared, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetObservations {
    /// Target name.
    pub target: String,
    /// Model output compared.
    pub output: String,
    /// Its value column.
    pub column: String,
    /// Its time column.
    pub time_column: String,
    /// Observation times, in model time units.
    pub times: Vec<f64>,
    /// Observed values, same order.
    pub observed: Vec<f64>,
    /// Loss, as the spec names it (`poisson`, ...).
    pub loss: String,
    /// Aggregation, as the spec names it (`likelihood`, ...).
    pub aggregation: String,
    /// The measurement model's reporting fraction: a number, or the parameter holding it.
    pub reporting_fraction: String,
}

impl TargetObservations {
    /// The record of `target`.
    pub fn of(target: &crate::target::Target) -> Self {
        TargetObservations {
            target: target.name.clone(),
            output: target.output.clone(),
            column: target.column.clone(),
            time_column: target.time_column.clone(),
            times: target.times.clone(),
            observed: target.observed.clone(),
            loss: target.loss_fn.kind().as_str().to_string(),
            aggregation: target.aggregation.as_str().to_string(),
            reporting_fraction: match &target.observation.reporting {
                crate::target::ReportingFraction::Value(v) => v.to_string(),
                crate::target::ReportingFraction::Parameter(p) => p.clone(),
            },
        }
    }
}

/// The slice of the sweep one shard's output holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSlice {
    /// The shard's index, `0..count`.
    pub index: u32,
    /// Shards of the run.
    pub count: u32,
    /// First parameter-set index of the slice.
    pub first_point: u64,
    /// One past the last parameter-set index of the slice.
    pub end_point: u64,
}

impl ShardSlice {
    /// The slice's parameter-set indices.
    pub fn points(&self) -> Range<u64> {
        self.first_point..self.end_point
    }
}

/// One committed batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedBatch {
    /// Batch index (names its files).
    pub index: u32,
    /// First parameter-set index of the batch.
    pub first_point: u64,
    /// One past the last parameter-set index of the batch.
    pub end_point: u64,
    /// Simulations run (replicates), failed ones included.
    pub simulations: u64,
    /// Simulations that failed.
    pub failed: u64,
    /// Rows per file, keyed by dataset folder ([`Dataset::relative_dir`], e.g.
    /// `targets/in_bed`). Lists every file of the batch, empty ones included.
    pub rows: BTreeMap<String, u64>,
    /// When the batch was committed, RFC 3339 UTC.
    pub committed_at: String,
    /// Wall-clock seconds from the batch's release to its commit.
    pub seconds: f64,
    /// The batch's own best parameter sets per target (at most [`BEST_PER_TARGET`] each), as
    /// its commit record carries them; [`Manifest::record`] folds them into
    /// [`Manifest::best`] and keeps the batch without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub best: Vec<TargetSummary>,
}

impl CommittedBatch {
    /// The `rows` map of [`commit_batch`](crate::output::commit_batch)'s result.
    pub fn rows_map(rows: &[(Dataset, u64)]) -> BTreeMap<String, u64> {
        rows.iter().map(|(d, n)| (d.relative_dir(), *n)).collect()
    }

    /// The parameter-set indices of the batch.
    pub fn points(&self) -> Range<u64> {
        self.first_point..self.end_point
    }
}

/// True when `text` (of a `manifest.json` that does not decode) has the shape of
/// simsweep's own manifest, truncated or altered: a JSON object naming simsweep's fields.
/// Anything else — another tool's `manifest.json`, a text file — is not simsweep's.
fn looks_like_our_manifest(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && ["\"format_version\"", "\"spec_hash\"", "\"engine_version\""]
            .iter()
            .filter(|field| text.contains(*field))
            .count()
            >= 2
}

/// `commits.log` in the folder of the manifest at `manifest_path`.
fn commit_log_path_beside(manifest_path: &Path) -> std::path::PathBuf {
    manifest_path.with_file_name(super::layout::COMMIT_LOG_FILE)
}

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
pub fn utc_now_rfc3339() -> String {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Replaces the file `path` with `value` as pretty JSON, atomically: writes `path` + `.tmp`,
/// fsyncs it, renames it over `path`, fsyncs the parent folder. Readers see the old or the new
/// content, never a mix. Used for `manifest.json` and `summary.json`.
///
/// # Errors
/// [`EngineError::Io`] when a step fails (the old file then stays in place), and
/// [`EngineError::Manifest`] if `value` cannot be encoded as JSON.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let tmp = tmp_path_of(path);
    let mut json = serde_json::to_vec_pretty(value)
        .map_err(|source| EngineError::Manifest { path: path.to_path_buf(), source })?;
    json.push(b'\n');

    // Write and fsync a temporary file, rename it over the old one (atomic: readers see one
    // or the other), fsync the folder (the rename is durable). For the manifest, that rename is
    // the instant a batch becomes committed (docs/commit-protocol.md, step 4).
    let mut file = File::create(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
    file.write_all(&json).map_err(|e| EngineError::io(&tmp, e))?;
    file.sync_all().map_err(|e| EngineError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => fsync_dir(dir),
        None => fsync_dir(Path::new(".")),
    }
}

impl Manifest {
    /// A manifest of a sweep with no batch committed yet, created now.
    pub fn new(
        job_name: impl Into<String>,
        spec_hash: impl Into<String>,
        batch_size: u64,
        n_parameter_sets: u64,
        replicates: u32,
        simulations_planned: u64,
        batches_planned: u32,
    ) -> Self {
        let now = utc_now_rfc3339();
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            job_name: job_name.into(),
            spec_hash: spec_hash.into(),
            batch_size,
            n_parameter_sets,
            replicates,
            simulations_planned,
            batches_planned,
            batches: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
            finished: false,
            spec_parts: BTreeMap::new(),
            peak_in_flight: BTreeMap::new(),
            best: Vec::new(),
            shard: None,
            observations: Vec::new(),
            workers: None,
        }
    }

    /// Reads the manifest at `path` (`<out>/manifest.json`) and the commit log beside it
    /// (`<out>/commits.log`), whose records it adds; `Ok(None)` when there is no manifest.
    ///
    /// A torn last record of the log (a crash while it was appended) is ignored: that batch is
    /// not committed. The next [`Manifest::write_atomic`] discards it from the file too.
    ///
    /// # Errors
    /// [`EngineError::Io`] when either cannot be read, [`EngineError::Damaged`] when the
    /// manifest is not a manifest (truncated, not UTF-8, not JSON, or JSON of another shape) or
    /// a record of the log before its last is garbled.
    pub fn load(path: &Path) -> Result<Option<Manifest>> {
        let damaged = |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Damaged {
            path: path.to_path_buf(),
            what: "the manifest".to_string(),
            source,
        };
        // The log first: a compaction replaces the manifest before it empties the log, so a
        // log read before the manifest is never missing what that manifest lacks (records the
        // manifest already lists are read again harmlessly).
        let log = commit_log::read_records::<CommittedBatch>(&commit_log_path_beside(path));
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // simsweep writes UTF-8 JSON: this file is someone else's.
                return Err(EngineError::OutputConflict {
                    dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    message: "holds a manifest.json that simsweep did not write (not UTF-8 \
                              text): it is not a simsweep output (simsweep deletes nothing \
                              there, not even to start over)"
                        .to_string(),
                    remedy: crate::Remedy::OtherOutput,
                });
            }
            Err(e) => return Err(EngineError::io(path, e)),
        };
        let mut manifest: Manifest = match serde_json::from_str(&text) {
            Ok(manifest) => manifest,
            Err(source) if !looks_like_our_manifest(&text) => {
                let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                return Err(EngineError::OutputConflict {
                    dir,
                    message: format!(
                        "holds a manifest.json that simsweep did not write ({source}): it is not \
                         a simsweep output (simsweep deletes nothing there, not even to start \
                         over)"
                    ),
                    remedy: crate::Remedy::OtherOutput,
                });
            }
            Err(source) => return Err(damaged(Box::new(source))),
        };
        for batch in log?.records {
            manifest.record(batch);
        }
        Ok(Some(manifest))
    }

    /// True when [`Manifest::best`] covers every committed batch (a manifest of format 2 or
    /// later); false for a format-1 manifest, whose best are in its target files only.
    pub fn has_best(&self) -> bool {
        self.format_version >= 2
    }

    /// Commits `batch`, whose files are already in place ([`crate::output::commit_batch`]):
    /// appends its record to `commits.log` and makes it durable, then records it here. Costs
    /// one append and one `fdatasync`, whatever the number of batches committed before.
    ///
    /// # Errors
    /// [`EngineError::Io`] naming the log when it cannot be written or synced (the batch is
    /// then not committed, and this manifest is unchanged); stop committing after one.
    pub fn commit(&mut self, layout: &OutputLayout, batch: CommittedBatch) -> Result<()> {
        let log = layout.commit_log_path();
        let index = batch.index;
        layout.check_fault(FaultPoint::BeforeManifest, &log, |b| b == index)?;
        if let Err(injected) =
            layout.check_fault(FaultPoint::TornCommitRecord, &log, |b| b == index)
        {
            commit_log::append_torn_record(&log, &batch)?;
            return Err(injected);
        }
        commit_log::append_record(&log, &batch)?;
        self.record(batch);
        Ok(())
    }

    /// Compacts: replaces `manifest.json` atomically with this manifest, every committed batch
    /// included (writes `manifest.json.tmp`, fsyncs it, renames it over `manifest.json`, fsyncs
    /// the output directory), then empties `commits.log`. Readers see the old or the new
    /// manifest, never a mix; a crash between the two steps leaves log records that the new
    /// manifest already lists, which [`Manifest::load`] reads as the same batches again.
    /// Written as it is: [`Manifest::record`] sets `updated_at`; set it yourself (to
    /// [`utc_now_rfc3339`]) when changing other fields. Costs O(committed batches): a run calls
    /// it when it starts and when it ends, never per batch.
    ///
    /// # Errors
    /// [`EngineError::Io`] when a step fails (the old manifest then stays in place), and
    /// [`EngineError::Manifest`] if encoding fails.
    pub fn write_atomic(&self, layout: &OutputLayout) -> Result<()> {
        layout.check_fault(FaultPoint::BeforeManifest, &layout.manifest_path(), |b| {
            self.is_committed(b)
        })?;
        write_json_atomic(&layout.manifest_path(), self)?;
        commit_log::truncate(&layout.commit_log_path())
    }

    /// Adds a committed batch, keeping `batches` sorted by index, folds its best parameter sets
    /// into [`Manifest::best`] (the batch is kept without them), and sets `finished` when every
    /// planned batch is committed; sets `updated_at` to now. A batch whose index is already
    /// listed is the same batch read again (a log record the manifest was compacted with): it
    /// replaces the entry and is not counted twice.
    pub fn record(&mut self, mut batch: CommittedBatch) {
        self.updated_at = utc_now_rfc3339();
        let best = std::mem::take(&mut batch.best);
        match self.batches.binary_search_by_key(&batch.index, |b| b.index) {
            Ok(i) => self.batches[i] = batch,
            Err(i) => {
                self.batches.insert(i, batch);
                merge_summaries(&mut self.best, best, BEST_PER_TARGET);
            }
        }
        self.finished = self.batches.len() as u64 >= u64::from(self.batches_planned);
    }

    /// The points of each committed batch, one range per batch, sorted by first point.
    /// What [`crate::plan::Planner::new`] takes.
    pub fn committed_ranges(&self) -> Vec<Range<u64>> {
        let mut ranges: Vec<Range<u64>> = self.batches.iter().map(CommittedBatch::points).collect();
        ranges.sort_by_key(|r| r.start);
        ranges
    }

    /// The index of the next new batch: one past the highest committed index, 0 if none.
    pub fn next_index(&self) -> u32 {
        self.batches.iter().map(|b| b.index.saturating_add(1)).max().unwrap_or(0)
    }

    /// True when batch `index` is committed.
    pub fn is_committed(&self, index: u32) -> bool {
        self.batches.iter().any(|b| b.index == index)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn batch(index: u32, points: Range<u64>, datasets: &[&Dataset]) -> CommittedBatch {
        CommittedBatch {
            index,
            first_point: points.start,
            end_point: points.end,
            simulations: (points.end - points.start) * 2,
            failed: 0,
            rows: datasets.iter().map(|d| (d.relative_dir(), 5)).collect(),
            committed_at: utc_now_rfc3339(),
            seconds: 0.25,
            best: Vec::new(),
        }
    }

    fn best_of(target: &str, point: u64, loss: f64) -> TargetSummary {
        TargetSummary {
            target: target.to_string(),
            best: vec![crate::progress::BestParameterSet {
                param_id: format!("p{point}"),
                point,
                parameters: vec![],
                loss,
                loss_se: None,
                n_failed: 0,
            }],
            rows: 4,
            null_losses: 1,
            ..TargetSummary::default()
        }
    }

    #[test]
    fn commits_append_to_the_log_and_compaction_folds_them_in() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let mut m = Manifest::new("job", "h", 4, 12, 2, 24, 3);
        m.write_atomic(&layout).unwrap();
        let header = std::fs::read(layout.manifest_path()).unwrap();
        for (i, loss) in [(0u32, 3.0), (1, 1.0)] {
            let mut b = batch(i, u64::from(i) * 4..u64::from(i) * 4 + 4, &[]);
            b.best = vec![best_of("t", u64::from(i) * 4, loss)];
            m.commit(&layout, b).unwrap();
        }
        // The manifest file is untouched by commits; the log has one line per batch.
        assert_eq!(std::fs::read(layout.manifest_path()).unwrap(), header);
        let log = std::fs::read_to_string(layout.commit_log_path()).unwrap();
        assert_eq!(log.lines().count(), 2);
        let loaded = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(loaded.batches, m.batches);
        assert_eq!(loaded.committed_ranges(), vec![0..4, 4..8]);
        let expected_best = vec![TargetSummary {
            target: "t".into(),
            best: vec![best_of("t", 4, 1.0).best[0].clone(), best_of("t", 0, 3.0).best[0].clone()],
            rows: 8,
            null_losses: 2,
            ..TargetSummary::default()
        }];
        assert_eq!(loaded.best, expected_best);
        assert!(loaded.batches.iter().all(|b| b.best.is_empty()), "kept without their best");

        // Compaction: the manifest lists both, the log is empty, the state is the same.
        m.write_atomic(&layout).unwrap();
        assert_eq!(std::fs::metadata(layout.commit_log_path()).unwrap().len(), 0);
        let compacted = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(
            (compacted.batches.clone(), compacted.best.clone()),
            (m.batches.clone(), expected_best.clone())
        );

        // A crash between the manifest's replacement and the log's truncation: the records are
        // read again and change nothing (no batch or row counted twice).
        let mut b2 = batch(2, 8..12, &[]);
        b2.best = vec![best_of("t", 8, 2.0)];
        let mut with_log = compacted.clone();
        with_log.commit(&layout, b2.clone()).unwrap();
        write_json_atomic(&layout.manifest_path(), &with_log).unwrap();
        let replayed = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(replayed.batches.len(), 3);
        assert_eq!(replayed.best[0].rows, 12);
        assert_eq!(
            replayed.best[0].best.iter().map(|b| b.point).collect::<Vec<_>>(),
            vec![4, 8, 0]
        );
        assert!(replayed.finished);
    }

    #[test]
    fn a_torn_last_record_is_not_a_committed_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let mut m = Manifest::new("job", "h", 4, 12, 2, 24, 3);
        m.write_atomic(&layout).unwrap();
        m.commit(&layout, batch(0, 0..4, &[])).unwrap();
        let torn = layout.clone().with_fault_at_batch(FaultPoint::TornCommitRecord, 1);
        let err = m.commit(&torn, batch(1, 4..8, &[])).unwrap_err();
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert_eq!(m.batches.len(), 1, "not recorded in memory");
        let loaded = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(loaded.committed_ranges(), vec![0..4]);
        // Compaction drops the torn bytes; later commits are read normally.
        loaded.write_atomic(&layout).unwrap();
        let mut again = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        again.commit(&layout, batch(1, 4..8, &[])).unwrap();
        let last = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(last.committed_ranges(), vec![0..4, 4..8]);
    }

    #[test]
    fn a_format_1_manifest_is_read_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        // As engine 0.1.0 of format 1 wrote it: batches inline, no best, no commit log.
        let v1 = r#"{
  "format_version": 1, "engine_version": "0.1.0", "job_name": "flu", "spec_hash": "abc",
  "batch_size": 4, "n_parameter_sets": 8, "replicates": 2, "simulations_planned": 16,
  "batches_planned": 2,
  "batches": [{"index": 0, "first_point": 0, "end_point": 4, "simulations": 8, "failed": 1,
               "rows": {"targets/t": 4}, "committed_at": "2026-01-01T00:00:00.000Z",
               "seconds": 0.5}],
  "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
  "finished": false
}"#;
        std::fs::write(layout.manifest_path(), v1).unwrap();
        let m = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(m.format_version, 1);
        assert!(!m.has_best());
        assert_eq!(m.committed_ranges(), vec![0..4]);
        assert_eq!(m.batches[0].failed, 1);
    }

    #[test]
    fn roundtrip_and_atomic_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let mut m = Manifest::new("job", "abc123", 4, 10, 2, 20, 3);
        m.write_atomic(&layout).unwrap();
        let first = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert_eq!(first.batches, vec![]);
        assert_eq!(first.spec_hash, "abc123");
        assert_eq!(first.engine_version, env!("CARGO_PKG_VERSION"));

        m.record(batch(1, 4..8, &[&Dataset::Failures]));
        m.record(batch(0, 0..4, &[&Dataset::Target("t".into())]));
        m.peak_in_flight.insert("simulations".into(), 16);
        m.write_atomic(&layout).unwrap();
        let second = Manifest::load(&layout.manifest_path()).unwrap().unwrap();
        assert!(!layout.manifest_tmp_path().exists());
        assert_eq!(second.batches.iter().map(|b| b.index).collect::<Vec<_>>(), vec![0, 1]);
        assert!(second.updated_at >= first.updated_at);
        assert_eq!(second, m);
        assert_eq!(m.committed_ranges(), vec![0..4, 4..8]);
        assert_eq!(m.next_index(), 2);
        assert!(!m.finished);
        m.record(batch(2, 8..10, &[]));
        assert!(m.finished);

        let text = std::fs::read_to_string(layout.manifest_path()).unwrap();
        assert!(text.contains("\n  \"format_version\": 3,"), "pretty JSON: {text}");
    }

    #[test]
    fn load_missing_is_none_and_garbage_is_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("manifest.json");
        assert!(Manifest::load(&path).unwrap().is_none());
        // simsweep's own manifest, truncated: damaged, and --restart is the way out.
        let ours =
            serde_json::to_string_pretty(&Manifest::new("job", "abc", 4, 10, 2, 20, 3)).unwrap();
        std::fs::write(&path, &ours[..ours.len() / 2]).unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(err.is_damaged_output() && !err.is_input_error(), "{err}");
        assert!(err.to_string().contains("the manifest is damaged"), "{err}");
        assert!(err.to_string().contains("start over (`RunOptions::restart`"), "{err}");
        // Another tool's manifest.json, or not even text: not a simsweep output (exit 2).
        for foreign in
            [&b"{ not json"[..], br#"{"name": "my-app", "version": "1.0"}"#, &[0xffu8, 0xfe, b'{']]
        {
            std::fs::write(&path, foreign).unwrap();
            let err = Manifest::load(&path).unwrap_err();
            assert!(err.is_input_error() && !err.is_damaged_output(), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("not a simsweep output") && text.contains("deletes nothing"),
                "{text}"
            );
        }
    }

    #[test]
    fn failed_replace_keeps_old_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let m = Manifest::new("job", "h", 4, 10, 2, 20, 3);
        m.write_atomic(&layout).unwrap();
        let mut m2 = m.clone();
        m2.record(batch(0, 0..4, &[]));
        let faulty = layout.clone().with_fault(FaultPoint::BeforeManifest);
        let err = m2.write_atomic(&faulty).unwrap_err();
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert!(Manifest::load(&layout.manifest_path()).unwrap().unwrap().batches.is_empty());
    }

    #[test]
    fn timestamp_is_rfc3339_utc() {
        let t = utc_now_rfc3339();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert!(t.ends_with('Z'));
    }
}
