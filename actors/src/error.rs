//! [`RunError`]: why the dataflow stopped early (re-exported at the crate root).

use simsweep_engine::EngineError;

/// Why the dataflow stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Writing files or the manifest failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An actor was unreachable (it stopped after an earlier failure).
    #[error("an actor of the dataflow stopped: {0}")]
    Mailbox(#[source] actix::MailboxError),
    /// The actor system could not start or ended without an outcome.
    #[error("actor system: {0}")]
    System(#[source] std::io::Error),
    /// A part of the run panicked (a defect, of simsweep or of the code it calls back). The run
    /// stopped as on a cancel: committed batches are kept and a rerun resumes after them.
    #[error(
        "{part} panicked: {message} (the run stopped; committed batches are kept, rerun to resume)"
    )]
    Internal {
        /// What panicked, e.g. `the progress observer`.
        part: &'static str,
        /// The panic's message.
        message: String,
    },
}
