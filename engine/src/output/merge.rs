//! Sharded outputs: finding the shards of an output directory and merging them.
//!
//! A sharded run writes each shard into `<out>/shard=I-of-K/`, a complete output directory of
//! its own (manifest, commit log, lock, datasets) holding a contiguous slice of the sweep. The
//! shards' datasets together are the unsharded run's rows; readers take
//! `<out>/shard=*/targets/<target>/*.parquet` as one dataset (with `shard` as a hive column).
//! [`merge_shards`] checks that the K shards are all there, finished, of one spec and engine,
//! and cover the sweep exactly once, then writes the job-level `summary.json` (the best per
//! target across shards, from the shards' manifests) and `index.json` (the shards, their
//! slices and totals). It reads manifests and commit logs only, never a batch file, so it costs
//! O(shards + batches) whatever the size of the data.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::layout::OutputLayout;
use super::manifest::{utc_now_rfc3339, write_json_atomic, Manifest};
use super::spec_parts::{SpecIdentity, MODEL_FILES};
use crate::error::{EngineError, Result};
use crate::plan::Shard;
use crate::progress::TargetSummary;
use crate::summary::merge_summaries;

/// Name of the merge's index file in a sharded output's root.
pub const INDEX_FILE: &str = "index.json";

/// The shard folders (`shard=I-of-K`) directly under `root`, sorted by shard index; folders of
/// other names are not listed. Empty when `root` has none, does not exist or is not a folder.
///
/// # Errors
/// [`EngineError::Io`] when `root` exists but cannot be listed.
pub fn find_shards(root: &Path) -> Result<Vec<(Shard, PathBuf)>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(root, e)),
    };
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(root, e))?;
        let is_dir = entry.file_type().map_err(|e| EngineError::io(entry.path(), e))?.is_dir();
        if let (true, Some(shard)) =
            (is_dir, entry.file_name().to_str().and_then(Shard::from_dir_name))
        {
            shards.push((shard, entry.path()));
        }
    }
    shards.sort_by_key(|(s, _)| (s.count, s.index));
    Ok(shards)
}

/// One shard in `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardEntry {
    /// Its folder, relative to the output root (`shard=I-of-K`).
    pub dir: String,
    /// Its index.
    pub index: u32,
    /// Its slice of the sweep, parameter-set indices `first_point..end_point`.
    pub first_point: u64,
    /// One past its last parameter-set index.
    pub end_point: u64,
    /// Batches committed.
    pub batches: usize,
    /// Simulations committed (failed ones included).
    pub simulations: u64,
    /// Failed simulations.
    pub failed: u64,
}

/// `index.json`: what [`merge_shards`] checked and found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeIndex {
    /// The job's name.
    pub job_name: String,
    /// The spec hash every shard shares.
    pub spec_hash: String,
    /// The engine version every shard was written by.
    pub engine_version: String,
    /// Parameter sets of the sweep.
    pub n_parameter_sets: u64,
    /// Shards, by index.
    pub shards: Vec<ShardEntry>,
    /// Simulations over all shards.
    pub simulations: u64,
    /// Failed simulations over all shards.
    pub failed: u64,
    /// When the merge ran, RFC 3339 UTC.
    pub merged_at: String,
}

/// Checks the shards under `root` and writes `root/summary.json` (the `k` best parameter sets
/// per target across shards, targets by name) and `root/index.json` ([`MergeIndex`]), each
/// replaced atomically. Returns what it wrote. Running it again gives the same files (but for
/// `merged_at`).
///
/// # Errors
/// [`EngineError::OutputConflict`] (an input error), with nothing written, naming every
/// problem found: no shard folder; shard folders of different counts K; missing shards;
/// shards without a manifest, not finished (with their batches committed of planned), or of
/// another spec hash or engine version than shard 0 (foreign); slices that overlap or leave
/// parameter sets out. [`EngineError::Io`] / [`EngineError::Damaged`] when a shard's manifest
/// or log cannot be read, or the files cannot be written.
pub fn merge_shards(root: &Path, k: usize) -> Result<(MergeIndex, Vec<TargetSummary>)> {
    let loaded = check_shards(root)?;
    let reference = &loaded[0].1;
    let mut best: Vec<TargetSummary> = Vec::new();
    let mut entries = Vec::new();
    for (shard, m) in &loaded {
        merge_summaries(&mut best, m.best.clone(), k);
        let slice = m.shard.as_ref().map_or(0..m.n_parameter_sets, |s| s.points());
        entries.push(ShardEntry {
            dir: shard.dir_name(),
            index: shard.index,
            first_point: slice.start,
            end_point: slice.end,
            batches: m.batches.len(),
            simulations: m.batches.iter().map(|b| b.simulations).sum(),
            failed: m.batches.iter().map(|b| b.failed).sum(),
        });
    }
    let mut targets = SpecIdentity::target_names(&reference.spec_parts);
    if targets.is_empty() {
        targets = best.iter().map(|s| s.target.clone()).collect();
    }
    targets.sort();
    let summary: Vec<TargetSummary> = targets
        .iter()
        .map(|t| {
            let mut s = best.iter().find(|s| &s.target == t).cloned().unwrap_or(TargetSummary {
                target: t.clone(),
                best: Vec::new(),
                rows: 0,
                null_losses: 0,
                ..TargetSummary::default()
            });
            s.best.truncate(k);
            s
        })
        .collect();
    let index = MergeIndex {
        job_name: reference.job_name.clone(),
        spec_hash: reference.spec_hash.clone(),
        engine_version: reference.engine_version.clone(),
        n_parameter_sets: reference.n_parameter_sets,
        simulations: entries.iter().map(|e| e.simulations).sum(),
        failed: entries.iter().map(|e| e.failed).sum(),
        shards: entries,
        merged_at: utc_now_rfc3339(),
    };
    let root_layout = OutputLayout::new(root);
    write_json_atomic(&root_layout.summary_path(), &summary)?;
    write_json_atomic(&root.join(INDEX_FILE), &index)?;
    Ok((index, summary))
}

/// The finished shards under `root`, by index, with their manifests, after the checks of
/// [`merge_shards`]; writes nothing.
///
/// # Errors
/// As [`merge_shards`], but for writing.
pub fn check_shards(root: &Path) -> Result<Vec<(Shard, Manifest)>> {
    let refuse = |message: String, remedy| EngineError::OutputConflict {
        dir: root.to_path_buf(),
        message,
        remedy,
    };
    let found = find_shards(root)?;
    let Some(&(first, _)) = found.first() else {
        return Err(refuse(
            "has no shard folder (`shard=I-of-K`): not the output of a sharded run".to_string(),
            crate::Remedy::GiveOutputDirectory,
        ));
    };
    let count = first.count;
    let mut problems = Vec::new();
    let counts: Vec<u32> = {
        let mut c: Vec<u32> = found.iter().map(|(s, _)| s.count).collect();
        c.dedup();
        c
    };
    if counts.len() > 1 {
        problems.push(format!(
            "shard folders of different runs: {} shards and {} shards; remove the folders of \
             the run that is not this one",
            counts[0], counts[1]
        ));
    }
    let shards: Vec<&(Shard, PathBuf)> = found.iter().filter(|(s, _)| s.count == count).collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !shards.iter().any(|(s, _)| s.index == *i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        problems.push(format!("missing shard(s) {} of {count}", missing.join(", "),));
    }
    let mut loaded: Vec<(Shard, Manifest)> = Vec::new();
    for (shard, dir) in &shards {
        let layout = OutputLayout::new(dir);
        match Manifest::load(&layout.manifest_path())? {
            None => problems
                .push(format!("shard {} has no manifest.json: it never started", shard.index)),
            Some(m) if !m.finished => problems.push(format!(
                "shard {} is not finished ({} of {} batches committed): run it again to resume",
                shard.index,
                m.batches.len(),
                m.batches_planned
            )),
            Some(m) => loaded.push((*shard, m)),
        }
    }
    if let Some((_, reference)) = loaded.first() {
        let (hash, version) = (reference.spec_hash.clone(), reference.engine_version.clone());
        for (shard, m) in &loaded {
            if m.spec_hash != hash {
                problems.push(format!(
                    "shard {} is foreign: spec hash {}…, shard {} has {}…",
                    shard.index,
                    &m.spec_hash[..12.min(m.spec_hash.len())],
                    loaded[0].0.index,
                    &hash[..12.min(hash.len())]
                ));
            } else if m.spec_parts.get(MODEL_FILES) != reference.spec_parts.get(MODEL_FILES) {
                problems.push(format!(
                    "shard {} ran other model code than shard {} ({}: {} there, {} here); \
                     rerun it with the others' model files",
                    shard.index,
                    loaded[0].0.index,
                    MODEL_FILES,
                    m.spec_parts.get(MODEL_FILES).map_or("none", String::as_str),
                    reference.spec_parts.get(MODEL_FILES).map_or("none", String::as_str),
                ));
            } else if m.engine_version != version {
                problems.push(format!(
                    "shard {} was written by simsweep {}, shard {} by {}; rerun it with one version",
                    shard.index, m.engine_version, loaded[0].0.index, version
                ));
            }
        }
    }
    if problems.is_empty() {
        problems.extend(coverage_problems(&loaded));
    }
    if !problems.is_empty() {
        return Err(refuse(
            format!("cannot merge: {}", problems.join("; ")),
            crate::Remedy::RunTheShards,
        ));
    }
    Ok(loaded)
}

/// What is wrong with the finished shards' slices: each must record its slice, and the slices
/// in shard order must follow each other from 0 to the sweep's end.
fn coverage_problems(loaded: &[(Shard, Manifest)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut cursor = 0u64;
    let n = loaded.first().map_or(0, |(_, m)| m.n_parameter_sets);
    for (shard, m) in loaded {
        let Some(slice) = m.shard.as_ref() else {
            problems.push(format!(
                "shard {} records no slice: not written by a sharded run",
                shard.index
            ));
            continue;
        };
        if (slice.index, slice.count) != (shard.index, shard.count) {
            problems.push(format!(
                "folder {} holds shard {} of {}: a renamed folder",
                shard.dir_name(),
                slice.index,
                slice.count
            ));
        }
        if slice.first_point != cursor {
            problems.push(format!(
                "shard {} starts at parameter set {} but the shards before it end at {cursor} \
                 (shards run with different batch sizes split the sweep differently: start it \
                 over with the others' batch size)",
                shard.index, slice.first_point
            ));
        }
        cursor = slice.end_point;
    }
    if problems.is_empty() && cursor != n {
        problems.push(format!("the shards end at parameter set {cursor} of {n}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::ShardSlice;

    fn finished_shard(
        root: &Path,
        index: u32,
        count: u32,
        points: std::ops::Range<u64>,
    ) -> PathBuf {
        let shard = Shard::new(index, count).unwrap();
        let dir = root.join(shard.dir_name());
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Manifest::new("job", "hash", 10, 30, 2, 0, 0);
        m.shard =
            Some(ShardSlice { index, count, first_point: points.start, end_point: points.end });
        m.finished = true;
        m.write_atomic(&OutputLayout::new(&dir)).unwrap();
        dir
    }

    #[test]
    fn finds_shard_folders_only() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["shard=1-of-2", "shard=0-of-2", "other", "shard=5-of-2"] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        std::fs::write(tmp.path().join("shard=1-of-3"), "a file").unwrap();
        let found: Vec<Shard> =
            find_shards(tmp.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(found, vec![Shard::new(0, 2).unwrap(), Shard::new(1, 2).unwrap()]);
        assert!(find_shards(&tmp.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn refuses_naming_missing_unfinished_and_foreign_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        finished_shard(root, 0, 4, 0..10);
        let d2 = finished_shard(root, 2, 4, 20..25);
        let mut m = Manifest::load(&d2.join("manifest.json")).unwrap().unwrap();
        m.spec_hash = "other-hash".into();
        m.write_atomic(&OutputLayout::new(&d2)).unwrap();
        let d3 = finished_shard(root, 3, 4, 25..30);
        let mut m = Manifest::load(&d3.join("manifest.json")).unwrap().unwrap();
        m.finished = false;
        m.batches_planned = 1;
        m.write_atomic(&OutputLayout::new(&d3)).unwrap();
        let err = merge_shards(root, 10).unwrap_err();
        assert!(err.is_input_error());
        let text = err.to_string();
        for needle in [
            "missing shard(s) 1 of 4",
            "shard 3 is not finished (0 of 1 batches committed)",
            "shard 2 is foreign: spec hash other-hash",
        ] {
            assert!(text.contains(needle), "lacks {needle:?}: {text}");
        }
        assert!(!root.join("summary.json").exists() && !root.join(INDEX_FILE).exists());
    }

    #[test]
    fn refuses_shards_run_with_other_model_files() {
        let tmp = tempfile::tempdir().unwrap();
        for (i, points, code) in [(0, 0..20, "model.py 1111"), (1, 20..30, "model.py 2222")] {
            let dir = finished_shard(tmp.path(), i, 2, points);
            let mut m = Manifest::load(&dir.join("manifest.json")).unwrap().unwrap();
            m.spec_parts.insert(MODEL_FILES.to_string(), code.to_string());
            m.write_atomic(&OutputLayout::new(&dir)).unwrap();
        }
        let text = merge_shards(tmp.path(), 10).unwrap_err().to_string();
        assert!(
            text.contains("shard 1 ran other model code than shard 0 (model files: model.py 2222 there, model.py 1111 here)"),
            "{text}"
        );
    }

    #[test]
    fn refuses_slices_that_do_not_tile_the_sweep() {
        let tmp = tempfile::tempdir().unwrap();
        finished_shard(tmp.path(), 0, 2, 0..10);
        finished_shard(tmp.path(), 1, 2, 12..30);
        let text = merge_shards(tmp.path(), 10).unwrap_err().to_string();
        assert!(
            text.contains("shard 1 starts at parameter set 12 but the shards before it end at 10"),
            "{text}"
        );
        let empty = tempfile::tempdir().unwrap();
        let text = merge_shards(empty.path(), 10).unwrap_err().to_string();
        assert!(text.contains("has no shard folder"), "{text}");
    }

    #[test]
    fn merges_finished_shards_into_an_index() {
        let tmp = tempfile::tempdir().unwrap();
        finished_shard(tmp.path(), 0, 2, 0..20);
        finished_shard(tmp.path(), 1, 2, 20..30);
        let (index, summary) = merge_shards(tmp.path(), 10).unwrap();
        assert_eq!(
            index.shards.iter().map(|s| (s.first_point, s.end_point)).collect::<Vec<_>>(),
            vec![(0, 20), (20, 30)]
        );
        assert_eq!(index.n_parameter_sets, 30);
        assert!(summary.is_empty());
        assert!(tmp.path().join(INDEX_FILE).exists() && tmp.path().join("summary.json").exists());
    }
}
