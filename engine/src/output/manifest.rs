//! The manifest: what the sweep is and which batches are committed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsync_dir;
use super::layout::{tmp_path_of, Dataset, FaultPoint, OutputLayout};
use crate::error::{EngineError, Result};

/// Version of the manifest format written by this engine; bumped on incompatible changes.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

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
        }
    }

    /// Reads the manifest at `path`; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`EngineError::Io`] when it cannot be read, [`EngineError::Damaged`] when it is not a
    /// manifest (truncated, not UTF-8, not JSON, or JSON of another shape).
    pub fn load(path: &Path) -> Result<Option<Manifest>> {
        let damaged = |source: Box<dyn std::error::Error + Send + Sync>| EngineError::Damaged {
            path: path.to_path_buf(),
            what: "the manifest".to_string(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(damaged("not UTF-8 text".into()))
            }
            Err(e) => return Err(EngineError::io(path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|source| damaged(Box::new(source)))
    }

    /// Replaces `manifest.json` atomically: writes `manifest.json.tmp`, fsyncs it, renames it
    /// over `manifest.json`, fsyncs the output directory. Readers see the old or the new
    /// manifest, never a mix. Written as it is: [`Manifest::record`] sets `updated_at`; set it
    /// yourself (to [`utc_now_rfc3339`]) when changing other fields.
    ///
    /// # Errors
    /// [`EngineError::Io`] when a step fails (the old manifest then stays in place), and
    /// [`EngineError::Manifest`] if encoding fails.
    pub fn write_atomic(&self, layout: &OutputLayout) -> Result<()> {
        layout.check_fault(FaultPoint::BeforeManifest, &layout.manifest_path(), |b| {
            self.is_committed(b)
        })?;
        write_json_atomic(&layout.manifest_path(), self)
    }

    /// Adds a committed batch, keeping `batches` sorted by index, and sets `finished` when
    /// every planned batch is committed; sets `updated_at` to now. A batch of the same index is
    /// replaced.
    pub fn record(&mut self, batch: CommittedBatch) {
        self.updated_at = utc_now_rfc3339();
        match self.batches.binary_search_by_key(&batch.index, |b| b.index) {
            Ok(i) => self.batches[i] = batch,
            Err(i) => self.batches.insert(i, batch),
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
        }
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
        assert!(text.contains("\n  \"format_version\": 1,"), "pretty JSON: {text}");
    }

    #[test]
    fn load_missing_is_none_and_garbage_is_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("manifest.json");
        assert!(Manifest::load(&path).unwrap().is_none());
        std::fs::write(&path, "{ not json").unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(err.is_damaged_output() && !err.is_input_error(), "{err}");
        assert!(err.to_string().contains("the manifest is damaged"), "{err}");
        assert!(err.to_string().contains("--restart"), "{err}");
        std::fs::write(&path, [0xffu8, 0xfe, b'{']).unwrap();
        assert!(Manifest::load(&path).unwrap_err().is_damaged_output());
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
