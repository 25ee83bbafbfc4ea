//! The discrete-time binomial chain shared by the built-in compartment models.
//!
//! Every built-in model is a linear chain of `K` compartments
//! `X_0 = S → X_1 → … → X_{K−1}` (the last one absorbing). Time runs in steps of
//! `dt = 1 / steps_per_day` days; all rates are per day. In each step every flow is drawn from
//! the state at the start of the step, then all flows are applied at once:
//!
//! ```text
//! λ(t)        = β · X_inf(t) / N                          force of infection, per day
//! S → X_1     ~ Binomial(S(t),   1 − exp(−λ(t) · dt))
//! X_k → X_k+1 ~ Binomial(X_k(t), 1 − exp(−r_k · dt))      k = 1 … K−2
//! ```
//!
//! where `X_inf` is the model's infectious compartment, `N` the (constant) population and `r_k`
//! the model's progression rates. Each compartment has one exit, so no competing risks arise.
//! This is the binomial chain of Bretó, He, Ionides & King (2009), "Time series analysis via
//! mechanistic models", Ann. Appl. Stat. 3(1):319–348, without its extra-demographic noise. Its
//! mean follows the ODE `dS/dt = −λS`, `dX_k/dt = (inflow) − r_k X_k` up to an `O(dt)` bias
//! (the rates are frozen over a step) and the smoothing that random epidemic timing brings.
//!
//! The draws use `ChaCha8Rng::seed_from_u64(seed)` in a fixed order (infection first, then the
//! progressions in chain order; an empty compartment or a zero probability draws nothing), so a
//! run is a pure function of its settings, parameters and seed.
//!
//! Outputs are reported once per whole day `d = 0, 1, …, days`: compartment counts at the end of
//! day `d` (day 0: the initial state) and the incidence, the number of `S → X_1` moves during
//! day `d` (0 at day 0).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

use super::{ModelSettingError, OutputSpec, SimError, SimOutput};
use crate::params::{ParamValue, ParameterSet};

/// How a chain model is simulated: the `method` setting of the models that offer a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The discrete-time binomial chain at `dt = 1 / steps_per_day` (module docs): fast, with
    /// an `O(dt)` bias.
    #[default]
    ChainBinomial,
    /// The exact continuous-time Markov chain by Gillespie's direct method (Gillespie 1977,
    /// "Exact stochastic simulation of coupled chemical reactions", J. Phys. Chem.
    /// 81(25):2340–2361): one draw per event, so its cost grows with the number of events
    /// (≈ (K−1) per infected individual); for small populations such as a school.
    /// `steps_per_day` is not used.
    Gillespie,
}

impl Method {
    /// True for the default, [`Method::ChainBinomial`] (not written into a spec's JSON, so that
    /// the spec hash of jobs that do not choose stays as it was).
    pub fn is_default(&self) -> bool {
        *self == Method::ChainBinomial
    }
}

/// Default number of time steps per day (`dt = 0.1` days).
pub const DEFAULT_STEPS_PER_DAY: u32 = 10;

/// Largest accepted population: counts stay exact as `f64` (in `λ`) and fit an `Int64` column.
pub(crate) const MAX_POPULATION: u64 = 1 << 53;

/// Serde default of every model's `steps_per_day`.
pub(crate) fn default_steps_per_day() -> u32 {
    DEFAULT_STEPS_PER_DAY
}

/// Probability of leaving a compartment within one step: `1 − exp(−rate · dt)`.
///
/// `rate_per_day` must be non-negative (or `+∞`, giving 1) and `dt_days` finite and positive;
/// the result then lies in `[0, 1]`.
#[inline]
pub(crate) fn step_probability(rate_per_day: f64, dt_days: f64) -> f64 {
    -(-rate_per_day * dt_days).exp_m1()
}

/// Number of the `n` members that leave, `Binomial(n, p)`; draws nothing when the result is sure.
#[inline]
pub(crate) fn draw(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p)
        .expect("0 < p < 1 here: p = 1 − exp(−rate·dt) with rate ≥ 0 and not NaN (read_rates)")
        .sample(rng)
}

/// Implements [`crate::model::Simulator`] for a built-in chain model: a type with a `chain:
/// Chain<K>` field, in a module with `NAME` and `PARAMETERS` (its rate parameters, per day).
/// `$rates => ($beta, $progressions)` maps the rates as read (in `PARAMETERS` order) to β and
/// the chain's progression rates in chain order; `$doc` names them for `simulate`'s docs.
///
/// The three chain models differ only in these; everything else (names, outputs, parameter
/// checks, output days) is the chain's.
macro_rules! chain_simulator {
    ($model:ty, $doc:literal, $rates:pat => ($beta:expr, $progressions:expr)) => {
        impl $crate::model::Simulator for $model {
            fn name(&self) -> &str {
                NAME
            }

            fn parameter_names(&self) -> Vec<String> {
                PARAMETERS.iter().map(|p| p.to_string()).collect()
            }

            fn outputs(&self) -> Vec<$crate::model::OutputSpec> {
                self.chain.output_specs()
            }

            fn check_parameters(
                &self,
                params: &$crate::params::ParameterSet,
            ) -> Result<(), String> {
                $crate::model::chain::read_rates(params, NAME, &PARAMETERS)
                    .map(|_| ())
                    .map_err($crate::model::SimError::into_message)
            }

            fn output_times(&self, _output: &str) -> Option<Vec<f64>> {
                Some(self.chain.output_days())
            }

            #[doc = concat!("Runs one replicate with parameters ", $doc, " (per day).")]
            ///
            /// # Errors
            /// [`SimError::Model`](crate::model::SimError::Model) naming the parameter when one
            /// is missing, not a number, not finite or negative.
            fn simulate(
                &self,
                params: &$crate::params::ParameterSet,
                seed: u32,
            ) -> Result<$crate::model::SimOutput, $crate::model::SimError> {
                let $rates = $crate::model::chain::read_rates(params, NAME, &PARAMETERS)?;
                Ok(self.chain.simulate($beta, &$progressions, seed))
            }
        }
    };
}
pub(crate) use chain_simulator;

/// Reads the per-day rates `names` of `model` from `params`, in the order of `names`.
///
/// # Errors
/// [`SimError::Model`] naming the parameter when it is missing, a string, not finite or negative.
pub(crate) fn read_rates<const P: usize>(
    params: &ParameterSet,
    model: &str,
    names: &[&str; P],
) -> Result<[f64; P], SimError> {
    let mut rates = [0.0; P];
    for (rate, name) in rates.iter_mut().zip(names) {
        let value = match params.get(name) {
            None => {
                return Err(SimError::Model(format!(
                    "{model}: parameter `{name}` is missing; the model needs {} (rates per day)",
                    names.join(", ")
                )))
            }
            Some(ParamValue::Str(s)) => {
                return Err(SimError::Model(format!(
                    "{model}: parameter `{name}` is the string {s:?}; give a non-negative number \
                     (rate per day)"
                )))
            }
            Some(v) => v.as_f64().unwrap_or(f64::NAN),
        };
        if !value.is_finite() {
            return Err(SimError::Model(format!(
                "{model}: parameter `{name}` is {value}; give a finite, non-negative rate per day"
            )));
        }
        if value < 0.0 {
            return Err(SimError::Model(format!(
                "{model}: parameter `{name}` is {value}; rates are per day and must be ≥ 0"
            )));
        }
        *rate = value;
    }
    Ok(rates)
}

/// Checks the settings every chain model shares.
///
/// `initial` lists the initially infected compartments as `(setting name, count)`; the first
/// name is the one reported when their sum is 0.
///
/// # Errors
/// [`ModelSettingError`] naming the setting and what to change.
pub(crate) fn check_settings(
    population: u64,
    initial: &[(&'static str, u64)],
    days: u32,
    steps_per_day: u32,
) -> Result<(), ModelSettingError> {
    let err = |setting, message: String| Err(ModelSettingError { setting, message });
    if days > MAX_DAYS {
        return err("days", format!("is {days}; set it to at most {MAX_DAYS} (274 years)"));
    }
    if steps_per_day > MAX_STEPS_PER_DAY {
        return err(
            "steps_per_day",
            format!("is {steps_per_day}; set it to at most {MAX_STEPS_PER_DAY}"),
        );
    }
    if population == 0 {
        return err("population", "is 0; set it to the number of individuals (≥ 1)".into());
    }
    if population > MAX_POPULATION {
        return err(
            "population",
            format!("is {population}; set it to at most {MAX_POPULATION} (2^53)"),
        );
    }
    let names: Vec<&str> = initial.iter().map(|(name, _)| *name).collect();
    let names = names.join(" + ");
    let first = initial.first().map_or("initial_infected", |(name, _)| *name);
    let total = initial.iter().fold(0u64, |acc, (_, n)| acc.saturating_add(*n));
    if total == 0 {
        return err(
            first,
            format!("{names} is 0, so no epidemic can start; set {first} to at least 1"),
        );
    }
    if total > population {
        return err(
            first,
            format!(
                "{names} is {total}, more than the population {population}; lower it to at \
                 most {population} or raise `population`"
            ),
        );
    }
    if days == 0 {
        return err("days", "is 0; set the number of days to simulate (≥ 1)".into());
    }
    if steps_per_day == 0 {
        return err(
            "steps_per_day",
            format!("is 0; set it to at least 1 (default {DEFAULT_STEPS_PER_DAY})"),
        );
    }
    Ok(())
}

/// Largest `days` setting: outputs hold `days + 1` rows per replicate, and a sweep holds a
/// batch of them; a typo of a few zeros must be refused, not exhaust memory.
pub const MAX_DAYS: u32 = 100_000;

/// Largest `steps_per_day` setting.
pub const MAX_STEPS_PER_DAY: u32 = 10_000;

/// Where the values of an output come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// New infections (`S → X_1`) during the day.
    Incidence,
    /// Count of compartment `k` at the end of the day.
    Compartment(usize),
}

/// One output table: `(day, <column>)`, both non-null `Int64`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChainOutput {
    /// Output name, e.g. `prevalence`.
    pub name: &'static str,
    /// Name of the value column, e.g. `infected`.
    pub column: &'static str,
    /// What the column holds.
    pub source: Source,
}

/// A validated linear chain of `K` compartments with its output tables.
#[derive(Debug)]
pub(crate) struct Chain<const K: usize> {
    population: u64,
    initial: [u64; K],
    days: u32,
    steps_per_day: u32,
    infectious: usize,
    outputs: &'static [ChainOutput],
    specs: Vec<OutputSpec>,
    /// `0, 1, …, days`, shared by every table of every run.
    day: ArrayRef,
    /// Binomial chain or exact (Gillespie).
    method: Method,
}

impl<const K: usize> Chain<K> {
    /// The days every output reports: `0, 1, …, days`.
    pub(crate) fn output_days(&self) -> Vec<f64> {
        (0..=self.days).map(f64::from).collect()
    }

    /// A chain starting from `initial` (which must sum to `population`, checked by
    /// [`check_settings`] and the model), with `λ = β · X_infectious / N`.
    ///
    /// # Panics
    /// On a model definition error: `K < 2`, `infectious` or an output's compartment `≥ K`, or
    /// `initial` not summing to `population`.
    pub(crate) fn new(
        population: u64,
        initial: [u64; K],
        days: u32,
        steps_per_day: u32,
        infectious: usize,
        outputs: &'static [ChainOutput],
    ) -> Self {
        assert!(K >= 2 && infectious < K, "model definition: bad chain layout");
        assert_eq!(initial.iter().sum::<u64>(), population, "initial state must sum to N");
        for out in outputs {
            if let Source::Compartment(k) = out.source {
                assert!(k < K, "model definition: output {} reads compartment {k}", out.name);
            }
        }
        let specs = outputs
            .iter()
            .map(|out| OutputSpec {
                name: out.name.to_string(),
                schema: Arc::new(Schema::new(vec![
                    Field::new("day", DataType::Int64, false),
                    Field::new(out.column, DataType::Int64, false),
                ])),
            })
            .collect();
        let day: ArrayRef = Arc::new(Int64Array::from_iter_values(0..=i64::from(days)));
        Chain {
            population,
            initial,
            days,
            steps_per_day,
            infectious,
            outputs,
            specs,
            day,
            method: Method::ChainBinomial,
        }
    }

    /// The same chain simulated by `method`.
    pub(crate) fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Names and schemas of the output tables, in order.
    pub(crate) fn output_specs(&self) -> Vec<OutputSpec> {
        self.specs.clone()
    }

    /// Runs the chain and calls `observe(day, state, new_infections)` at the end of every whole
    /// day, day 0 (the initial state, 0 new infections) included.
    ///
    /// `progression[k − 1]` is the per-day rate of `X_k → X_{k+1}`, `k = 1 … K−2`; `beta` and
    /// every progression rate must be finite and non-negative (see [`read_rates`]).
    ///
    /// # Panics
    /// When `progression.len() != K − 2` (a model definition error).
    pub(crate) fn run<F: FnMut(u32, &[u64; K], u64)>(
        &self,
        beta: f64,
        progression: &[f64],
        seed: u32,
        mut observe: F,
    ) {
        assert_eq!(progression.len(), K - 2, "model definition: one rate per progression");
        if self.method == Method::Gillespie {
            return self.run_exact(beta, progression, seed, observe);
        }
        let dt = 1.0 / f64::from(self.steps_per_day);
        let mut exit_p = [0.0; K];
        for (p, rate) in exit_p[1..K - 1].iter_mut().zip(progression) {
            *p = step_probability(*rate, dt);
        }
        // β·dt/N is finite (β finite, dt ≤ 1, N ≥ 1), so λ·dt is never NaN.
        let beta_dt_per_n = beta * dt / self.population as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(seed));
        let mut x = self.initial;
        observe(0, &x, 0);
        for day in 1..=self.days {
            let mut new_infections = 0;
            for _ in 0..self.steps_per_day {
                let mut flow = [0u64; K];
                let foi_dt = beta_dt_per_n * x[self.infectious] as f64;
                flow[0] = draw(&mut rng, x[0], -(-foi_dt).exp_m1());
                for k in 1..K - 1 {
                    flow[k] = draw(&mut rng, x[k], exit_p[k]);
                }
                for k in 0..K - 1 {
                    x[k] -= flow[k];
                    x[k + 1] += flow[k];
                }
                new_infections += flow[0];
            }
            observe(day, &x, new_infections);
        }
    }

    /// [`Chain::run`] by Gillespie's direct method: the continuous-time Markov chain whose
    /// events are `S → X_1` at rate `β · S · X_inf / N` and `X_k → X_{k+1}` at rate
    /// `r_k · X_k` (per day). Each event takes two uniform draws from the seeded ChaCha8: the
    /// waiting time `−ln(1 − u₁) / a` (`a` the total rate) and the event, the first whose
    /// cumulative rate exceeds `u₂ · a`. The state at the end of day `d` is the state after the
    /// last event at a time `≤ d`.
    fn run_exact<F: FnMut(u32, &[u64; K], u64)>(
        &self,
        beta: f64,
        progression: &[f64],
        seed: u32,
        mut observe: F,
    ) {
        use rand::Rng;
        let beta_per_n = beta / self.population as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(seed));
        let mut x = self.initial;
        observe(0, &x, 0);
        let mut t = 0.0_f64;
        let mut day = 1u32;
        let mut new_infections = 0u64;
        let mut rates = [0.0_f64; K];
        loop {
            rates[0] = beta_per_n * x[0] as f64 * x[self.infectious] as f64;
            for k in 1..K - 1 {
                rates[k] = progression[k - 1] * x[k] as f64;
            }
            let total: f64 = rates[..K - 1].iter().sum();
            // No event can happen any more (or the rates are infinite): the state is final.
            let next = if total > 0.0 && total.is_finite() {
                let u: f64 = rng.random();
                t - (-u).ln_1p() / total
            } else {
                f64::INFINITY
            };
            while day <= self.days && next > f64::from(day) {
                observe(day, &x, new_infections);
                new_infections = 0;
                day += 1;
            }
            if day > self.days {
                return;
            }
            t = next;
            let target = rng.random::<f64>() * total;
            let mut cumulative = 0.0;
            // The last event with a positive rate is taken if rounding leaves `target` beyond
            // the sum.
            let mut event = (0..K - 1).rev().find(|&k| rates[k] > 0.0).unwrap_or(0);
            for (k, rate) in rates[..K - 1].iter().enumerate() {
                cumulative += rate;
                if target < cumulative && *rate > 0.0 {
                    event = k;
                    break;
                }
            }
            x[event] -= 1;
            x[event + 1] += 1;
            if event == 0 {
                new_infections += 1;
            }
        }
    }

    /// Runs the chain and returns its output tables (see [`Chain::run`] for the arguments).
    pub(crate) fn simulate(&self, beta: f64, progression: &[f64], seed: u32) -> SimOutput {
        let rows = self.days as usize + 1;
        let mut columns: Vec<Vec<i64>> =
            self.outputs.iter().map(|_| Vec::with_capacity(rows)).collect();
        self.run(beta, progression, seed, |_, x, new_infections| {
            for (column, out) in columns.iter_mut().zip(self.outputs) {
                let value = match out.source {
                    Source::Incidence => new_infections,
                    Source::Compartment(k) => x[k],
                };
                // Counts are ≤ population ≤ 2^53 (check_settings), so they fit an i64.
                column.push(value as i64);
            }
        });
        let tables = columns
            .into_iter()
            .zip(&self.specs)
            .map(|(values, spec)| {
                let values: ArrayRef = Arc::new(Int64Array::from(values));
                RecordBatch::try_new(spec.schema.clone(), vec![self.day.clone(), values]).expect(
                    "invariant: two non-null Int64 columns of days + 1 rows match the schema",
                )
            })
            .collect();
        SimOutput { tables }
    }
}

/// Helpers for the models' tests: the ODE limit of a chain and Monte Carlo means.
#[cfg(test)]
pub(crate) mod testing {
    use arrow::array::{Array, Int64Array};
    use arrow::record_batch::RecordBatch;

    /// Values of column 1 of `table` (the value column of a chain output).
    pub(crate) fn values(table: &RecordBatch) -> Vec<i64> {
        let col = table.column(1).as_any().downcast_ref::<Int64Array>().expect("Int64 column");
        assert_eq!(col.null_count(), 0);
        col.values().to_vec()
    }

    /// The deterministic ODE limit of a chain, integrated with RK4 at `1/substeps` days,
    /// reported at days `0 … days`: `dS/dt = −βSX_inf/N`, `dX_k/dt = inflow − r_k X_k`.
    pub(crate) fn ode<const K: usize>(
        initial: [f64; K],
        beta: f64,
        progression: &[f64],
        infectious: usize,
        days: u32,
        substeps: u32,
    ) -> Vec<[f64; K]> {
        let n: f64 = initial.iter().sum();
        let deriv = |x: &[f64; K]| {
            let mut flow = [0.0; K];
            flow[0] = beta * x[0] * x[infectious] / n;
            for k in 1..K - 1 {
                flow[k] = progression[k - 1] * x[k];
            }
            let mut d = [0.0; K];
            for k in 0..K - 1 {
                d[k] -= flow[k];
                d[k + 1] += flow[k];
            }
            d
        };
        let axpy = |x: &[f64; K], h: f64, d: &[f64; K]| {
            let mut y = *x;
            for k in 0..K {
                y[k] += h * d[k];
            }
            y
        };
        let h = 1.0 / f64::from(substeps);
        let mut x = initial;
        let mut out = vec![x];
        for _ in 0..days {
            for _ in 0..substeps {
                let k1 = deriv(&x);
                let k2 = deriv(&axpy(&x, h / 2.0, &k1));
                let k3 = deriv(&axpy(&x, h / 2.0, &k2));
                let k4 = deriv(&axpy(&x, h, &k3));
                for k in 0..K {
                    x[k] += h / 6.0 * (k1[k] + 2.0 * k2[k] + 2.0 * k3[k] + k4[k]);
                }
            }
            out.push(x);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUTS: &[ChainOutput] = &[
        ChainOutput { name: "prevalence", column: "infected", source: Source::Compartment(1) },
        ChainOutput { name: "incidence", column: "new_infections", source: Source::Incidence },
    ];

    fn params(pairs: &[(&str, ParamValue)]) -> ParameterSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn step_probability_matches_exponential_survival() {
        assert_eq!(step_probability(0.0, 0.1), 0.0);
        assert!((step_probability(2.0, 0.1) - (1.0 - (-0.2f64).exp())).abs() < 1e-15);
        assert_eq!(step_probability(f64::INFINITY, 0.1), 1.0);
    }

    #[test]
    fn draw_edges_and_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(draw(&mut rng, 0, 0.5), 0);
        assert_eq!(draw(&mut rng, 10, 0.0), 0);
        assert_eq!(draw(&mut rng, 10, 1.0), 10);
        let total: u64 = (0..10_000).map(|_| draw(&mut rng, 100, 0.3)).sum();
        // Mean 30, sd of the mean sqrt(21 / 10_000) ≈ 0.046: ±0.3 is > 6 sd.
        assert!((total as f64 / 10_000.0 - 30.0).abs() < 0.3, "{total}");
    }

    #[test]
    fn read_rates_accepts_ints_and_floats_in_order() {
        let p = params(&[("gamma", ParamValue::Int(2)), ("beta", ParamValue::Float(0.5))]);
        assert_eq!(read_rates(&p, "sir", &["beta", "gamma"]), Ok([0.5, 2.0]));
    }

    #[test]
    fn read_rates_errors_name_the_parameter() {
        let msg = |p: ParameterSet| match read_rates(&p, "sir", &["beta", "gamma"]) {
            Err(SimError::Model(m)) => m,
            other => panic!("expected a model error, got {other:?}"),
        };
        let m = msg(params(&[("gamma", ParamValue::Float(0.5))]));
        assert!(m.contains("`beta` is missing") && m.contains("beta, gamma"), "{m}");
        let m =
            msg(params(&[("beta", ParamValue::Float(1.0)), ("gamma", ParamValue::Float(-0.1))]));
        assert!(m.contains("`gamma` is -0.1") && m.contains("≥ 0"), "{m}");
        let m = msg(params(&[("beta", ParamValue::Float(f64::NAN))]));
        assert!(m.contains("`beta` is NaN") && m.contains("finite"), "{m}");
        let m = msg(params(&[("beta", ParamValue::Float(f64::INFINITY))]));
        assert!(m.contains("`beta` is inf"), "{m}");
        let m = msg(params(&[("beta", ParamValue::Str("high".into()))]));
        assert!(m.contains("`beta` is the string \"high\""), "{m}");
    }

    #[test]
    fn check_settings_names_the_setting() {
        let setting = |pop, init: &[(&'static str, u64)], days, steps| {
            check_settings(pop, init, days, steps).err().map(|e| e.setting)
        };
        let i = |n| [("initial_infected", n)];
        assert_eq!(setting(10, &i(1), 5, 10), None);
        assert_eq!(setting(10, &i(10), 5, 1), None);
        assert_eq!(setting(0, &i(0), 5, 10), Some("population"));
        assert_eq!(setting(MAX_POPULATION + 1, &i(1), 5, 10), Some("population"));
        assert_eq!(setting(10, &i(0), 5, 10), Some("initial_infected"));
        assert_eq!(setting(10, &i(11), 5, 10), Some("initial_infected"));
        assert_eq!(setting(10, &i(1), 0, 10), Some("days"));
        assert_eq!(setting(10, &i(1), 5, 0), Some("steps_per_day"));
        let two = [("initial_infected", u64::MAX), ("initial_exposed", 2)];
        let e = check_settings(10, &two, 5, 10).expect_err("sum overflows, must be refused");
        assert!(e.message.contains("initial_infected + initial_exposed"), "{}", e.message);
    }

    #[test]
    fn run_conserves_population_and_reports_every_day() {
        let chain = Chain::new(500, [495, 5, 0, 0, 0], 20, 7, 1, OUTPUTS);
        let mut days = Vec::new();
        let mut cumulative = 0;
        chain.run(3.0, &[1.0, 0.7, 0.3], 42, |day, x, new| {
            days.push(day);
            cumulative += new;
            assert_eq!(x.iter().sum::<u64>(), 500, "day {day}: {x:?}");
            assert_eq!(495 - x[0], cumulative, "day {day}: S0 − S is the cumulative incidence");
        });
        assert_eq!(days, (0..=20).collect::<Vec<_>>());
        assert!(cumulative > 0);
    }

    #[test]
    fn simulate_tables_have_the_shared_schemas() {
        let chain = Chain::new(100, [99, 1, 0], 3, 10, 1, OUTPUTS);
        let out = chain.simulate(2.0, &[0.5], 7);
        let specs = chain.output_specs();
        assert_eq!(out.tables.len(), 2);
        for (table, spec) in out.tables.iter().zip(&specs) {
            assert!(Arc::ptr_eq(&table.schema(), &spec.schema));
            assert_eq!(table.num_rows(), 4);
            let day = table.column(0).as_any().downcast_ref::<Int64Array>().expect("Int64");
            assert_eq!(day.values().to_vec(), vec![0, 1, 2, 3]);
        }
        assert_eq!(testing::values(&out.tables[0])[0], 1);
        assert_eq!(testing::values(&out.tables[1])[0], 0);
    }

    #[test]
    fn ode_helper_conserves_and_matches_exponential_decay() {
        // With β = 0 the infected decay as I0·exp(−γt).
        let x = testing::ode([90.0, 10.0, 0.0], 0.0, &[0.5], 1, 4, 100);
        let want = 10.0 * (-2.0f64).exp();
        assert!((x[4][1] - want).abs() < 1e-9, "{} vs {want}", x[4][1]);
        assert!((x[4].iter().sum::<f64>() - 100.0).abs() < 1e-9);
    }
}
