//! Preparing the output directory for a new or a resumed run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::layout::{classify, Dataset, FileKind, OutputLayout};
use super::manifest::{Manifest, MANIFEST_FORMAT_VERSION};
use super::spec_parts::{changed_parts, LegacySpecHash, SpecIdentity};
use super::{check_output_path, create_dir_durable};
use crate::error::{EngineError, Remedy, Result};

/// Characters of a spec hash shown in messages.
const SHORT_HASH_CHARS: usize = 12;

/// Makes the output directory ready for the job whose spec hash is `spec_hash`.
///
/// - Missing or empty: created (with its parents); `Ok(None)`, a fresh run.
/// - Holding a manifest of the same spec hash: a resume. Temporary files and batch files the
///   manifest does not list (leftovers of batches open at the crash, see [`crate::output`])
///   are deleted; `Ok(Some(manifest))`. The caller plans over
///   [`Manifest::committed_ranges`] from [`Manifest::next_index`].
/// - Holding only simsweep's own leftovers and no manifest (temporary files, dataset folders
///   without committed files): cleaned; `Ok(None)`.
///
/// A fresh run should write its first manifest (with no batches) before committing a batch,
/// so that a crash after the first rename is resumable.
///
/// # Errors
/// [`EngineError::OutputConflict`], with nothing deleted, when the directory
/// - is not a directory, or is under a file (see [`super::check_output_path`]);
/// - holds the manifest of another job (another spec hash) or of a newer manifest format;
/// - is not empty and has no manifest, beyond simsweep's leftovers;
/// - has a manifest listing a batch file that is missing.
///
/// [`EngineError::Damaged`] when a batch file the manifest lists does not end as a Parquet
/// file does (truncated or overwritten).
///
/// [`EngineError::Io`] when it cannot be read, created or cleaned, and
/// [`EngineError::Damaged`] when `manifest.json` cannot be decoded (with [`Prepare::Restart`]
/// a damaged manifest is deleted with the rest instead).
pub fn prepare_output_dir(layout: &OutputLayout, spec_hash: &str) -> Result<Option<Manifest>> {
    let identity =
        SpecIdentity { hash: spec_hash.to_string(), parts: Default::default(), legacy: None };
    prepare_output_dir_for(layout, &identity, Prepare::Resume)
}

/// What [`prepare_output_dir_for`] does with a directory holding a simsweep manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// Resume the run of the same spec; refuse another spec's results, naming what changed.
    Resume,
    /// Delete simsweep's own files (manifest, summary, dataset folders, temporary files) and
    /// start over, whatever spec they belong to. Other files are left alone; the lock file is
    /// kept (the caller holds it).
    Restart,
}

/// [`prepare_output_dir`] for a job of identity `spec`, which also lets a refusal name the
/// parts of the spec that changed, and can start over ([`Prepare::Restart`]).
///
/// Call it while holding the directory's [`crate::output::OutputLock`].
///
/// # Errors
/// As [`prepare_output_dir`]; the message for another spec's results lists the parts that
/// differ (when the manifest stores them) and suggests `--restart`. With
/// [`Prepare::Restart`], a directory without a manifest is treated as by a resume (simsweep's
/// leftovers are cleaned, anything else is refused).
pub fn prepare_output_dir_for(
    layout: &OutputLayout,
    spec: &SpecIdentity,
    mode: Prepare,
) -> Result<Option<Manifest>> {
    let root = layout.root();
    check_output_path(root)?;
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir_durable(root)?;
            return Ok(None);
        }
        Err(e) => return Err(EngineError::io(root, e)),
        Ok(_) => {}
    }
    let lock = layout.lock_path();
    let mut entries = std::fs::read_dir(root).map_err(|e| EngineError::io(root, e))?;
    if entries.all(|e| e.is_ok_and(|e| e.path() == lock)) {
        return Ok(None);
    }

    let manifest = match Manifest::load(&layout.manifest_path()) {
        // Starting over is what a damaged manifest needs (its message says so).
        Err(e) if e.is_damaged_output() && mode == Prepare::Restart => {
            tracing::warn!(
                manifest = %layout.manifest_path().display(),
                "restart: the manifest is damaged; deleting it with the earlier run's results"
            );
            restart(layout, None)?;
            return Ok(None);
        }
        other => other?,
    };
    match manifest {
        Some(manifest) if mode == Prepare::Restart => {
            restart(layout, Some(&manifest))?;
            Ok(None)
        }
        Some(manifest) => resume(layout, spec, manifest).map(Some),
        None => clean_leftovers_without_manifest(layout).map(|()| None),
    }
}

/// Deletes simsweep's own files of an earlier run, and nothing else: `summary.json`, the
/// temporary files, the batch files (`batch-NNNNN.parquet` and their temporary names) under
/// the dataset folders, the folders this leaves empty, `commits.log`, then the manifest last,
/// so that a crash in between leaves a manifest whose files are missing (refused with a hint
/// to `--restart` again), never batch files without one. A file of any other name (the
/// user's notes, a plot) stays where it is, with the folders holding it. `manifest`: the
/// earlier run's, `None` when it is damaged.
fn restart(layout: &OutputLayout, manifest: Option<&Manifest>) -> Result<()> {
    for file in [layout.summary_path(), layout.summary_tmp_path(), layout.manifest_tmp_path()] {
        remove_file_if_exists(&file)?;
    }
    let tree = DatasetTree::scan(layout)?;
    let mut kept = 0usize;
    for (path, kind) in &tree.files {
        match kind {
            FileKind::Batch(_) | FileKind::Temp => remove_file(path)?,
            FileKind::Other => kept += 1,
        }
    }
    for dir in &tree.dirs_deepest_first {
        remove_dir_if_empty(dir)?;
    }
    if kept > 0 {
        tracing::warn!(
            out = %layout.root().display(),
            files_kept = kept,
            "restart: files simsweep did not write are left in place under the dataset folders"
        );
    }
    remove_file_if_exists(&layout.commit_log_path())?;
    super::fsync_dir(layout.root())?;
    remove_file(&layout.manifest_path())?;
    super::fsync_dir(layout.root())?;
    tracing::info!(
        out = %layout.root().display(),
        job = %manifest.map_or("(damaged manifest)", |m| m.job_name.as_str()),
        batches_deleted = manifest.map_or(0, |m| m.batches.len()),
        "restart: deleted the earlier run's results"
    );
    Ok(())
}

/// Checks the manifest against the job and the files, then deletes what it does not list.
fn resume(layout: &OutputLayout, spec: &SpecIdentity, mut manifest: Manifest) -> Result<Manifest> {
    let spec_hash = spec.hash.as_str();
    if manifest.spec_hash != spec_hash
        && spec.legacy.as_ref().and_then(LegacySpecHash::compute).as_ref()
            == Some(&manifest.spec_hash)
    {
        // The same job, hashed as an earlier simsweep did: from now on under today's hash.
        tracing::info!(
            out = %layout.root().display(),
            from = %short(&manifest.spec_hash),
            to = %short(spec_hash),
            "resume: the manifest's spec hash is this job's earlier form; upgrading it"
        );
        manifest.spec_hash = spec.hash.clone();
        manifest.spec_parts = spec.parts.clone();
        manifest.write_atomic(layout)?;
    }
    if manifest.spec_hash != spec_hash {
        let changed = changed_parts(&manifest.spec_parts, &spec.parts);
        let what = if changed.is_empty() && manifest.spec_parts.is_empty() {
            String::new()
        } else if changed.is_empty() {
            " (no part of the spec that simsweep can name changed; another engine version?)"
                .to_string()
        } else {
            format!("; changed: {}", changed.join(", "))
        };
        return Err(conflict(
            layout,
            format!(
                "holds the results of another job `{}` (spec hash {}…, this job {}…){what}",
                manifest.job_name,
                short(&manifest.spec_hash),
                short(spec_hash)
            ),
            Remedy::RestartOrOtherOutput,
        ));
    }
    if manifest.format_version > MANIFEST_FORMAT_VERSION {
        return Err(conflict(
            layout,
            format!(
                "was written by a newer simsweep (manifest format {}, this one reads up to {})",
                manifest.format_version, MANIFEST_FORMAT_VERSION
            ),
            Remedy::SameVersionOrOtherOutput,
        ));
    }

    let listed = check_committed_files(layout, &manifest)?;

    let tree = DatasetTree::scan(layout)?;
    let mut removed = 0usize;
    for (path, kind) in &tree.files {
        let leftover = match kind {
            FileKind::Temp => true,
            FileKind::Batch(_) => !listed.contains(path),
            FileKind::Other => false,
        };
        if leftover {
            remove_file(path)?;
            removed += 1;
        }
    }
    for tmp in [layout.manifest_tmp_path(), layout.summary_tmp_path()] {
        removed += usize::from(remove_file_if_exists(&tmp)?);
    }
    // The removals are not fsynced: if they are undone by a crash, the next resume redoes them.
    tracing::info!(
        out = %layout.root().display(),
        batches_committed = manifest.batches.len(),
        leftovers_removed = removed,
        "resuming"
    );
    Ok(manifest)
}

/// Checks that every file the manifest lists is there and ends as a Parquet file does, reading
/// nothing else and writing nothing; returns their paths. What a resume checks before it
/// touches anything, and what `simsweep validate` checks of an existing output.
///
/// # Errors
/// [`EngineError::OutputConflict`] when the manifest names an unknown dataset or a listed file
/// is missing; [`EngineError::Damaged`] when a listed file is truncated or overwritten;
/// [`EngineError::Io`] when one cannot be read.
pub fn check_committed_files(
    layout: &OutputLayout,
    manifest: &Manifest,
) -> Result<BTreeSet<PathBuf>> {
    let mut listed = BTreeSet::new();
    for batch in &manifest.batches {
        for dir in batch.rows.keys() {
            let dataset = Dataset::from_relative_dir(dir).ok_or_else(|| {
                conflict(
                    layout,
                    format!(
                        "manifest.json lists an unknown dataset `{dir}` in batch {}; the manifest \
                         was altered",
                        batch.index
                    ),
                    Remedy::RestartOrRemove,
                )
            })?;
            let file = layout.batch_file(&dataset, batch.index);
            if !file.is_file() {
                return Err(conflict(
                    layout,
                    format!(
                        "batch {} is committed in manifest.json but its file {} is missing",
                        batch.index,
                        file.display()
                    ),
                    Remedy::RestartOrRemove,
                ));
            }
            check_parquet_tail(&file)?;
            listed.insert(file);
        }
    }

    Ok(listed)
}

/// Accepts a directory without a manifest only if it holds nothing but simsweep's temporary
/// files and dataset folders without committed files; removes them.
fn clean_leftovers_without_manifest(layout: &OutputLayout) -> Result<()> {
    let root = layout.root();
    let top_dirs: BTreeSet<PathBuf> = layout.top_dirs().collect();
    // A commit log without its manifest holds no committed batch (the manifest comes first).
    let root_tmps =
        [layout.manifest_tmp_path(), layout.summary_tmp_path(), layout.commit_log_path()];
    let lock = layout.lock_path();
    for entry in std::fs::read_dir(root).map_err(|e| EngineError::io(root, e))? {
        let entry = entry.map_err(|e| EngineError::io(root, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| EngineError::io(&path, e))?;
        let ours = (file_type.is_dir() && top_dirs.contains(&path))
            || (file_type.is_file() && (root_tmps.contains(&path) || path == lock));
        if !ours {
            return Err(not_simsweep_output(layout, &path));
        }
    }
    let tree = DatasetTree::scan(layout)?;
    if let Some((path, _)) = tree.files.iter().find(|(_, kind)| *kind != FileKind::Temp) {
        return Err(not_simsweep_output(layout, path));
    }

    for (path, _) in &tree.files {
        remove_file(path)?;
    }
    for dir in &tree.dirs_deepest_first {
        std::fs::remove_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    for tmp in &root_tmps {
        remove_file_if_exists(tmp)?;
    }
    tracing::info!(out = %root.display(), files_removed = tree.files.len(), "cleaned leftovers of a run that committed nothing");
    Ok(())
}

/// Files and folders under the dataset folders, whatever their depth. Symbolic links count as
/// files of kind [`FileKind::Other`] and are never followed.
struct DatasetTree {
    files: Vec<(PathBuf, FileKind)>,
    /// Every folder, the top-level dataset folders included, children before parents.
    dirs_deepest_first: Vec<PathBuf>,
}

impl DatasetTree {
    fn scan(layout: &OutputLayout) -> Result<DatasetTree> {
        let mut tree = DatasetTree { files: Vec::new(), dirs_deepest_first: Vec::new() };
        for top in layout.top_dirs() {
            match std::fs::symlink_metadata(&top) {
                Ok(meta) if meta.is_dir() => tree.walk(&top)?,
                Ok(_) => tree.files.push((top, FileKind::Other)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(&top, e)),
            }
        }
        Ok(tree)
    }

    fn walk(&mut self, dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))? {
            let entry = entry.map_err(|e| EngineError::io(dir, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| EngineError::io(&path, e))?;
            if file_type.is_dir() {
                self.walk(&path)?;
            } else {
                let kind = match (file_type.is_file(), entry.file_name().to_str()) {
                    (true, Some(name)) => classify(name),
                    _ => FileKind::Other,
                };
                self.files.push((path, kind));
            }
        }
        self.dirs_deepest_first.push(dir.to_path_buf());
        Ok(())
    }
}

/// Refuses a committed batch file that does not end as a Parquet file does (with the `PAR1`
/// magic after its footer): one truncated or overwritten since it was committed. A cheap check
/// (one read of 4 bytes) made before anything is written; damage inside the file is found when
/// the file is read.
fn check_parquet_tail(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: &[u8; 4] = b"PAR1";
    let damaged = |why: String| EngineError::Damaged {
        path: path.to_path_buf(),
        what: "this committed batch file".to_string(),
        source: why.into(),
    };
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    if len < 12 {
        return Err(damaged(format!("{len} bytes, too short for a Parquet file")));
    }
    let mut tail = [0u8; 4];
    file.seek(SeekFrom::End(-4))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| EngineError::io(path, e))?;
    if &tail != MAGIC {
        return Err(damaged(
            "it does not end with the Parquet footer: truncated or overwritten".into(),
        ));
    }
    Ok(())
}

/// Removes the folder `dir` if it is empty; a folder still holding something stays.
fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    let empty = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?.next().is_none();
    if empty {
        std::fs::remove_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| EngineError::io(path, e))
}

/// Removes `path` if it exists; true if it did.
fn remove_file_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(EngineError::io(path, e)),
    }
}

fn conflict(layout: &OutputLayout, message: String, remedy: Remedy) -> EngineError {
    EngineError::OutputConflict { dir: layout.root().to_path_buf(), message, remedy }
}

fn not_simsweep_output(layout: &OutputLayout, found: &Path) -> EngineError {
    conflict(
        layout,
        format!(
            "is not empty and has no manifest.json (found {}): it is not a simsweep output, or \
             a run that committed nothing",
            found.display()
        ),
        Remedy::RemoveOrOtherOutput,
    )
}

fn short(hash: &str) -> &str {
    match hash.char_indices().nth(SHORT_HASH_CHARS) {
        Some((end, _)) => &hash[..end],
        None => hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::commit::tests::{sample_batch, sample_schema};
    use crate::output::manifest::tests::batch;
    use crate::output::{commit_batch, BatchTable, CommittedBatch, FaultPoint};

    const HASH: &str = "0123456789abcdef0123456789abcdef";

    fn datasets() -> [Dataset; 2] {
        [Dataset::Target("in_bed".into()), Dataset::Failures]
    }

    fn tables() -> Vec<BatchTable> {
        datasets()
            .into_iter()
            .map(|dataset| BatchTable {
                dataset,
                schema: sample_schema(),
                batches: vec![sample_batch(0, 4)],
            })
            .collect()
    }

    /// Commits batch `index` and records it in the manifest, as the Batcher does.
    fn commit_and_record(layout: &OutputLayout, manifest: &mut Manifest, index: u32) -> Result<()> {
        let points = u64::from(index) * 4..u64::from(index) * 4 + 4;
        let rows = commit_batch(layout, index, tables())?;
        let mut entry = batch(index, points, &[]);
        entry.rows = CommittedBatch::rows_map(&rows);
        let mut next = manifest.clone();
        next.record(entry);
        next.write_atomic(layout)?;
        *manifest = next;
        Ok(())
    }

    fn all_files(root: &Path) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    fn started(root: &Path) -> (OutputLayout, Manifest) {
        let layout = OutputLayout::new(root);
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
        let manifest = Manifest::new("job", HASH, 4, 16, 2, 32, 4);
        manifest.write_atomic(&layout).unwrap();
        (layout, manifest)
    }

    #[test]
    fn new_dir_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path().join("a/b/out"));
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
        assert!(layout.root().is_dir());
        // An existing empty directory is fine too.
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
    }

    #[test]
    fn other_hash_refused_and_nothing_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, mut manifest) = started(tmp.path());
        commit_and_record(&layout, &mut manifest, 0).unwrap();
        std::fs::write(
            layout.dataset_dir(&Dataset::Failures).join(".batch-00001.parquet.tmp"),
            b"x",
        )
        .unwrap();
        let before = all_files(tmp.path());

        let err = prepare_output_dir(&layout, "fedcba9876543210fedcba").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::OutputConflict { .. }));
        assert!(
            text.contains("another job")
                && text.contains("0123456789ab…")
                && text.contains("fedcba987654…"),
            "{text}"
        );
        // What to do is a fact of the error (the CLI words it with its flags).
        assert!(
            matches!(err, EngineError::OutputConflict { remedy: Remedy::RestartOrOtherOutput, .. }),
            "{err:?}"
        );
        assert!(text.ends_with("or choose another output directory"), "{text}");
        assert!(!text.contains("--"), "no command-line flag in a library error: {text}");
        assert_eq!(all_files(tmp.path()), before);
    }

    #[test]
    fn foreign_dir_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("thesis.tex"), b"x").unwrap();
        let err = prepare_output_dir(&OutputLayout::new(tmp.path()), HASH).unwrap_err();
        assert!(matches!(err, EngineError::OutputConflict { .. }));
        assert!(err.to_string().contains("no manifest.json"), "{err}");
        assert!(tmp.path().join("thesis.tex").exists());

        // Batch files without a manifest are not leftovers: they could be anyone's.
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        commit_batch(&layout, 0, tables()).unwrap();
        let before = all_files(tmp.path());
        assert!(matches!(
            prepare_output_dir(&layout, HASH),
            Err(EngineError::OutputConflict { .. })
        ));
        assert_eq!(all_files(tmp.path()), before);
    }

    #[test]
    fn file_as_output_dir_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out");
        std::fs::write(&path, b"x").unwrap();
        let err = prepare_output_dir(&OutputLayout::new(&path), HASH).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn own_leftovers_without_manifest_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        let faulty = layout.clone().with_fault(FaultPoint::AfterTempWrite);
        assert!(commit_batch(&faulty, 0, tables()).is_err());
        std::fs::write(layout.manifest_tmp_path(), b"{").unwrap();
        assert!(!all_files(tmp.path()).is_empty());
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
        assert_eq!(all_files(tmp.path()), Vec::<String>::new());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn resume_removes_unlisted_and_keeps_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, mut manifest) = started(tmp.path());
        commit_and_record(&layout, &mut manifest, 0).unwrap();
        commit_and_record(&layout, &mut manifest, 1).unwrap();
        // Batch 2 renamed but not recorded; batch 3 half written; a stray manifest tmp.
        commit_batch(&layout, 2, tables()).unwrap();
        std::fs::write(layout.batch_tmp_file(&Dataset::Failures, 3), b"partial").unwrap();
        std::fs::write(layout.manifest_tmp_path(), b"{").unwrap();
        std::fs::write(layout.summary_tmp_path(), b"{").unwrap();
        let notes = layout.dataset_dir(&Dataset::Failures).join("notes.txt");
        std::fs::write(&notes, b"mine").unwrap();

        let resumed = prepare_output_dir(&layout, HASH).unwrap().unwrap();
        assert_eq!(resumed, manifest);
        assert_eq!(resumed.committed_ranges(), vec![0..4, 4..8]);
        assert_eq!(resumed.next_index(), 2);
        assert_eq!(
            all_files(tmp.path()),
            vec![
                "failures/batch-00000.parquet",
                "failures/batch-00001.parquet",
                "failures/notes.txt",
                "manifest.json",
                "targets/in_bed/batch-00000.parquet",
                "targets/in_bed/batch-00001.parquet",
            ]
        );
    }

    #[test]
    fn missing_listed_file_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, mut manifest) = started(tmp.path());
        commit_and_record(&layout, &mut manifest, 0).unwrap();
        let gone = layout.batch_file(&Dataset::Target("in_bed".into()), 0);
        std::fs::remove_file(&gone).unwrap();
        let before = all_files(tmp.path());
        let err = prepare_output_dir(&layout, HASH).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::OutputConflict { .. }));
        assert!(text.contains(&gone.display().to_string()), "{text}");
        assert!(
            matches!(err, EngineError::OutputConflict { remedy: Remedy::RestartOrRemove, .. }),
            "{err:?}"
        );
        assert_eq!(all_files(tmp.path()), before);
    }

    #[test]
    fn each_fault_point_leaves_only_manifest_listed_files() {
        for fault in
            [FaultPoint::AfterTempWrite, FaultPoint::AfterRename, FaultPoint::BeforeManifest]
        {
            let tmp = tempfile::tempdir().unwrap();
            let (layout, mut manifest) = started(tmp.path());
            commit_and_record(&layout, &mut manifest, 0).unwrap();

            let faulty = layout.clone().with_fault(fault);
            let err = commit_and_record(&faulty, &mut manifest, 1).unwrap_err();
            assert!(err.to_string().contains("injected fault"), "{fault:?}: {err}");

            let resumed = prepare_output_dir(&layout, HASH).unwrap().unwrap();
            assert_eq!(
                resumed.batches.iter().map(|b| b.index).collect::<Vec<_>>(),
                vec![0],
                "{fault:?}"
            );
            assert_eq!(
                all_files(tmp.path()),
                vec![
                    "failures/batch-00000.parquet",
                    "manifest.json",
                    "targets/in_bed/batch-00000.parquet"
                ],
                "{fault:?}"
            );
            // The redone batch commits cleanly over the same names.
            commit_and_record(&layout, &mut manifest, 1).unwrap();
            assert_eq!(prepare_output_dir(&layout, HASH).unwrap().unwrap().next_index(), 2);
        }
    }

    fn identity(hash: &str, replicates: &str) -> SpecIdentity {
        let parts = [("replicates", replicates), ("model", "sir, 1"), ("target t", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SpecIdentity { hash: hash.to_string(), parts, legacy: None }
    }

    #[test]
    fn other_spec_names_what_changed_and_restart_deletes_only_simsweep_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, mut manifest) = started(tmp.path());
        manifest.spec_parts = identity(HASH, "3").parts;
        commit_and_record(&layout, &mut manifest, 0).unwrap();
        commit_and_record(&layout, &mut manifest, 1).unwrap();
        std::fs::write(layout.summary_path(), b"{}").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
        std::fs::write(layout.lock_path(), b"1\n").unwrap();
        let before = all_files(tmp.path());

        let other = identity("fedcba9876543210", "5");
        let err = prepare_output_dir_for(&layout, &other, Prepare::Resume).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("changed: replicates (3 → 5)"), "{text}");
        assert!(!text.contains("model") && !text.contains("target"), "{text}");
        assert!(text.contains("start over there (`RunOptions::restart`"), "{text}");
        assert_eq!(all_files(tmp.path()), before);

        assert!(prepare_output_dir_for(&layout, &other, Prepare::Restart).unwrap().is_none());
        assert_eq!(all_files(tmp.path()), vec![".lock", "notes.txt"]);
    }

    #[test]
    fn a_lock_file_alone_is_an_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path());
        std::fs::write(layout.lock_path(), b"1\n").unwrap();
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
        std::fs::create_dir(tmp.path().join("failures")).unwrap();
        std::fs::write(tmp.path().join("failures/.batch-00000.parquet.tmp"), b"x").unwrap();
        assert!(prepare_output_dir(&layout, HASH).unwrap().is_none());
        assert_eq!(all_files(tmp.path()), vec![".lock"]);
    }
}
