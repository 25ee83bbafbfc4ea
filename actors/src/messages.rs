//! Messages that more than one actor handles or sends.
//!
//! Data moves in chunks: one message carries the returns of one worker chunk (or the losses
//! they completed), so the cost of a message — a thread hand-off — is paid per chunk, not per
//! simulation.

use actix::Message;
use simsweep_engine::collect::{PointLosses, SimReturn};

/// The returns of one chunk of tasks, sent by a SimWorker to the Aggregator and to the
/// ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Replicates(pub Vec<SimReturn>);

/// The losses of the parameter sets that one [`Replicates`] message completed, sent by the
/// Aggregator to the ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PointsScored(pub Vec<PointLosses>);
