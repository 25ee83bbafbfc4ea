//! The output directory: its layout, the per-batch Parquet files with their atomic commit, the
//! manifest, and preparing the directory for a new or resumed run.
//!
//! # Layout
//!
//! ```text
//! <out>/manifest.json                                  with commits.log: the source of truth
//! <out>/commits.log                                    a record per batch committed since the
//!                                                      manifest was last compacted
//! <out>/model_outputs/<output>/batch-NNNNN.parquet     one file per batch and model output
//! <out>/targets/<target>/batch-NNNNN.parquet           one file per batch and target (losses)
//! <out>/failures/batch-NNNNN.parquet                   failed replicates of the batch
//! <out>/summary.json                                   written once the sweep is finished
//! ```
//!
//! `NNNNN` is the batch index, zero-padded to 5 digits (more digits past 99 999). Every path is
//! built by [`OutputLayout`]; nothing else joins path components, so a partition level under
//! each dataset folder (e.g. `shard=003/`) can be added there alone. Directory scans go down
//! the whole tree under each dataset folder for the same reason.
//!
//! # Commit protocol
//!
//! A batch is committed by [`commit_batch`] and then recorded by [`Manifest::commit`]:
//!
//! 1. write each of the batch's files under a temporary name in its final directory
//!    (`.batch-NNNNN.parquet.tmp`), then fsync the file;
//! 2. rename each to its final name (`batch-NNNNN.parquet`), atomic within a directory;
//! 3. fsync every directory touched, so the renames are durable;
//! 4. append the batch's record to `commits.log` and `fdatasync` it ([`commit_log`]): the
//!    instant the batch is committed. O(1) whatever the number of batches committed before.
//!
//! `manifest.json` (the job, the plan, the batches compacted into it) is replaced atomically —
//! `manifest.json.tmp`, fsync, rename, fsync of the directory — only when a run starts and when
//! it ends ([`Manifest::write_atomic`]), which then empties the log. A reader therefore never
//! sees a partial file under a final name, and a torn last log record (a crash during step 4)
//! is not a committed batch. The whole contract — what a crash leaves at each step, the lock,
//! signals, `--restart` — is in `docs/commit-protocol.md`.
//!
//! # The lock
//!
//! [`OutputLock`] (`<out>/.lock`, an `flock` the kernel drops when the holder dies) keeps a
//! second process out of a directory in use; a run takes it before touching anything else.
//!
//! # Why the manifest and its log are the source of truth
//!
//! Files are renamed (step 2) before the commit record is appended (step 4). A crash in between
//! leaves complete files under final names that the manifest does not list, and a crash during
//! step 2 leaves only some of a batch's files renamed. Neither is a committed batch: on resume,
//! [`prepare_output_dir`] deletes every batch file the manifest does not list, and every
//! temporary file, and the planner redoes those batches (the rows are deterministic, so the
//! redone files are the same). Conversely a batch the manifest lists must have all its files:
//! if one is missing, the directory was altered and resuming is refused.
//!
//! A run writes its first manifest (with no batches) before committing its first batch, so a
//! directory holding batch files but no manifest was not written by a crashed simsweep run.
//! Such a directory is refused; one holding only temporary files and empty dataset folders is
//! cleaned.

mod commit;
pub mod commit_log;
mod layout;
mod lock;
mod manifest;
pub mod merge;
mod prepare;
mod spec_parts;
mod status;

pub use commit::{
    commit_batch, table_properties, writer_properties, BatchTable, DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL,
};
pub use layout::{Dataset, FaultPoint, OutputLayout};
pub use lock::OutputLock;
pub use manifest::{
    utc_now_rfc3339, write_json_atomic, CommittedBatch, Manifest, ShardSlice, TargetObservations,
    MANIFEST_FORMAT_VERSION,
};
pub use prepare::{check_committed_files, prepare_output_dir, prepare_output_dir_for, Prepare};
pub use spec_parts::{changed_parts, LegacySpecHash, SpecIdentity};
pub use status::{read_status, RunStatus};

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// The first of `dir` and its ancestors that exists, if it is not a directory, with what it
/// is (`"is a file"`, `"is a broken symbolic link"`, `"is a special file"`): a path under it
/// can be neither read as an output directory nor created. `None` when the first existing one
/// is a directory, or when none can be examined.
///
/// ```
/// use simsweep_engine::output::non_directory_ancestor;
/// let dir = tempfile::tempdir()?;
/// let file = dir.path().join("afile");
/// std::fs::write(&file, "x")?;
/// assert_eq!(non_directory_ancestor(&file.join("a/b")), Some((file.clone(), "is a file")));
/// assert_eq!(non_directory_ancestor(&dir.path().join("new/out")), None);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn non_directory_ancestor(dir: &Path) -> Option<(PathBuf, &'static str)> {
    for path in dir.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return None,
            Ok(meta) if meta.is_file() => return Some((path.to_path_buf(), "is a file")),
            Ok(_) => return Some((path.to_path_buf(), "is a special file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(path).is_ok() {
                    return Some((path.to_path_buf(), "is a broken symbolic link"));
                }
            }
            // A path through a file (`afile/..`): its parent tells which.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {}
            Err(_) => return None,
        }
    }
    None
}

/// Refuses `dir` as an output directory when it, or the first of its ancestors that exists,
/// is not a directory (see [`non_directory_ancestor`]), naming that path.
///
/// # Errors
/// [`EngineError::OutputConflict`] naming `dir`, the offending path and what to change.
pub fn check_output_path(dir: &Path) -> Result<()> {
    let Some((found, what)) = non_directory_ancestor(dir) else {
        return Ok(());
    };
    Err(EngineError::OutputConflict {
        dir: dir.to_path_buf(),
        message: format!("`{}` {what}, not a directory", found.display()),
        remedy: crate::Remedy::OtherOutput,
    })
}

/// Fsyncs directory `dir`, making the creation, renaming and removal of its entries durable.
///
/// A no-op where directories cannot be opened as files (Windows).
///
/// # Errors
/// [`EngineError::Io`] when the directory cannot be opened or synced.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let handle = std::fs::File::open(dir).map_err(|e| EngineError::io(dir, e))?;
        handle.sync_all().map_err(|e| EngineError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` and its missing parents, fsyncing the parent of each directory created.
///
/// # Errors
/// [`EngineError::Io`] when a directory cannot be created or synced.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another process (or a concurrent call) made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(EngineError::io(dir, e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}
