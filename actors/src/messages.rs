//! Messages that more than one actor handles or sends.

use actix::Message;
use simsweep_engine::collect::{PointLosses, SimReturn};

/// One replicate's return, sent by a SimWorker to the Aggregator and to the ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Replicate(pub SimReturn);

/// One parameter set's losses, sent by the Aggregator to the ParquetWriter.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PointScored(pub PointLosses);
