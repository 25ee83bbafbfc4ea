//! Messages that more than one actor handles or sends.
//!
//! Data moves in chunks: one message carries the returns of one worker chunk (or the losses
//! they completed), so the cost of a message — a thread hand-off — is paid per chunk, not per
//! simulation.

use actix::dev::ToEnvelope;
use actix::prelude::*;
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

/// Puts `msg` in `addr`'s bounded mailbox without waiting for it to be handled; waits (blocking
/// the calling thread) only while the mailbox is full.
///
/// This is the dataflow's backpressure: a sender is held up by a stage that is behind, not by
/// the thread hand-off of every message. (`Addr::send` would wait for the handler to finish,
/// and the sender — a worker — would sit idle for a scheduling round trip per chunk.)
///
/// # Errors
/// [`MailboxError::Closed`] when the actor has stopped.
pub fn deliver_blocking<A, M>(addr: &Addr<A>, msg: M) -> Result<(), MailboxError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = ()> + Send + 'static,
{
    match addr.try_send(msg) {
        Ok(()) => Ok(()),
        Err(SendError::Full(msg)) => futures_executor::block_on(addr.send(msg)),
        Err(SendError::Closed(_)) => Err(MailboxError::Closed),
    }
}
