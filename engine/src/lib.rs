//! simsweep's domain: everything that can be tested without an actor runtime.
//!
//! | module | what |
//! | --- | --- |
//! | [`error`] | [`EngineError`], the one error type |
//! | [`identity`] | `param_id` and replicate seeds (a cross-tool contract) |
//! | [`params`] | parameter sets, spaces and samplers, parameter files |
//! | [`spec`] | the job spec (TOML), its validation, the resolved [`spec::Job`] |
//! | [`model`] | the [`model::Simulator`] trait and the built-in models |
//! | [`target`] | observed data, time alignment, targets |
//! | [`loss`] | losses and replicate aggregations over Arrow arrays |
//! | [`plan`] | batch planning as a synchronous state machine |
//! | [`output`] | output layout, per-batch Parquet files with atomic commit, the manifest |
//! | [`collect`] | per-task and per-batch bookkeeping of the dataflow (Aggregator and writer state) |
//! | [`memory`] | handing freed memory back to the operating system between batches |
//! | [`progress`] | run options, progress events, cancellation, the report |
//! | [`summary`] | best parameter sets per target, read back from the files |

pub mod collect;
pub mod commit_queue;
pub mod dispatch;
pub mod error;
pub mod identity;
pub mod loss;
pub mod memory;
pub mod model;
pub mod output;
pub mod params;
pub mod plan;
pub mod progress;
pub mod spec;
pub mod summary;
pub mod target;
pub mod value;

pub use error::{EngineError, Remedy, Result};
