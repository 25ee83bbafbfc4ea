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
    /// A run option (a command-line flag, or the [`crate::progress::RunOptions`] field behind
    /// it) that this job or this machine cannot take.
    #[error("{option}: {message}")]
    OptionInvalid {
        /// The option, as its command-line flag (e.g. `--workers`).
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
    /// The output directory holds results that this job must not touch.
    #[error("{dir}: {message}")]
    OutputConflict {
        /// The output directory.
        dir: PathBuf,
        /// What is there and what to do.
        message: String,
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
        "{path}: {what} is damaged ({source}); restore it from a copy, or start over with \
         `simsweep run --restart` (deletes this directory's results)"
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
