//! The [`Simulator`] trait and the built-in models.
//!
//! A simulator turns one parameter set and one seed into named output tables (Arrow record
//! batches). It must be deterministic for a given seed: the engine's determinism (DESIGN.md,
//! invariant 3) rests on it.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::params::ParameterSet;

mod chain;
#[doc(hidden)]
pub mod noop;
pub mod seir;
pub mod sir;
pub mod sir_bed;

/// Name and schema of one output table of a model.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Output name, e.g. `prevalence`; also the folder under `model_outputs/`.
    pub name: String,
    /// Columns of every table this output returns.
    pub schema: SchemaRef,
}

/// What one replicate returns: output tables in the order of [`Simulator::outputs`].
#[derive(Debug, Clone)]
pub struct SimOutput {
    /// One record batch per output, same order and schemas as [`Simulator::outputs`].
    pub tables: Vec<RecordBatch>,
}

/// Why a replicate failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The model reported an error (bad parameter value, numerical failure, ...).
    #[error("model error: {0}")]
    Model(String),
    /// The model panicked; caught at the worker boundary.
    #[error("model panicked: {0}")]
    Panic(String),
}

impl SimError {
    /// Short kind name written to the failures table: `error` or `panic`.
    pub fn kind(&self) -> &'static str {
        match self {
            SimError::Model(_) => "error",
            SimError::Panic(_) => "panic",
        }
    }
}

/// A stochastic model.
///
/// Shared by all workers (`Send + Sync`); called concurrently from several threads.
pub trait Simulator: Send + Sync {
    /// The model's name, e.g. `sir_bed`.
    fn name(&self) -> &str;

    /// Names of the parameters the model reads; a sweep must give each of them.
    fn parameter_names(&self) -> Vec<String>;

    /// The output tables every successful call returns, in order.
    fn outputs(&self) -> Vec<OutputSpec>;

    /// Runs one replicate.
    ///
    /// # Errors
    /// [`SimError::Model`] when the parameters are unusable (e.g. a negative rate).
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError>;
}

/// A shared simulator.
pub type SharedSimulator = Arc<dyn Simulator>;

/// The `[model]` section of a job: a built-in model by `name` with its fixed settings.
///
/// ```toml
/// [model]
/// name = "sir_bed"
/// population = 763
/// initial_infected = 1
/// days = 14
/// steps_per_day = 10
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ModelSpec {
    /// [`sir::Sir`]
    Sir(sir::SirSettings),
    /// [`seir::Seir`]
    Seir(seir::SeirSettings),
    /// [`sir_bed::SirBed`]
    SirBed(sir_bed::SirBedSettings),
    /// `noop::NoopModel`: a model of negligible cost, for benchmarks and tests.
    #[doc(hidden)]
    Noop(noop::NoopSettings),
}

impl ModelSpec {
    /// Builds the simulator.
    ///
    /// # Errors
    /// A message naming the setting that is out of range and what to change (the caller adds
    /// the file and the `model.` field path).
    pub fn build(&self) -> Result<SharedSimulator, ModelSettingError> {
        Ok(match self {
            ModelSpec::Sir(s) => Arc::new(sir::Sir::new(s.clone())?),
            ModelSpec::Seir(s) => Arc::new(seir::Seir::new(s.clone())?),
            ModelSpec::SirBed(s) => Arc::new(sir_bed::SirBed::new(s.clone())?),
            ModelSpec::Noop(s) => Arc::new(noop::NoopModel::new(s.clone())?),
        })
    }
}

/// A model setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("setting `{setting}`: {message}")]
pub struct ModelSettingError {
    /// The setting's name, e.g. `population`.
    pub setting: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}
