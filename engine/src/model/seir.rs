//! `seir`: the stochastic SEIR model as a discrete-time binomial chain, `S → E → I → R`.
//!
//! The Kermack–McKendrick SIR model (Proc. R. Soc. A 115:700–721, 1927) with a latent
//! (exposed, not yet infectious) stage, frequency-dependent transmission, run as the binomial
//! chain of Bretó et al. (2009), Ann. Appl. Stat. 3(1):319–348. Time is in days, rates are per
//! day, the step is `dt = 1 / steps_per_day` days:
//!
//! ```text
//! λ     = β · I / N
//! S → E ~ Binomial(S, 1 − exp(−λ · dt))
//! E → I ~ Binomial(E, 1 − exp(−σ · dt))
//! I → R ~ Binomial(I, 1 − exp(−γ · dt))
//! ```
//!
//! All draws use the state at the start of the step; `N = S + E + I + R` is constant.
//!
//! Parameters: `beta` (β, transmission rate per day), `sigma` (σ, rate of becoming infectious
//! per day; mean latent period `1/σ` days), `gamma` (γ, recovery rate per day).
//!
//! Outputs, one row per day `0 … days` (counts at the end of the day; day 0 the initial state):
//! `prevalence(day, infected)` = I, `incidence(day, new_infections)` = `S → E` moves during the
//! day (0 at day 0). All columns are non-null `Int64`.

use serde::{Deserialize, Serialize};

use super::chain::{self, Chain, ChainOutput, Source};
use super::ModelSettingError;

pub use super::chain::DEFAULT_STEPS_PER_DAY;

const NAME: &str = "seir";
const PARAMETERS: [&str; 3] = ["beta", "gamma", "sigma"];
const I: usize = 2;
const OUTPUTS: &[ChainOutput] = &[
    ChainOutput { name: "prevalence", column: "infected", source: Source::Compartment(I) },
    ChainOutput { name: "incidence", column: "new_infections", source: Source::Incidence },
];

/// Fixed settings of the `seir` model (the `[model]` section of a job).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeirSettings {
    /// Population size `N` (individuals, constant), 1 … 2^53.
    pub population: u64,
    /// Infectious individuals at day 0; `initial_infected + initial_exposed` is ≥ 1 and
    /// ≤ `population`, the rest are susceptible.
    pub initial_infected: u64,
    /// Exposed (latent) individuals at day 0; default 0.
    #[serde(default)]
    pub initial_exposed: u64,
    /// Number of days to simulate (≥ 1); outputs have `days + 1` rows.
    pub days: u32,
    /// Time steps per day (≥ 1); the step is `1 / steps_per_day` days.
    #[serde(default = "chain::default_steps_per_day")]
    pub steps_per_day: u32,
}

/// The `seir` model, ready to run (see the [module docs](self)).
#[derive(Debug)]
pub struct Seir {
    settings: SeirSettings,
    chain: Chain<4>,
}

impl Seir {
    /// Checks the settings and builds the model.
    ///
    /// # Errors
    /// [`ModelSettingError`] when `population` is 0 or above 2^53,
    /// `initial_infected + initial_exposed` is 0 or above `population`, or `days` or
    /// `steps_per_day` is 0.
    pub fn new(settings: SeirSettings) -> Result<Self, ModelSettingError> {
        let SeirSettings { population, initial_infected, initial_exposed, days, steps_per_day } =
            settings;
        chain::check_settings(
            population,
            &[("initial_infected", initial_infected), ("initial_exposed", initial_exposed)],
            days,
            steps_per_day,
        )?;
        let susceptible = population - initial_infected - initial_exposed;
        let initial = [susceptible, initial_exposed, initial_infected, 0];
        let chain = Chain::new(population, initial, days, steps_per_day, I, OUTPUTS);
        Ok(Seir { settings, chain })
    }

    /// The settings the model was built with.
    pub fn settings(&self) -> &SeirSettings {
        &self.settings
    }
}

chain::chain_simulator!(Seir, "`beta`, `sigma` and `gamma`", [beta, gamma, sigma] => (beta, [sigma, gamma]));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chain::testing::{ode, values};
    use crate::model::{SimError, Simulator};
    use crate::params::ParamValue;
    use crate::params::ParameterSet;

    fn settings(initial_infected: u64, initial_exposed: u64) -> SeirSettings {
        SeirSettings {
            population: 2000,
            initial_infected,
            initial_exposed,
            days: 50,
            steps_per_day: 10,
        }
    }

    fn params(beta: f64, sigma: f64, gamma: f64) -> ParameterSet {
        [("beta", beta), ("sigma", sigma), ("gamma", gamma)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ParamValue::Float(v)))
            .collect()
    }

    #[test]
    fn api_names_and_outputs() {
        let m = Seir::new(settings(1, 0)).expect("valid");
        assert_eq!(m.name(), "seir");
        assert_eq!(m.parameter_names(), vec!["beta", "gamma", "sigma"]);
        let names: Vec<_> = m.outputs().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["prevalence", "incidence"]);
        let s: SeirSettings =
            toml::from_str("population = 10\ninitial_infected = 1\ndays = 3").expect("parses");
        assert_eq!((s.initial_exposed, s.steps_per_day), (0, DEFAULT_STEPS_PER_DAY));
    }

    #[test]
    fn same_seed_same_tables_different_seed_different() {
        let m = Seir::new(settings(5, 5)).expect("valid");
        let p = params(1.5, 0.5, 0.4);
        let a = m.simulate(&p, 3).expect("runs");
        assert_eq!(a.tables, m.simulate(&p, 3).expect("runs").tables);
        assert_ne!(a.tables, m.simulate(&p, 4).expect("runs").tables);
    }

    #[test]
    fn conservation_s_e_i_r_sum_to_n_every_day() {
        let m = Seir::new(settings(3, 7)).expect("valid");
        for seed in 0..20 {
            let mut cumulative = 0;
            m.chain.run(2.0, &[0.5, 0.4], seed, |day, x, new| {
                cumulative += new;
                assert_eq!(x.iter().sum::<u64>(), 2000, "seed {seed} day {day}: {x:?}");
                assert_eq!(1990 - x[0], cumulative, "incidence counts S → E");
            });
        }
    }

    #[test]
    fn initial_exposed_start_in_e_and_beta_zero_infects_no_one() {
        let m = Seir::new(settings(0, 50)).expect("valid");
        let out = m.simulate(&params(0.0, 0.5, 0.4), 9).expect("runs");
        let (prev, inc) = (values(&out.tables[0]), values(&out.tables[1]));
        assert_eq!(prev[0], 0, "the 50 start exposed, not infectious");
        assert!(prev[1] > 0, "some of the exposed become infectious on day 1: {prev:?}");
        assert!(inc.iter().all(|&n| n == 0), "{inc:?}");
    }

    #[test]
    fn mean_prevalence_tracks_the_ode() {
        // As for sir::tests::mean_prevalence_tracks_the_ode (same tolerance and reasoning), with
        // a 2-day mean latent period: N = 10,000, E0 = 20, β = 1, σ = 0.5, γ = 0.5; dt = 0.05 d.
        let (n, e0, days) = (10_000u64, 20u64, 80u32);
        let m = Seir::new(SeirSettings {
            population: n,
            initial_infected: 0,
            initial_exposed: e0,
            days,
            steps_per_day: 20,
        })
        .expect("valid");
        let runs = 1_000;
        let p = params(1.0, 0.5, 0.5);
        let mut sum = vec![0.0; days as usize + 1];
        for seed in 0..runs {
            for (s, v) in sum.iter_mut().zip(values(&m.simulate(&p, seed).expect("runs").tables[0]))
            {
                *s += v as f64;
            }
        }
        let exact = ode([(n - e0) as f64, e0 as f64, 0.0, 0.0], 1.0, &[0.5, 0.5], 2, days, 1000);
        let mut worst: f64 = 0.0;
        for (day, (s, x)) in sum.iter().zip(&exact).enumerate() {
            let diff = s / f64::from(runs) - x[2];
            worst = worst.max(diff.abs());
            assert!(
                diff.abs() < 0.015 * n as f64,
                "day {day}: mean {} vs ODE {}",
                s / 1000.0,
                x[2]
            );
        }
        eprintln!("seir: worst |mean − ODE| = {worst:.1}");
    }

    #[test]
    fn parameter_and_settings_errors() {
        let m = Seir::new(settings(1, 0)).expect("valid");
        let mut p = params(1.0, 0.5, 0.5);
        p.insert("sigma", ParamValue::Float(-1.0));
        assert!(matches!(m.simulate(&p, 1), Err(SimError::Model(msg)) if msg.contains("`sigma`")));
        let mut p = ParameterSet::new();
        p.insert("gamma", ParamValue::Float(0.5));
        assert!(matches!(m.simulate(&p, 1), Err(SimError::Model(msg)) if msg.contains("`beta`")));
        let e = Seir::new(settings(0, 0)).expect_err("nobody infected");
        assert_eq!(e.setting, "initial_infected");
        assert!(e.message.contains("initial_exposed"), "{}", e.message);
        let e = Seir::new(settings(1500, 1000)).expect_err("more than N");
        assert!(e.message.contains("2500"), "{}", e.message);
    }
}
