//! The state of an output directory, read from its manifest and commit log only (and, for an
//! output of manifest format 1, its committed target files): works on
//! a running run, a dead one and a finished one, without the job spec and without writing.

use std::collections::BTreeSet;

use super::layout::{Dataset, OutputLayout};
use super::lock::OutputLock;
use super::manifest::Manifest;
use super::spec_parts::SpecIdentity;
use crate::error::{EngineError, Result};
use crate::progress::TargetSummary;

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
/// - [`EngineError::OutputConflict`] when the directory has no `manifest.json`, or is a file
///   (or under one).
/// - [`EngineError::Damaged`] when the manifest or a committed target file cannot be decoded;
///   [`EngineError::Io`] naming the file when one cannot be read.
pub fn read_status(layout: &OutputLayout, k: usize) -> Result<RunStatus> {
    if let Some((found, what)) = super::non_directory_ancestor(layout.root()) {
        return Err(EngineError::OutputConflict {
            dir: layout.root().to_path_buf(),
            message: format!("`{}` {what}, not an output directory", found.display()),
            remedy: crate::Remedy::GiveOutputDirectory,
        });
    }
    let Some(manifest) = Manifest::load(&layout.manifest_path())? else {
        let what = if layout.root().is_dir() { "has no manifest.json" } else { "does not exist" };
        return Err(EngineError::OutputConflict {
            dir: layout.root().to_path_buf(),
            message: format!(
                "{what}: not a simsweep output directory (or a run that has not started \
                 writing)"
            ),
            remedy: crate::Remedy::GiveOutputDirectory,
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
    // From the manifest and commit log alone (format 2 on); a format-1 output's best are read
    // from its target files.
    let best = crate::summary::best_per_target(layout, &manifest, &targets, k)?;
    Ok(RunStatus {
        simulations_committed: manifest.batches.iter().map(|b| b.simulations).sum(),
        failed: manifest.batches.iter().map(|b| b.failed).sum(),
        last_commit: manifest.batches.iter().map(|b| b.committed_at.clone()).max(),
        holder,
        best,
        manifest,
    })
}
