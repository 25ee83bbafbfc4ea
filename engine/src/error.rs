//! The engine's one error type.

use std::path::PathBuf;

/// Everything the engine can refuse or fail at.
///
/// Input errors ([`EngineError::is_input_error`]) are detected before anything is written and
/// name the file, the place in it, and what to change. I/O errors name the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The job file is not valid TOML, or has an unknown or mistyped field.
    #[error("{file}:{line}:{column}: {message}")]
    SpecSyntax {
        /// The job file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong and what to change.
        message: String,
    },
    /// A run option (a [`crate::progress::RunOptions`] field) that this job or this machine
    /// cannot take.
    #[error("option `{option}`: {message}")]
    OptionInvalid {
        /// The option, as its `RunOptions` field (e.g. `workers`, `batch_size`); a command line
        /// names its own flag for it.
        option: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// A field of the job spec has a value the engine refuses.
    #[error("{file}: field `{field}`: {message}")]
    SpecInvalid {
        /// The job file (or `<builder>` when the job was built in code).
        file: PathBuf,
        /// Dotted path of the field, e.g. `parameters.space.beta.min`.
        field: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// A data file (observed data or a parameter file) cannot be used.
    #[error("{file}{}: {message}", location(.line, .column))]
    Data {
        /// The data file.
        file: PathBuf,
        /// 1-based line (CSV) or row (Parquet, counting the header as line 1), when known.
        line: Option<u64>,
        /// The column concerned, when known.
        column: Option<String>,
        /// What is wrong and what to change.
        message: String,
    },
    /// The output directory cannot be used by this run (it holds another job's results, is in
    /// use, is not a directory, ...).
    #[error("{dir}: {message}{}", remedy.api_text())]
    OutputConflict {
        /// The output directory.
        dir: PathBuf,
        /// What is there.
        message: String,
        /// What the user can do about it.
        remedy: Remedy,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding Parquet failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building or converting Arrow data failed (a bug or a model returning a wrong schema).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The manifest could not be encoded. (One that cannot be decoded is
    /// [`EngineError::Damaged`].)
    #[error("{path}: manifest: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A file simsweep wrote into the output directory (the manifest, a committed batch file)
    /// cannot be decoded: it was truncated or altered after it was written. Running again cannot
    /// repair it; the message says to restore the file or start over with `--restart`.
    #[error(
        "{path}: {what} is damaged ({source}); restore it from a copy, or start over \
         (`RunOptions::restart`, which deletes this directory's results)"
    )]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What the file is, e.g. `the manifest`.
        what: String,
        /// Why it cannot be decoded.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a user can do about an [`EngineError::OutputConflict`], as a fact rather than words: the
/// error's `Display` says it in the library's terms ([`Remedy::api_text`]: `RunOptions` fields,
/// the job's `output`); a command line says it in its own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// Use another output directory.
    OtherOutput,
    /// Start over there (deleting simsweep's files of the earlier run), or use another output
    /// directory.
    RestartOrOtherOutput,
    /// Start over there, or remove the directory.
    RestartOrRemove,
    /// Remove the directory, or use another output directory.
    RemoveOrOtherOutput,
    /// Wait for the run holding the directory to end (or stop it; it stays resumable), or use
    /// another output directory.
    WaitOrOtherOutput,
    /// Resume with the simsweep version that wrote it, or use another output directory.
    SameVersionOrOtherOutput,
    /// Give that shard (the one the directory holds), or use another output directory.
    OtherShardOrOutput,
    /// Give the output directory a run writes to (not a job or data file).
    GiveOutputDirectory,
    /// Run the shards that are missing or unfinished into the directory, with the same spec.
    RunTheShards,
}

impl Remedy {
    /// The remedy in the library's terms, as `; ...` to follow a message.
    pub fn api_text(self) -> &'static str {
        match self {
            Remedy::OtherOutput => "; choose another output directory (the job's `output`)",
            Remedy::RestartOrOtherOutput => {
                "; start over there (`RunOptions::restart`, which deletes simsweep's files of \
                 the earlier run), or choose another output directory"
            }
            Remedy::RestartOrRemove => {
                "; start over (`RunOptions::restart`), or remove this directory"
            }
            Remedy::RemoveOrOtherOutput => "; remove it, or choose another output directory",
            Remedy::WaitOrOtherOutput => {
                "; wait for that run to end or stop it (it stays resumable), or choose another \
                 output directory"
            }
            Remedy::SameVersionOrOtherOutput => {
                "; resume it with that version, or choose another output directory"
            }
            Remedy::OtherShardOrOutput => {
                "; give that shard (`RunOptions::shard`), or choose another output directory"
            }
            Remedy::GiveOutputDirectory => {
                "; give the directory a run writes to (the job's `output`), not the job file or \
                 a data file"
            }
            Remedy::RunTheShards => {
                "; run them (the same spec, `RunOptions::shard`) into this directory"
            }
        }
    }
}

fn location(line: &Option<u64>, column: &Option<String>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}: column `{c}`"),
        (Some(l), None) => format!(":{l}"),
        (None, Some(c)) => format!(": column `{c}`"),
        (None, None) => String::new(),
    }
}

impl EngineError {
    /// True when the error is the user's input (spec, data, output directory) rather than the
    /// machine's: the command line maps these to exit code 2.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            EngineError::SpecSyntax { .. }
                | EngineError::SpecInvalid { .. }
                | EngineError::OptionInvalid { .. }
                | EngineError::Data { .. }
                | EngineError::OutputConflict { .. }
        )
    }

    /// True when a file of the output directory is damaged ([`EngineError::Damaged`]):
    /// resuming cannot work; the file must be restored or the run started over.
    pub fn is_damaged_output(&self) -> bool {
        matches!(self, EngineError::Damaged { .. })
    }

    /// Shorthand for an [`EngineError::Io`] at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io { path: path.into(), source }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
