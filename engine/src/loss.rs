//! Losses and replicate aggregations.
//!
//! OWNED BY THE TARGETS HELPER.

/// Loss function; smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error over observations.
    Mse,
    /// Poisson negative log-likelihood, summed over observations.
    Poisson,
    /// Negative-binomial negative log-likelihood with dispersion (size) `k`, summed.
    NegativeBinomial,
}

/// How the replicates of a parameter set are combined into one loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Loss of the replicate-mean trajectory.
    MeanSignal,
    /// Mean of per-replicate losses.
    Annealed,
    /// −(logsumexp of per-replicate log-likelihoods − ln R).
    Likelihood,
}
