//! Losses and replicate aggregations, as plain functions over aligned `f64` slices.
//!
//! A *loss* compares one predicted trajectory with the observations (both aligned to the same
//! observation times, so `predicted[i]` is the model's value at the time of `observed[i]`).
//! Smaller is better; the likelihood losses are negative log-likelihoods (in nats).
//!
//! An *aggregation* combines the R replicates of one parameter set into one number:
//!
//! | aggregation | value |
//! | --- | --- |
//! | [`Aggregation::MeanSignal`] | `loss(mean_r predicted_r, observed)` |
//! | [`Aggregation::Annealed`] | `mean_r loss(predicted_r, observed)` |
//! | [`Aggregation::Likelihood`] | `−(logsumexp_r ll_r − ln R)` = −ln of the Monte-Carlo estimate of the marginal likelihood |
//!
//! The functions here never panic on values (zero, negative, NaN or infinite predictions give
//! documented results); they only assert that `predicted` and `observed` have the same length,
//! which alignment guarantees.

use statrs::function::gamma::ln_gamma;

/// Loss function as written in the job spec; smaller is better.
///
/// The resolved form, with its parameters, is [`Loss`].
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

impl LossKind {
    /// The spec (TOML) name: `mse`, `poisson` or `negative_binomial`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LossKind::Mse => "mse",
            LossKind::Poisson => "poisson",
            LossKind::NegativeBinomial => "negative_binomial",
        }
    }

    /// True for the losses that are negative log-likelihoods (`poisson`, `negative_binomial`).
    pub fn is_likelihood(&self) -> bool {
        !matches!(self, LossKind::Mse)
    }
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

impl Aggregation {
    /// The spec (TOML) name: `mean_signal`, `annealed` or `likelihood`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Aggregation::MeanSignal => "mean_signal",
            Aggregation::Annealed => "annealed",
            Aggregation::Likelihood => "likelihood",
        }
    }
}

/// A resolved loss function, with its parameters.
///
/// Built by [`crate::target::TargetSpec::resolve`], which checks the parameters (`k > 0`,
/// finite); the functions below do not re-check them (a bad `k` gives NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Mean squared error, [`mse`].
    Mse,
    /// Poisson negative log-likelihood, [`poisson_nll`].
    Poisson,
    /// Negative-binomial negative log-likelihood with mean = prediction and size `k`,
    /// [`negative_binomial_nll`].
    NegativeBinomial {
        /// Dispersion (size) `k > 0`: variance = μ + μ²/k; `k → ∞` is the Poisson.
        k: f64,
    },
}

impl Loss {
    /// The loss's kind (its spec name without parameters).
    pub fn kind(&self) -> LossKind {
        match self {
            Loss::Mse => LossKind::Mse,
            Loss::Poisson => LossKind::Poisson,
            Loss::NegativeBinomial { .. } => LossKind::NegativeBinomial,
        }
    }

    /// The loss of one predicted trajectory against the observations: [`mse`],
    /// [`poisson_nll`] or [`negative_binomial_nll`].
    ///
    /// # Panics
    /// When `predicted` and `observed` differ in length (a bug in the caller's alignment).
    pub fn value(&self, predicted: &[f64], observed: &[f64]) -> f64 {
        match *self {
            Loss::Mse => mse(predicted, observed),
            Loss::Poisson => poisson_nll(predicted, observed),
            Loss::NegativeBinomial { k } => negative_binomial_nll(predicted, observed, k),
        }
    }

    /// The log-likelihood (in nats) of the observations given one predicted trajectory, i.e.
    /// `−value`; `None` for [`Loss::Mse`], which is not a likelihood.
    ///
    /// # Panics
    /// When `predicted` and `observed` differ in length.
    pub fn log_likelihood(&self, predicted: &[f64], observed: &[f64]) -> Option<f64> {
        match self {
            Loss::Mse => None,
            Loss::Poisson | Loss::NegativeBinomial { .. } => Some(-self.value(predicted, observed)),
        }
    }
}

fn check_lengths(predicted: &[f64], observed: &[f64]) {
    assert_eq!(
        predicted.len(),
        observed.len(),
        "loss: predicted and observed must be aligned to the same observation times"
    );
}

/// Mean squared error: `(1/n) Σᵢ (pᵢ − yᵢ)²` over the `n` observations.
///
/// `predicted` and `observed` are aligned (same length, same times). An empty pair gives NaN
/// (a mean over no observations); NaN anywhere gives NaN.
///
/// # Panics
/// When `predicted` and `observed` differ in length.
pub fn mse(predicted: &[f64], observed: &[f64]) -> f64 {
    check_lengths(predicted, observed);
    let sum: f64 = predicted.iter().zip(observed).map(|(p, y)| (p - y) * (p - y)).sum();
    sum / observed.len() as f64
}

/// Poisson negative log-likelihood of count observations `y` with means `λ = predicted`:
///
/// `Σᵢ −ln Pois(yᵢ | λᵢ) = Σᵢ (λᵢ − yᵢ ln λᵢ + ln Γ(yᵢ + 1))`
///
/// (the Poisson pmf `λʸ e^{−λ} / y!`; e.g. Bolker, *Ecological Models and Data in R*, 2008,
/// §4.5.1). This is the exact likelihood with no floor on `λ`: `λ = 0` with `y = 0`
/// contributes 0, `λ = 0` with `y > 0` makes the result `+∞` (the observation is impossible).
/// `λ = +∞` also gives `+∞`. A negative or NaN `λ` (or `y`) is not a Poisson mean and gives NaN.
/// Non-integer `y` is accepted through `Γ` (the usual continuous extension).
///
/// # Panics
/// When `predicted` and `observed` differ in length.
pub fn poisson_nll(predicted: &[f64], observed: &[f64]) -> f64 {
    check_lengths(predicted, observed);
    -predicted.iter().zip(observed).map(|(&lambda, &y)| poisson_ln_pmf(y, lambda)).sum::<f64>()
}

/// True for `x ≥ 0` (including `+∞`), false for negative values and NaN.
fn is_count_mean(x: f64) -> bool {
    !x.is_nan() && x >= 0.0
}

/// `ln Pois(y | λ)`, with the edge cases of [`poisson_nll`].
fn poisson_ln_pmf(y: f64, lambda: f64) -> f64 {
    poisson_ln_pmf_given(y, lambda, ln_gamma(y + 1.0))
}

/// [`poisson_ln_pmf`] with `ln Γ(y + 1)` given (`ln_factorial`): the same arithmetic, so the
/// same value to the bit.
#[inline]
fn poisson_ln_pmf_given(y: f64, lambda: f64, ln_factorial: f64) -> f64 {
    if !is_count_mean(lambda) || !is_count_mean(y) {
        return f64::NAN;
    }
    if lambda == 0.0 {
        return if y == 0.0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if lambda.is_infinite() {
        return f64::NEG_INFINITY;
    }
    y * lambda.ln() - lambda - ln_factorial
}

/// Negative-binomial negative log-likelihood of count observations `y` with means
/// `μ = predicted` and dispersion (size) `k` (variance `μ + μ²/k`):
///
/// `Σᵢ −[ln Γ(yᵢ + k) − ln Γ(k) − ln Γ(yᵢ + 1) + k ln(k/(k + μᵢ)) + yᵢ ln(μᵢ/(k + μᵢ))]`
///
/// This is the (size `k`, mean `μ`) parameterisation of Lloyd-Smith et al. 2005 (*Nature*
/// 438:355) and Lloyd-Smith 2007 (*PLoS ONE* 2:e180), Bolker, *Ecological Models and Data in R*
/// (2008) §4.5.1.3, and R's `dnbinom(y, size = k, mu = μ)`. As `k → ∞` it tends to the Poisson
/// ([`poisson_nll`]).
///
/// Exact likelihood, no floor: `μ = 0` with `y = 0` contributes 0, `μ = 0` with `y > 0` gives
/// `+∞`; `μ = +∞` gives `+∞`. A negative or NaN `μ` or `y`, or `k` not in `(0, ∞)`, gives NaN.
///
/// Numerics: `k ln(k/(k+μ))` is computed as `−k ln1p(μ/k)` and, for integer `y ≤ 32`,
/// `ln Γ(y+k) − ln Γ(k)` as `Σ_{j<y} ln(k + j)`, so that large `k` keeps its precision.
///
/// # Panics
/// When `predicted` and `observed` differ in length.
pub fn negative_binomial_nll(predicted: &[f64], observed: &[f64], k: f64) -> f64 {
    check_lengths(predicted, observed);
    if !(k > 0.0 && k.is_finite()) {
        return f64::NAN;
    }
    -predicted.iter().zip(observed).map(|(&mu, &y)| negative_binomial_ln_pmf(y, mu, k)).sum::<f64>()
}

/// `ln NB(y | μ, k)`, with the edge cases of [`negative_binomial_nll`] (`k` already checked).
fn negative_binomial_ln_pmf(y: f64, mu: f64, k: f64) -> f64 {
    negative_binomial_ln_pmf_given(y, mu, k, negative_binomial_observation_term(y, k))
}

/// `ln Γ(y + k) − ln Γ(k) − ln Γ(y + 1)`, the part of `ln NB(y | μ, k)` without `μ` (NaN when
/// `y` is not a count).
fn negative_binomial_observation_term(y: f64, k: f64) -> f64 {
    if is_count_mean(y) {
        ln_rising(k, y) - ln_gamma(y + 1.0)
    } else {
        f64::NAN
    }
}

/// [`negative_binomial_ln_pmf`] with `ln Γ(y + k) − ln Γ(k) − ln Γ(y + 1)` given
/// (`observation_term`, computed as there): the same arithmetic, so the same value to the bit.
#[inline]
fn negative_binomial_ln_pmf_given(y: f64, mu: f64, k: f64, observation_term: f64) -> f64 {
    if !is_count_mean(mu) || !is_count_mean(y) {
        return f64::NAN;
    }
    if mu == 0.0 {
        return if y == 0.0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if mu.is_infinite() {
        return f64::NEG_INFINITY;
    }
    let count_term = if y == 0.0 { 0.0 } else { y * (mu.ln() - (k + mu).ln()) };
    observation_term - k * (mu / k).ln_1p() + count_term
}

/// A loss against fixed observations, with the terms that depend on the observations alone
/// (`ln Γ(y + 1)`, the negative binomial's `ln Γ(y + k) − ln Γ(k)`) computed once instead of
/// per evaluation. [`PreparedLoss::value`] equals [`Loss::value`] to the bit.
#[derive(Debug, Clone)]
pub struct PreparedLoss<'a> {
    loss: Loss,
    observed: &'a [f64],
    /// Per observation: Poisson `ln Γ(y + 1)`; negative binomial `ln Γ(y + k) − ln Γ(k) −
    /// ln Γ(y + 1)`; empty for MSE (and unused where `y` is not a count).
    terms: Vec<f64>,
}

impl Loss {
    /// This loss against `observed`, ready to be evaluated many times (see [`PreparedLoss`]).
    pub fn prepare<'a>(&self, observed: &'a [f64]) -> PreparedLoss<'a> {
        let terms = match *self {
            Loss::Mse => Vec::new(),
            Loss::Poisson => observed
                .iter()
                .map(|&y| if is_count_mean(y) { ln_gamma(y + 1.0) } else { f64::NAN })
                .collect(),
            Loss::NegativeBinomial { k } => {
                observed.iter().map(|&y| negative_binomial_observation_term(y, k)).collect()
            }
        };
        PreparedLoss { loss: *self, observed, terms }
    }
}

impl PreparedLoss<'_> {
    /// [`Loss::value`] of `predicted` against the prepared observations.
    ///
    /// # Panics
    /// When `predicted` and the observations differ in length.
    pub fn value(&self, predicted: &[f64]) -> f64 {
        let observed = self.observed;
        match self.loss {
            Loss::Mse => mse(predicted, observed),
            Loss::Poisson => {
                check_lengths(predicted, observed);
                -predicted
                    .iter()
                    .zip(observed)
                    .zip(&self.terms)
                    .map(|((&lambda, &y), &c)| poisson_ln_pmf_given(y, lambda, c))
                    .sum::<f64>()
            }
            Loss::NegativeBinomial { k } => {
                check_lengths(predicted, observed);
                if !(k > 0.0 && k.is_finite()) {
                    return f64::NAN;
                }
                -predicted
                    .iter()
                    .zip(observed)
                    .zip(&self.terms)
                    .map(|((&mu, &y), &c)| negative_binomial_ln_pmf_given(y, mu, k, c))
                    .sum::<f64>()
            }
        }
    }

    /// [`Loss::log_likelihood`] of `predicted` against the prepared observations.
    pub fn log_likelihood(&self, predicted: &[f64]) -> Option<f64> {
        match self.loss {
            Loss::Mse => None,
            Loss::Poisson | Loss::NegativeBinomial { .. } => Some(-self.value(predicted)),
        }
    }
}

/// Largest integer `y` for which `ln Γ(y+k) − ln Γ(k)` is summed term by term.
const LN_RISING_SUM_MAX: f64 = 32.0;

/// `ln Γ(y + k) − ln Γ(k)` (the log of the rising factorial `k (k+1) … (k+y−1)` for integer
/// `y`), summed exactly for small integer `y`, else by `ln Γ` differences.
fn ln_rising(k: f64, y: f64) -> f64 {
    if y.fract() == 0.0 && y <= LN_RISING_SUM_MAX {
        // y is a small non-negative integer here: the cast is exact.
        (0..y as u32).map(|j| (k + f64::from(j)).ln()).sum()
    } else {
        ln_gamma(y + k) - ln_gamma(k)
    }
}

/// `ln Σᵢ exp(xᵢ)`, computed stably as `m + ln Σᵢ exp(xᵢ − m)` with `m = maxᵢ xᵢ`.
///
/// Empty input or all `−∞` gives `−∞` (the log of a zero sum); any `+∞` gives `+∞`; any NaN
/// gives NaN.
pub fn logsumexp(values: &[f64]) -> f64 {
    if values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max.is_infinite() {
        return max;
    }
    let sum: f64 = values.iter().map(|v| (v - max).exp()).sum();
    max + sum.ln()
}

/// Combines the losses of R replicates of one parameter set into one number.
///
/// `replicates[r]` is replicate `r`'s predicted trajectory aligned to `observed` (each the same
/// length as `observed`). With `R = replicates.len()`:
///
/// - [`Aggregation::MeanSignal`]: `loss(p̄, observed)` with `p̄ₜ = (1/R) Σ_r p_{r,t}`, the
///   replicate-mean trajectory.
/// - [`Aggregation::Annealed`]: `(1/R) Σ_r loss(p_r, observed)`.
/// - [`Aggregation::Likelihood`]: `−(logsumexp_r ℓ_r − ln R)` with `ℓ_r` replicate `r`'s
///   log-likelihood: minus the log of the Monte-Carlo estimate `(1/R) Σ_r L_r` of the marginal
///   likelihood (the simulated-likelihood estimator of e.g. the pseudo-marginal / ABC
///   literature: Andrieu & Roberts 2009, *Ann. Stat.* 37:697). When every replicate makes the
///   data impossible (all `ℓ_r = −∞`) the result is `+∞`.
///
/// # Returns
/// `None` when `replicates` is empty, or for [`Aggregation::Likelihood`] with a loss that is not
/// a likelihood ([`Loss::Mse`]; the spec refuses that pairing).
///
/// # Example
/// ```
/// use simsweep_engine::loss::{aggregate, Aggregation, Loss};
///
/// let observed = [0.0, 0.0];
/// let replicates: [&[f64]; 2] = [&[0.0, 2.0], &[2.0, 0.0]];
/// // Mean trajectory [1, 1]: mse = 1. Per replicate: mse = 2 each, mean 2.
/// assert_eq!(aggregate(Aggregation::MeanSignal, &Loss::Mse, &replicates, &observed), Some(1.0));
/// assert_eq!(aggregate(Aggregation::Annealed, &Loss::Mse, &replicates, &observed), Some(2.0));
/// ```
///
/// # Panics
/// When a replicate's length differs from `observed.len()`.
pub fn aggregate(
    aggregation: Aggregation,
    loss: &Loss,
    replicates: &[&[f64]],
    observed: &[f64],
) -> Option<f64> {
    aggregate_with_se(aggregation, loss, replicates, observed).map(|e| e.loss)
}

/// A parameter set's loss with its Monte Carlo standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossEstimate {
    /// The aggregated loss ([`aggregate`]).
    pub loss: f64,
    /// Its Monte Carlo standard error over replicates, in the loss's units (nats for the
    /// likelihood losses), by the jackknife ([`aggregate_with_se`]); `None` with fewer than 2
    /// replicates or a non-finite loss (no spread to estimate), `+∞` when leaving one replicate
    /// out makes the loss infinite (one replicate carries the whole likelihood).
    pub standard_error: Option<f64>,
}

/// [`aggregate`] and the Monte Carlo standard error of its value, by the delete-one jackknife
/// over replicates (Efron & Stein 1981, *Ann. Stat.* 9:586; Efron & Tibshirani, *An
/// Introduction to the Bootstrap*, 1993, §11.2):
///
/// `SE = √((R−1)/R · Σᵢ (θ₍ᵢ₎ − θ̄₍·₎)²)`, with `θ₍ᵢ₎` the aggregation of the replicates
/// without replicate `i` and `θ̄₍·₎` their mean.
///
/// - [`Aggregation::Annealed`]: this is exactly `sd_r(loss_r) / √R`.
/// - [`Aggregation::Likelihood`]: the jackknife of `−log mean exp ℓ_r`, as pomp's
///   `logmeanexp(x, se = TRUE)` computes it (King, Nguyen & Ionides 2016, *J. Stat. Softw.*
///   69(12)); to first order it equals the delta-method `sd_r(L_r) / (√R · mean_r L_r)`.
/// - [`Aggregation::MeanSignal`]: the loss of the mean trajectory without replicate `i`.
///
/// Cost: `R` extra loss evaluations for `mean_signal` (as many as `annealed` makes), `O(R)`
/// for the others.
///
/// # Returns
/// As [`aggregate`]: `None` when `replicates` is empty or the pairing is not a likelihood.
///
/// # Panics
/// When a replicate's length differs from `observed.len()`.
pub fn aggregate_with_se(
    aggregation: Aggregation,
    loss: &Loss,
    replicates: &[&[f64]],
    observed: &[f64],
) -> Option<LossEstimate> {
    if replicates.is_empty() {
        return None;
    }
    let n = replicates.len();
    let r = n as f64;
    let prepared = loss.prepare(observed);
    let (value, leave_one_out): (f64, Vec<f64>) = match aggregation {
        Aggregation::MeanSignal => {
            let mut sum = vec![0.0; observed.len()];
            for replicate in replicates {
                check_lengths(replicate, observed);
                for (m, p) in sum.iter_mut().zip(replicate.iter()) {
                    *m += p;
                }
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / r).collect();
            let value = prepared.value(&mean);
            let mut without = vec![0.0; observed.len()];
            let loo = if n < 2 {
                Vec::new()
            } else {
                replicates
                    .iter()
                    .map(|replicate| {
                        for ((w, s), p) in without.iter_mut().zip(&sum).zip(replicate.iter()) {
                            *w = (s - p) / (r - 1.0);
                        }
                        prepared.value(&without)
                    })
                    .collect()
            };
            (value, loo)
        }
        Aggregation::Annealed => {
            let losses: Vec<f64> = replicates.iter().map(|p| prepared.value(p)).collect();
            let sum: f64 = losses.iter().sum();
            let loo = if n < 2 {
                Vec::new()
            } else {
                losses.iter().map(|l| (sum - l) / (r - 1.0)).collect()
            };
            (sum / r, loo)
        }
        Aggregation::Likelihood => {
            let lls = replicates
                .iter()
                .map(|p| prepared.log_likelihood(p))
                .collect::<Option<Vec<f64>>>()?;
            let value = -(logsumexp(&lls) - r.ln());
            let loo = if n < 2 || !value.is_finite() {
                Vec::new()
            } else {
                // Σ_{j≠i} exp(ℓ_j − m) from prefix and suffix sums: no cancellation when one
                // replicate carries almost all of the likelihood.
                let m = lls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = lls.iter().map(|l| (l - m).exp()).collect();
                let mut prefix = vec![0.0; n + 1];
                for i in 0..n {
                    prefix[i + 1] = prefix[i] + w[i];
                }
                let mut suffix = vec![0.0; n + 1];
                for i in (0..n).rev() {
                    suffix[i] = suffix[i + 1] + w[i];
                }
                (0..n).map(|i| -(m + (prefix[i] + suffix[i + 1]).ln() - (r - 1.0).ln())).collect()
            };
            (value, loo)
        }
    };
    Some(LossEstimate { loss: value, standard_error: jackknife_se(value, &leave_one_out) })
}

/// The jackknife standard error from the leave-one-out values (`None` when there are fewer
/// than 2, or `value` is not finite; `+∞` when a leave-one-out value is infinite).
fn jackknife_se(value: f64, leave_one_out: &[f64]) -> Option<f64> {
    if leave_one_out.len() < 2 || !value.is_finite() || leave_one_out.iter().any(|v| v.is_nan()) {
        return None;
    }
    if leave_one_out.iter().any(|v| v.is_infinite()) {
        return Some(f64::INFINITY);
    }
    let r = leave_one_out.len() as f64;
    let mean = leave_one_out.iter().sum::<f64>() / r;
    let ss: f64 = leave_one_out.iter().map(|v| (v - mean) * (v - mean)).sum();
    Some(((r - 1.0) / r * ss).sqrt())
}

#[cfg(test)]
mod tests {

    /// The prepared loss is the loss, to the bit, on counts, edge cases and junk alike.
    #[test]
    fn prepared_loss_equals_the_loss_to_the_bit() {
        let observed =
            [0.0, 1.0, 4.0, 7.5, 31.0, 32.0, 33.0, 250.0, -1.0, f64::NAN, f64::INFINITY, 12.0];
        let predicted_sets = [
            [0.0, 0.5, 4.2, 7.0, 30.0, 33.0, 1.0, 260.0, 2.0, 3.0, 1.0, 0.0],
            [1e-6, 0.0, f64::INFINITY, 7.5, 31.0, 32.0, 33.0, 250.0, 1.0, 1.0, 1.0, 12.0],
            [-1.0, f64::NAN, 4.0, 1e9, 1e-300, 5.0, 33.0, 0.1, 0.0, 0.0, 0.0, 11.9],
        ];
        for loss in [
            Loss::Mse,
            Loss::Poisson,
            Loss::NegativeBinomial { k: 10.0 },
            Loss::NegativeBinomial { k: 0.37 },
            Loss::NegativeBinomial { k: 0.0 },
        ] {
            for predicted in &predicted_sets {
                // Every prefix, so that each edge case also meets finite sums.
                for n in 0..=observed.len() {
                    let prepared = loss.prepare(&observed[..n]);
                    let want = loss.value(&predicted[..n], &observed[..n]);
                    let got = prepared.value(&predicted[..n]);
                    assert_eq!(got.to_bits(), want.to_bits(), "{loss:?} n={n}: {got} vs {want}");
                    assert_eq!(
                        prepared.log_likelihood(&predicted[..n]).map(f64::to_bits),
                        loss.log_likelihood(&predicted[..n], &observed[..n]).map(f64::to_bits)
                    );
                }
            }
        }
    }
    use super::*;
    use proptest::prelude::*;
    use std::f64::consts::LN_2;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn mse_hand_computed() {
        // (1−1)² + (2−1)² + (3−1)² = 0 + 1 + 4 = 5, over 3 observations.
        assert_eq!(mse(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]), 5.0 / 3.0);
        assert_eq!(mse(&[2.5], &[2.5]), 0.0);
        assert!(mse(&[], &[]).is_nan());
    }

    #[test]
    #[should_panic(expected = "aligned")]
    fn mse_length_mismatch_panics() {
        mse(&[1.0], &[1.0, 2.0]);
    }

    #[test]
    fn poisson_nll_hand_computed() {
        // −ln Pois(3 | 2) = 2 − 3 ln 2 + ln 3! = 2 − 2.0794415 + 1.7917595 = 1.7123179
        let expected = 2.0 - 3.0 * LN_2 + 6.0_f64.ln();
        assert!(close(poisson_nll(&[2.0], &[3.0]), expected, 1e-12));
        assert!(close(poisson_nll(&[2.0], &[3.0]), 1.712_317_93, 1e-8));
        // Two observations add: −ln Pois(0 | 1.5) = 1.5; −ln Pois(1 | 1) = 1 − 0 + 0 = 1.
        assert!(close(poisson_nll(&[1.5, 1.0], &[0.0, 1.0]), 2.5, 1e-12));
    }

    #[test]
    fn poisson_nll_zero_mean() {
        assert_eq!(poisson_nll(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(poisson_nll(&[0.0, 1.0], &[1.0, 1.0]), f64::INFINITY);
        assert!(poisson_nll(&[-1.0], &[1.0]).is_nan());
        assert!(poisson_nll(&[f64::NAN], &[1.0]).is_nan());
        assert_eq!(poisson_nll(&[f64::INFINITY], &[0.0]), f64::INFINITY);
    }

    #[test]
    fn negative_binomial_nll_against_pmf() {
        // NB(y | μ=3, k=2) = Γ(y+k)/(Γ(k) y!) (k/(k+μ))^k (μ/(k+μ))^y
        // y = 2: 3!/(1!·2!) · (2/5)² · (3/5)² = 3 · 0.16 · 0.36 = 0.1728
        //        (R: dnbinom(2, size = 2, mu = 3) = 0.1728)
        // y = 0: (2/5)² = 0.16
        // y = 5: 6!/(1!·5!) · 0.16 · (3/5)^5 = 6 · 0.16 · 0.07776 = 0.07464960
        let nll = negative_binomial_nll(&[3.0, 3.0, 3.0], &[2.0, 0.0, 5.0], 2.0);
        let expected = -(0.1728_f64.ln() + 0.16_f64.ln() + 0.074_649_6_f64.ln());
        assert!(close(nll, expected, 1e-12), "{nll} vs {expected}");
        // Large y goes through ln Γ: y = 40, μ = 30, k = 3.5. Reference from another ln Γ
        // (Python's math.lgamma): lgamma(43.5) − lgamma(3.5) − lgamma(41) + 3.5·ln(3.5/33.5)
        // + 40·ln(30/33.5) = −4.191699703688957.
        assert!(close(negative_binomial_nll(&[30.0], &[40.0], 3.5), 4.191_699_703_688_957, 1e-12));
    }

    #[test]
    fn negative_binomial_zero_mean_and_bad_k() {
        assert_eq!(negative_binomial_nll(&[0.0], &[0.0], 2.0), 0.0);
        assert_eq!(negative_binomial_nll(&[0.0], &[4.0], 2.0), f64::INFINITY);
        assert!(negative_binomial_nll(&[1.0], &[1.0], 0.0).is_nan());
        assert!(negative_binomial_nll(&[1.0], &[1.0], f64::INFINITY).is_nan());
        assert!(negative_binomial_nll(&[-1.0], &[1.0], 2.0).is_nan());
    }

    #[test]
    fn negative_binomial_tends_to_poisson() {
        let predicted = [0.5, 2.0, 7.5, 30.0, 120.0];
        let observed = [0.0, 3.0, 5.0, 41.0, 100.0];
        let nb = negative_binomial_nll(&predicted, &observed, 1e8);
        let pois = poisson_nll(&predicted, &observed);
        assert!((nb - pois).abs() < 1e-4, "{nb} vs {pois}");
    }

    #[test]
    fn loss_value_and_log_likelihood() {
        let p = [2.0];
        let y = [3.0];
        assert_eq!(Loss::Mse.value(&p, &y), 1.0);
        assert_eq!(Loss::Mse.log_likelihood(&p, &y), None);
        // ln Poisson(3 | 2) = ln(2³ e⁻² / 3!) = ln(4/3) − 2.
        let ll = Loss::Poisson.log_likelihood(&p, &y).expect("a likelihood");
        assert!(close(ll, (4.0_f64 / 3.0).ln() - 2.0, 1e-15), "{ll}");
        // NB(3 | μ = 2, k = 2) = Γ(5)/(Γ(2)·3!) · (2/4)² · (2/4)³ = 4 · 1/4 · 1/8 = 1/8.
        let nb = Loss::NegativeBinomial { k: 2.0 };
        assert!(close(nb.value(&p, &y), 8.0_f64.ln(), 1e-14), "{}", nb.value(&p, &y));
        assert_eq!(nb.kind(), LossKind::NegativeBinomial);
        assert_eq!(nb.kind().as_str(), "negative_binomial");
        assert_eq!(Aggregation::MeanSignal.as_str(), "mean_signal");
    }

    #[test]
    fn logsumexp_edge_cases() {
        // ln(e^0 + e^0) = ln 2
        assert!(close(logsumexp(&[0.0, 0.0]), LN_2, 1e-15));
        // ln(e^−1000 + e^−1000) = −1000 + ln 2, without underflow.
        assert!(close(logsumexp(&[-1000.0, -1000.0]), -1000.0 + LN_2, 1e-15));
        // −∞ terms contribute e^−∞ = 0: ln(e^−1) = −1.
        assert_eq!(logsumexp(&[f64::NEG_INFINITY, -1.0]), -1.0);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[]), f64::NEG_INFINITY);
        assert_eq!(logsumexp(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(logsumexp(&[1.0, f64::NAN]).is_nan());
    }

    #[test]
    fn likelihood_aggregation_two_replicates() {
        // Poisson, y = [1]; replicate 1 predicts 1, replicate 2 predicts 2.
        // ℓ₁ = ln Pois(1|1) = −1;  ℓ₂ = ln Pois(1|2) = ln 2 − 2.
        // −ln((e^−1 + 2e^−2)/2) = −ln((0.36787944 + 0.27067057)/2) = −ln 0.31927501 = 1.14170247
        let observed = [1.0];
        let reps: [&[f64]; 2] = [&[1.0], &[2.0]];
        let got = aggregate(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        let expected = -((((-1.0_f64).exp() + 2.0 * (-2.0_f64).exp()) / 2.0).ln());
        assert!(close(got, expected, 1e-12), "{got} vs {expected}");
        assert!(close(got, 1.141_702_47, 1e-8), "{got}");
    }

    #[test]
    fn likelihood_aggregation_impossible_replicates() {
        // Replicate 1 predicts 0 where 2 were seen: ℓ₁ = −∞, so only replicate 2 counts:
        // −(ln(e^ℓ₂) − ln 2) = −ℓ₂ + ln 2 with ℓ₂ = ln Pois(2|2) = 2 ln 2 − 2 − ln 2.
        let observed = [2.0];
        let reps: [&[f64]; 2] = [&[0.0], &[2.0]];
        let got = aggregate(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        let l2 = 2.0 * LN_2 - 2.0 - LN_2;
        assert!(close(got, -l2 + LN_2, 1e-12));
        // All impossible: +∞.
        let reps: [&[f64]; 2] = [&[0.0], &[0.0]];
        let got = aggregate(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed);
        assert_eq!(got, Some(f64::INFINITY));
    }

    #[test]
    fn annealed_and_mean_signal_differ() {
        // observed [0, 0]; replicates [0, 2] and [2, 0].
        // mean_signal: mean trajectory [1, 1] → mse = (1 + 1)/2 = 1.
        // annealed: mse([0,2]) = 4/2 = 2, mse([2,0]) = 2 → mean 2.
        let observed = [0.0, 0.0];
        let reps: [&[f64]; 2] = [&[0.0, 2.0], &[2.0, 0.0]];
        assert_eq!(aggregate(Aggregation::MeanSignal, &Loss::Mse, &reps, &observed), Some(1.0));
        assert_eq!(aggregate(Aggregation::Annealed, &Loss::Mse, &reps, &observed), Some(2.0));
        // Poisson, y = [1]; replicates 1 and 3.
        // mean_signal: λ = 2 → 2 − ln 2 + 0 = 1.30685282.
        // annealed: ((1 − 0) + (3 − ln 3)) / 2 = (1 + 1.90138771)/2 = 1.45069385.
        let reps: [&[f64]; 2] = [&[1.0], &[3.0]];
        let ms = aggregate(Aggregation::MeanSignal, &Loss::Poisson, &reps, &[1.0]).unwrap();
        let an = aggregate(Aggregation::Annealed, &Loss::Poisson, &reps, &[1.0]).unwrap();
        assert!(close(ms, 2.0 - LN_2, 1e-12));
        assert!(close(an, (1.0 + 3.0 - 3.0_f64.ln()) / 2.0, 1e-12));
    }

    #[test]
    fn aggregate_none_cases() {
        let empty: [&[f64]; 0] = [];
        assert_eq!(aggregate(Aggregation::Annealed, &Loss::Mse, &empty, &[1.0]), None);
        let reps: [&[f64]; 1] = [&[1.0]];
        assert_eq!(aggregate(Aggregation::Likelihood, &Loss::Mse, &reps, &[1.0]), None);
    }

    proptest! {
        #[test]
        fn mse_is_non_negative(pairs in proptest::collection::vec((-1e6f64..1e6, -1e6f64..1e6), 1..20)) {
            let (p, y): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            prop_assert!(mse(&p, &y) >= 0.0);
        }

        #[test]
        fn likelihood_of_identical_replicates_is_single_nll(
            pairs in proptest::collection::vec((0.01f64..500.0, 0u32..600), 1..15),
            r in 1usize..8,
            k in 0.1f64..50.0,
        ) {
            let (p, y): (Vec<f64>, Vec<f64>) =
                pairs.into_iter().map(|(p, y)| (p, f64::from(y))).unzip();
            let reps: Vec<&[f64]> = vec![&p[..]; r];
            for loss in [Loss::Poisson, Loss::NegativeBinomial { k }] {
                let single = loss.value(&p, &y);
                let agg = aggregate(Aggregation::Likelihood, &loss, &reps, &y).unwrap();
                prop_assert!((agg - single).abs() <= 1e-9 * (1.0 + single.abs()),
                    "{:?}: {} vs {}", loss, agg, single);
                // mean_signal and annealed agree too when all replicates are the same.
                let ms = aggregate(Aggregation::MeanSignal, &loss, &reps, &y).unwrap();
                let an = aggregate(Aggregation::Annealed, &loss, &reps, &y).unwrap();
                prop_assert!((ms - single).abs() <= 1e-9 * (1.0 + single.abs()));
                prop_assert!((an - single).abs() <= 1e-9 * (1.0 + single.abs()));
            }
        }

        #[test]
        fn negative_binomial_is_a_pmf(mu in 0.1f64..20.0, k in 0.5f64..20.0) {
            // Σ_y NB(y | μ, k) = 1 (truncated where the tail is negligible).
            let total: f64 = (0..2000)
                .map(|y| (-negative_binomial_nll(&[mu], &[f64::from(y)], k)).exp())
                .sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{}", total);
        }
    }

    #[test]
    fn jackknife_of_annealed_is_sd_over_root_r() {
        let observed = [0.0];
        let reps: [&[f64]; 4] = [&[1.0], &[2.0], &[3.0], &[6.0]];
        // mse per replicate: 1, 4, 9, 36; mean 12.5; sample sd = √(Σ(x−12.5)²/3) = √(1011/3 − …)
        let e = aggregate_with_se(Aggregation::Annealed, &Loss::Mse, &reps, &observed).unwrap();
        assert_eq!(e.loss, 12.5);
        let sd = ([1.0, 4.0, 9.0, 36.0_f64].iter().map(|x| (x - 12.5) * (x - 12.5)).sum::<f64>()
            / 3.0)
            .sqrt();
        assert!(close(e.standard_error.unwrap(), sd / 2.0, 1e-14), "{e:?} vs {}", sd / 2.0);
        // One replicate: a loss, no standard error.
        let one = aggregate_with_se(Aggregation::Annealed, &Loss::Mse, &reps[..1], &observed);
        assert_eq!(one, Some(LossEstimate { loss: 1.0, standard_error: None }));
        assert_eq!(aggregate_with_se(Aggregation::Annealed, &Loss::Mse, &[], &observed), None);
    }

    #[test]
    fn jackknife_of_likelihood_and_mean_signal_by_hand() {
        let observed = [1.0];
        let reps: [&[f64]; 3] = [&[1.0], &[2.0], &[4.0]];
        let ll = |l: f64| -l + 1.0 * l.ln(); // ln Pois(1 | λ) (ln 1! = 0)
        let loo = |a: f64, b: f64| -((ll(a).exp() + ll(b).exp()) / 2.0).ln();
        let theta = [loo(2.0, 4.0), loo(1.0, 4.0), loo(1.0, 2.0)];
        let mean = theta.iter().sum::<f64>() / 3.0;
        let se = (2.0 / 3.0 * theta.iter().map(|t| (t - mean).powi(2)).sum::<f64>()).sqrt();
        let e =
            aggregate_with_se(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        let value = -((ll(1.0).exp() + ll(2.0).exp() + ll(4.0).exp()) / 3.0).ln();
        assert!(close(e.loss, value, 1e-14), "{e:?}");
        assert!(close(e.standard_error.unwrap(), se, 1e-12), "{e:?} vs {se}");
        assert_eq!(
            Some(e.loss),
            aggregate(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed)
        );

        // mean_signal: leave-one-out means 3, 2.5, 1.5 against 1 under mse: 4, 2.25, 0.25.
        let e = aggregate_with_se(Aggregation::MeanSignal, &Loss::Mse, &reps, &observed).unwrap();
        assert!(close(e.loss, (7.0_f64 / 3.0 - 1.0).powi(2), 1e-14));
        let theta = [4.0, 2.25, 0.25];
        let mean = theta.iter().sum::<f64>() / 3.0;
        let se = (2.0 / 3.0 * theta.iter().map(|t: &f64| (t - mean).powi(2)).sum::<f64>()).sqrt();
        assert!(close(e.standard_error.unwrap(), se, 1e-14), "{e:?} vs {se}");
    }

    #[test]
    fn standard_error_edge_cases() {
        let observed = [3.0];
        // One replicate makes the data possible, the other not: leaving the possible one out
        // gives +∞, so the standard error is +∞ (the estimate rests on one replicate).
        let reps: [&[f64]; 2] = [&[0.0], &[3.0]];
        let e =
            aggregate_with_se(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        assert!(e.loss.is_finite());
        assert_eq!(e.standard_error, Some(f64::INFINITY));
        // Every replicate impossible: +∞ loss, no standard error.
        let reps: [&[f64]; 2] = [&[0.0], &[0.0]];
        let e =
            aggregate_with_se(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        assert_eq!((e.loss, e.standard_error), (f64::INFINITY, None));
        // Annealed with an infinite replicate: infinite loss, no standard error.
        let e = aggregate_with_se(Aggregation::Annealed, &Loss::Poisson, &reps, &observed).unwrap();
        assert_eq!((e.loss, e.standard_error), (f64::INFINITY, None));
        // A replicate carrying nearly all the likelihood: no cancellation in Σ_{j≠i}.
        let reps: [&[f64]; 3] = [&[3.0], &[1e-3], &[1e-3]];
        let e =
            aggregate_with_se(Aggregation::Likelihood, &Loss::Poisson, &reps, &observed).unwrap();
        let se = e.standard_error.unwrap();
        assert!(se.is_finite() && se > 10.0, "{e:?}");
    }

    /// The jackknife standard error against the spread of the loss over many independent
    /// seedings: replicate predictions `λᵢ · G` with `G ~ Gamma(20, 1/20)` (replicate-level
    /// noise, like an epidemic's timing), 50 replicates, Poisson observations; 400 seedings
    /// from ChaCha8 seeds 2026…2425. The mean estimated SE must be within 20% of the standard
    /// deviation of the 400 losses (whose own sampling error is ≈ 3.5%), for each aggregation.
    #[test]
    fn standard_error_matches_the_spread_over_seedings() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Gamma};
        let observed = [5.0, 12.0, 20.0, 9.0];
        let mu = [6.0, 10.0, 18.0, 10.0];
        let gamma = Gamma::new(20.0, 1.0 / 20.0).unwrap();
        for aggregation in [Aggregation::Annealed, Aggregation::Likelihood, Aggregation::MeanSignal]
        {
            let (mut losses, mut ses) = (Vec::new(), Vec::new());
            for seeding in 0..400u64 {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026 + seeding);
                let reps: Vec<Vec<f64>> = (0..50)
                    .map(|_| {
                        let g = gamma.sample(&mut rng);
                        mu.iter().map(|m| m * g).collect()
                    })
                    .collect();
                let slices: Vec<&[f64]> = reps.iter().map(Vec::as_slice).collect();
                let e = aggregate_with_se(aggregation, &Loss::Poisson, &slices, &observed).unwrap();
                losses.push(e.loss);
                ses.push(e.standard_error.unwrap());
            }
            let n = losses.len() as f64;
            let mean = losses.iter().sum::<f64>() / n;
            let sd = (losses.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let mean_se = ses.iter().sum::<f64>() / n;
            eprintln!("{aggregation:?}: sd over seedings {sd:.5}, mean jackknife SE {mean_se:.5}");
            assert!((mean_se / sd - 1.0).abs() < 0.2, "{aggregation:?}: {mean_se} vs {sd}");
        }
    }
}
