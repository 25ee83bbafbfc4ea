//! Paths of the output directory; the only place that joins them.

use std::fmt;
use std::path::{Path, PathBuf};

/// Name of the manifest file in the output root.
const MANIFEST_FILE: &str = "manifest.json";
/// Name of the commit log in the output root (see [`crate::output::commit_log`]).
pub(crate) const COMMIT_LOG_FILE: &str = "commits.log";
/// Name of the lock file in the output root (see [`crate::output::OutputLock`]).
const LOCK_FILE: &str = ".lock";
/// Name of the summary file in the output root.
const SUMMARY_FILE: &str = "summary.json";
/// Suffix of every temporary file.
const TMP_SUFFIX: &str = ".tmp";
/// Folder of the model output datasets.
const MODEL_OUTPUTS_DIR: &str = "model_outputs";
/// Folder of the target (loss) datasets.
const TARGETS_DIR: &str = "targets";
/// Folder of the failures dataset.
const FAILURES_DIR: &str = "failures";
/// Minimum digits of the batch index in file names.
const BATCH_INDEX_DIGITS: usize = 5;

/// One dataset of the output: a folder of per-batch Parquet files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dataset {
    /// A model output table, by output name: `model_outputs/<name>`.
    ModelOutput(String),
    /// A target's loss rows, by target name: `targets/<name>`.
    Target(String),
    /// Failed replicates: `failures`.
    Failures,
}

impl Dataset {
    /// The dataset's folder relative to the output root, with `/` separators, e.g.
    /// `targets/in_bed`. Also its key in [`crate::output::CommittedBatch::rows`].
    pub fn relative_dir(&self) -> String {
        match self {
            Dataset::ModelOutput(name) => format!("{MODEL_OUTPUTS_DIR}/{name}"),
            Dataset::Target(name) => format!("{TARGETS_DIR}/{name}"),
            Dataset::Failures => FAILURES_DIR.to_string(),
        }
    }

    /// The dataset whose [`Dataset::relative_dir`] is `dir`, or `None` if `dir` names none.
    pub fn from_relative_dir(dir: &str) -> Option<Dataset> {
        if dir == FAILURES_DIR {
            return Some(Dataset::Failures);
        }
        let (kind, name) = dir.split_once('/')?;
        if !Dataset::is_valid_name(name) {
            return None;
        }
        match kind {
            MODEL_OUTPUTS_DIR => Some(Dataset::ModelOutput(name.to_string())),
            TARGETS_DIR => Some(Dataset::Target(name.to_string())),
            _ => None,
        }
    }

    /// The output or target name, `None` for [`Dataset::Failures`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Dataset::ModelOutput(name) | Dataset::Target(name) => Some(name),
            Dataset::Failures => None,
        }
    }

    /// True when `name` can be an output or target name: one non-empty path component, not
    /// `.` or `..`, not starting with `.` (temporary files do), without `/`, `\` or NUL.
    pub fn is_valid_name(name: &str) -> bool {
        !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
    }

    /// The top-level folders under which datasets live; scanned on resume.
    pub(crate) fn top_dirs() -> [&'static str; 3] {
        [MODEL_OUTPUTS_DIR, TARGETS_DIR, FAILURES_DIR]
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.relative_dir())
    }
}

/// A point in [`crate::output::commit_batch`] or [`crate::output::Manifest::write_atomic`]
/// where a test can make the commit fail, as a crash would. Test support only.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// After the first temporary file of the batch is written and synced, before any rename.
    AfterTempWrite,
    /// After the first file of the batch is renamed to its final name, before the others.
    AfterRename,
    /// When the manifest is about to be replaced or a batch's commit record appended, before
    /// anything of it is written.
    BeforeManifest,
    /// When a batch's commit record is appended: half of it is written, as by a crash.
    TornCommitRecord,
}

/// The paths of one output directory.
///
/// ```
/// use simsweep_engine::output::{Dataset, OutputLayout};
///
/// let layout = OutputLayout::new("out");
/// let file = layout.batch_file(&Dataset::Target("in_bed".into()), 7);
/// assert_eq!(file, std::path::Path::new("out/targets/in_bed/batch-00007.parquet"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLayout {
    root: PathBuf,
    fault: Option<FaultPoint>,
    /// With `fault`: fail only at the commit of this batch (any batch if `None`).
    fault_batch: Option<u32>,
}

impl OutputLayout {
    /// The layout of the output directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OutputLayout { root: root.into(), fault: None, fault_batch: None }
    }

    /// Makes commits through this layout fail at `fault` with an "injected fault" I/O error.
    /// Test support only.
    #[doc(hidden)]
    pub fn with_fault(mut self, fault: FaultPoint) -> Self {
        self.fault = Some(fault);
        self.fault_batch = None;
        self
    }

    /// Like [`with_fault`](Self::with_fault), but fails only while committing batch `index`
    /// (for [`FaultPoint::BeforeManifest`]: the first manifest that would list it).
    /// Test support only.
    #[doc(hidden)]
    pub fn with_fault_at_batch(mut self, fault: FaultPoint, index: u32) -> Self {
        self.fault = Some(fault);
        self.fault_batch = Some(index);
        self
    }

    /// The output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// `<root>/commits.log`, the append-only record of batches committed since the manifest
    /// was last compacted.
    pub fn commit_log_path(&self) -> PathBuf {
        self.root.join(COMMIT_LOG_FILE)
    }

    /// `<root>/manifest.json.tmp`, the manifest being written.
    pub fn manifest_tmp_path(&self) -> PathBuf {
        tmp_path_of(&self.manifest_path())
    }

    /// `<root>/.lock`, the lock file (see [`crate::output::OutputLock`]).
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// `<root>/summary.json`.
    pub fn summary_path(&self) -> PathBuf {
        self.root.join(SUMMARY_FILE)
    }

    /// `<root>/summary.json.tmp`, the summary being written.
    pub fn summary_tmp_path(&self) -> PathBuf {
        tmp_path_of(&self.summary_path())
    }

    /// The key of `dataset` in [`crate::output::CommittedBatch::rows`]: its folder relative to
    /// the root, e.g. `targets/in_bed` (see [`Dataset::relative_dir`]).
    pub fn dataset_name(&self, dataset: &Dataset) -> String {
        dataset.relative_dir()
    }

    /// The folder of `dataset`, e.g. `<root>/targets/in_bed`.
    pub fn dataset_dir(&self, dataset: &Dataset) -> PathBuf {
        let mut dir = self.root.clone();
        dir.extend(dataset.relative_dir().split('/'));
        dir
    }

    /// The committed file of batch `index` of `dataset`, e.g.
    /// `<root>/targets/in_bed/batch-00007.parquet`.
    pub fn batch_file(&self, dataset: &Dataset, index: u32) -> PathBuf {
        self.dataset_dir(dataset).join(batch_file_name(index))
    }

    /// The temporary file batch `index` of `dataset` is written to before its rename, e.g.
    /// `<root>/targets/in_bed/.batch-00007.parquet.tmp`.
    pub fn batch_tmp_file(&self, dataset: &Dataset, index: u32) -> PathBuf {
        self.dataset_dir(dataset).join(format!(".{}{TMP_SUFFIX}", batch_file_name(index)))
    }

    /// The top-level dataset folders (`model_outputs`, `targets`, `failures`).
    pub(crate) fn top_dirs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        Dataset::top_dirs().into_iter().map(|d| self.root.join(d))
    }

    /// Fails with an injected I/O error if this layout was set to fail at `point` while
    /// committing `batch` (`batch` tells whether the batch the fault waits for is concerned).
    pub(crate) fn check_fault(
        &self,
        point: FaultPoint,
        path: &Path,
        batch: impl Fn(u32) -> bool,
    ) -> crate::Result<()> {
        if self.fault == Some(point) && self.fault_batch.is_none_or(batch) {
            return Err(crate::EngineError::io(
                path,
                std::io::Error::other(format!("injected fault at {point:?} (test support)")),
            ));
        }
        Ok(())
    }
}

/// The temporary file a whole-file replacement of `path` is written to: `path` + `.tmp`.
pub(crate) fn tmp_path_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// `batch-NNNNN.parquet`.
fn batch_file_name(index: u32) -> String {
    format!("batch-{index:0width$}.parquet", width = BATCH_INDEX_DIGITS)
}

/// What a file found under a dataset folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A committed batch file, with its index.
    Batch(u32),
    /// A temporary file of simsweep's (`.*.tmp`).
    Temp,
    /// Anything else.
    Other,
}

/// Classifies a file name found under a dataset folder.
pub(crate) fn classify(file_name: &str) -> FileKind {
    if file_name.starts_with('.') && file_name.ends_with(TMP_SUFFIX) {
        return FileKind::Temp;
    }
    let index = file_name
        .strip_prefix("batch-")
        .and_then(|rest| rest.strip_suffix(".parquet"))
        .filter(|digits| {
            digits.len() >= BATCH_INDEX_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|digits| digits.parse::<u32>().ok());
    match index {
        Some(i) => FileKind::Batch(i),
        None => FileKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = OutputLayout::new("/o");
        assert_eq!(l.manifest_path(), Path::new("/o/manifest.json"));
        assert_eq!(l.manifest_tmp_path(), Path::new("/o/manifest.json.tmp"));
        assert_eq!(l.summary_path(), Path::new("/o/summary.json"));
        assert_eq!(l.summary_tmp_path(), Path::new("/o/summary.json.tmp"));
        assert_eq!(l.dataset_name(&Dataset::Target("x".into())), "targets/x");
        let m = Dataset::ModelOutput("prevalence".into());
        assert_eq!(
            l.batch_file(&m, 3),
            Path::new("/o/model_outputs/prevalence/batch-00003.parquet")
        );
        assert_eq!(
            l.batch_tmp_file(&m, 3),
            Path::new("/o/model_outputs/prevalence/.batch-00003.parquet.tmp")
        );
        assert_eq!(
            l.batch_file(&Dataset::Failures, 123456),
            Path::new("/o/failures/batch-123456.parquet")
        );
    }

    #[test]
    fn relative_dir_roundtrip() {
        for d in
            [Dataset::ModelOutput("a".into()), Dataset::Target("in_bed".into()), Dataset::Failures]
        {
            assert_eq!(Dataset::from_relative_dir(&d.relative_dir()), Some(d));
        }
        assert_eq!(Dataset::from_relative_dir("targets/../x"), None);
        assert_eq!(Dataset::from_relative_dir("other/x"), None);
        assert_eq!(Dataset::from_relative_dir("targets"), None);
    }

    #[test]
    fn classify_names() {
        assert_eq!(classify("batch-00007.parquet"), FileKind::Batch(7));
        assert_eq!(classify("batch-123456.parquet"), FileKind::Batch(123456));
        assert_eq!(classify(".batch-00007.parquet.tmp"), FileKind::Temp);
        assert_eq!(classify("batch-7.parquet"), FileKind::Other);
        assert_eq!(classify("notes.txt"), FileKind::Other);
    }
}
