//! `seir_seasonal`: an open-population SEIR model with births from data, deaths, seasonal
//! transmission and imperfect reporting, reported weekly — the measles model of He, Ionides &
//! King (2010) without its cohort entry, extra-demographic noise and mixing exponent.
//!
//! # Equations
//!
//! Time `t` is in days from 00:00 on 1 January of `start_year`; the step is
//! `dt = 1 / steps_per_day` days. Calendar time in years is `y(t) = start_year + t / 365.25`.
//! In each step, with the state `S, E, I, R` at its start:
//!
//! ```text
//! β(t)    = beta · (1 + amplitude · cos(2π (t − phase_days) / 365.25))   per day
//! λ(t)    = β(t) · (I + ι) / P(t)                                          per day
//! births  ~ Poisson(b(t) · dt / 365.25)                                    into S
//! S exits ~ Binomial(S, 1 − exp(−(λ + μ) dt)),  of which S → E ~ Binomial(exits, λ / (λ + μ))
//! E exits ~ Binomial(E, 1 − exp(−(σ + μ) dt)),  of which E → I ~ Binomial(exits, σ / (σ + μ))
//! I exits ~ Binomial(I, 1 − exp(−(γ + μ) dt)),  of which I → R ~ Binomial(exits, γ / (γ + μ))
//! R exits ~ Binomial(R, 1 − exp(−μ dt))                                    deaths
//! ```
//!
//! and the exits that do not progress are deaths. `μ = mu_per_year / 365.25` per day, the same
//! in every compartment. `b(t)` (live births per year) and `P(t)` (population) come from the
//! demography file, evaluated at the middle of the step (births) and at its start (`P`). This is
//! the Euler-multinomial scheme of Bretó, He, Ionides & King (2009), Ann. Appl. Stat.
//! 3(1):319–348, as used by He, Ionides & King (2010), "Plug-and-play inference for disease
//! dynamics: measles in large and small populations as a case study", J. R. Soc. Interface
//! 7:271–283, with sinusoidal forcing in place of their term-time forcing (as in Bjørnstad,
//! Finkenstädt & Grenfell 2002, Ecol. Monogr. 72:169–184, whose seasonal transmission is
//! estimated freely; the sinusoid is its first harmonic).
//!
//! Like He et al., the force of infection divides by the *data* population `P(t)`, not by the
//! model's `S + E + I + R`: the model has births and deaths but no migration, so its own total
//! drifts from the census wherever migration matters (London gained ~1.3 million people in
//! 1944–46 as evacuees returned). `R` is still tracked, with deaths, so that
//! `S + E + I + R = N(0) + births − deaths` holds exactly.
//!
//! # Reporting
//!
//! The incidence of week `w` (`w = 1 … weeks`, days `[7(w − 1), 7w)`) is the number of `E → I`
//! moves in it (onset of infectiousness, when measles is diagnosed); reported cases are
//! `Binomial(incidence, rho)`, as in He et al.'s reporting model without its overdispersion
//! (put that in the target's loss, e.g. a negative binomial).
//!
//! # Initial state
//!
//! `N(0) = P(0)` rounded; `S = round(s0 · N(0))`, `E = round(e0 · N(0))`,
//! `I = round(i0 · N(0))`, `R` the rest. He et al. estimate `s0, e0, i0` as parameters.
//!
//! # Settings and parameters
//!
//! Settings: [`SeirSeasonalSettings`]. Parameters: `beta` (per day), `sigma` (per day; mean
//! latent period `1/σ`), `gamma` (per day; mean infectious period `1/γ`), `amplitude` in
//! `[0, 1]`, `rho` in `[0, 1]`, and the initial fractions `s0`, `e0`, `i0` in `[0, 1]` with
//! `s0 + e0 + i0 ≤ 1`. `R0 ≈ beta / gamma` (more precisely `β σ / ((σ + μ)(γ + μ))`).
//!
//! # Outputs
//!
//! One row per week `w = 1 … weeks`, all columns non-null `Int64`: `cases(week, cases)`
//! (reported cases of week `w`), `prevalence(week, infected)` (`I` at the end of week `w`) and
//! `susceptible(week, susceptible)` (`S` at the end of week `w`). Week `w` ends at model time
//! `7w` days, so with dates a target aligns by `origin` = the day before `start_year`-01-01
//! and `time_unit = "week"`, if the data's weeks are exactly 7 days long.
//!
//! # Determinism and cost
//!
//! All draws come from `ChaCha8Rng::seed_from_u64(seed)` in a fixed order. Per step: one
//! Poisson and up to seven binomial draws; the seasonal factor, `b(t)` and `P(t)` are
//! precomputed per step when the model is built.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

use super::chain::{self, draw, step_probability, MAX_POPULATION};
use super::{ModelSettingError, OutputSpec, SimError, SimOutput, Simulator};
use crate::params::{ParamValue, ParameterSet};

const NAME: &str = "seir_seasonal";

/// Days per year in `y(t)` and in the per-year rates.
pub const DAYS_PER_YEAR: f64 = 365.25;

/// Default time steps per day: one (the per-step work is the model's whole cost).
pub const DEFAULT_STEPS_PER_DAY: u32 = 1;

/// Default per-capita death rate, per year: He et al. (2010) fix `μ = 0.02 yr⁻¹`.
pub const DEFAULT_MU_PER_YEAR: f64 = 0.02;

/// The model's parameters, in name order.
const PARAMETERS: [&str; 8] = ["amplitude", "beta", "e0", "gamma", "i0", "rho", "s0", "sigma"];

/// Output names and value columns, in output order.
const OUTPUTS: [(&str, &str); 3] =
    [("cases", "cases"), ("prevalence", "infected"), ("susceptible", "susceptible")];

/// How yearly demographic figures become values at time `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Linear between mid-year points (`year + 0.5`), held constant before the first and after
    /// the last mid-year.
    #[default]
    Linear,
    /// The year's value for the whole calendar year.
    Step,
}

/// Fixed settings of the `seir_seasonal` model (the `[model]` section of a job).
///
/// ```toml
/// [model]
/// name = "seir_seasonal"
/// demography = "london_demography_1944_1964.csv"
/// start_year = 1944
/// weeks = 1096
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeirSeasonalSettings {
    /// CSV file with columns `year` (integer, consecutive, increasing), `births` (live births
    /// in that year, ≥ 0) and `population` (≥ 1); relative to the job file. Must include
    /// `start_year` and every year in which a simulated week starts.
    pub demography: PathBuf,
    /// The calendar year whose 1 January, 00:00 is model time 0.
    pub start_year: i32,
    /// Number of weeks simulated (≥ 1); outputs have one row per week.
    pub weeks: u32,
    /// Time steps per day (≥ 1); default [`DEFAULT_STEPS_PER_DAY`].
    #[serde(default = "default_steps_per_day")]
    pub steps_per_day: u32,
    /// Per-capita death rate `μ` in every compartment, per year (finite, ≥ 0); default
    /// [`DEFAULT_MU_PER_YEAR`].
    #[serde(default = "default_mu_per_year")]
    pub mu_per_year: f64,
    /// Day of the year (days after 1 January, 00:00) at which transmission peaks; default 0.
    #[serde(default)]
    pub phase_days: f64,
    /// How births and population are interpolated between years: `linear` (default) or `step`.
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Imported infectious individuals `ι` added to `I` in the force of infection (He et al.'s
    /// `iota`; keeps the chain from dying out); finite, ≥ 0, default 0.
    #[serde(default)]
    pub imported_infections: f64,
}

fn default_steps_per_day() -> u32 {
    DEFAULT_STEPS_PER_DAY
}

fn default_mu_per_year() -> f64 {
    DEFAULT_MU_PER_YEAR
}

/// Yearly live births and population, read from a demography file.
#[derive(Debug, Clone, PartialEq)]
pub struct Demography {
    /// First year; the others follow one by one.
    pub first_year: i32,
    /// Live births per year, from `first_year`.
    pub births: Vec<f64>,
    /// Population per year, from `first_year`.
    pub population: Vec<f64>,
}

impl Demography {
    /// Reads a CSV demography file with columns `year`, `births`, `population` (others are
    /// ignored).
    ///
    /// # Errors
    /// [`ModelSettingError`] for setting `demography`, naming the file and line: unreadable
    /// file, missing column, a value that is not a number, years not consecutive and
    /// increasing, births negative or not finite, population below 1, above 2^53 or not
    /// finite, no rows.
    pub fn read(path: &Path) -> Result<Self, ModelSettingError> {
        let err = |message: String| ModelSettingError { setting: "demography", message };
        let file = path.display();
        // Records end at `\n` only, and fields are trimmed: a stray `\r` (the shared London
        // file has `births\r,population\r\n`) is whitespace, not a line break.
        let mut reader = csv::ReaderBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_path(path)
            .map_err(|e| err(format!("{file}: cannot read it ({e}); check the path")))?;
        let headers = reader.headers().map_err(|e| err(format!("{file}:1: {e}")))?.clone();
        let column = |name: &str| {
            headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
                err(format!(
                    "{file}:1: no column `{name}`; the file needs columns year, births, \
                     population (it has: {})",
                    headers.iter().map(str::trim).collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let (year_col, births_col, pop_col) =
            (column("year")?, column("births")?, column("population")?);
        let mut first_year = None;
        let (mut births, mut population) = (Vec::new(), Vec::new());
        for record in reader.records() {
            let record = record.map_err(|e| err(format!("{file}: {e}")))?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |col: usize, name: &str| -> Result<f64, ModelSettingError> {
                let text = record.get(col).unwrap_or("").trim();
                text.parse::<f64>().map_err(|_| {
                    err(format!("{file}:{line}: column `{name}` is {text:?}; give a number"))
                })
            };
            let year = field(year_col, "year")?;
            let expected = first_year.map_or(year, |y: i32| f64::from(y) + births.len() as f64);
            if year.fract() != 0.0 || year != expected || year.abs() > 1e6 {
                return Err(err(format!(
                    "{file}:{line}: year {year}; years must be integers, one row per year, \
                     increasing without gaps (expected {expected})"
                )));
            }
            first_year.get_or_insert(year as i32);
            let b = field(births_col, "births")?;
            if !(b.is_finite() && b >= 0.0) {
                return Err(err(format!(
                    "{file}:{line}: births {b}; give the live births of the year (≥ 0)"
                )));
            }
            let p = field(pop_col, "population")?;
            if !(p.is_finite() && (1.0..=MAX_POPULATION as f64).contains(&p)) {
                return Err(err(format!(
                    "{file}:{line}: population {p}; give the number of inhabitants (1 … 2^53)"
                )));
            }
            births.push(b);
            population.push(p);
        }
        let Some(first_year) = first_year else {
            return Err(err(format!("{file}: no rows; give one row per year")));
        };
        Ok(Demography { first_year, births, population })
    }

    /// The last year of the file.
    fn last_year(&self) -> i32 {
        self.first_year + self.births.len() as i32 - 1
    }

    /// `values` (one per year) at decimal year `y`, per `interpolation` (see [`Interpolation`]).
    fn at(&self, values: &[f64], y: f64, interpolation: Interpolation) -> f64 {
        let last = values.len() - 1;
        match interpolation {
            Interpolation::Step => {
                let i = (y.floor() - f64::from(self.first_year)).clamp(0.0, last as f64);
                values[i as usize]
            }
            Interpolation::Linear => {
                let x = (y - f64::from(self.first_year) - 0.5).clamp(0.0, last as f64);
                let i = (x.floor() as usize).min(last);
                let j = (i + 1).min(last);
                let f = x - i as f64;
                values[i] * (1.0 - f) + values[j] * f
            }
        }
    }
}

/// The `seir_seasonal` model, ready to run (see the [module docs](self)).
#[derive(Debug)]
pub struct SeirSeasonal {
    settings: SeirSeasonalSettings,
    /// Mean births per step (Poisson mean), per step.
    birth_mean: Vec<f64>,
    /// `dt / P(t)` per step: the force of infection per unit `β(t) · (I + ι)`.
    dt_per_pop: Vec<f64>,
    /// `cos(2π (t − phase) / 365.25)` per step.
    season: Vec<f64>,
    /// `N(0)`.
    initial_population: u64,
    specs: Vec<OutputSpec>,
    /// `1 … weeks`, shared by every table.
    week: ArrayRef,
}

/// The state of one run at the end of a week, for [`SeirSeasonal::run`]'s observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WeekState {
    /// `S, E, I, R` at the end of the week.
    pub x: [u64; 4],
    /// `E → I` moves in the week.
    pub incidence: u64,
    /// Reported cases of the week.
    pub reported: u64,
    /// Births since time 0.
    pub births: u64,
    /// Deaths since time 0.
    pub deaths: u64,
}

/// The parameters of one run, checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    beta: f64,
    sigma: f64,
    gamma: f64,
    amplitude: f64,
    rho: f64,
    s0: f64,
    e0: f64,
    i0: f64,
}

impl Params {
    /// Reads and checks the parameters.
    ///
    /// # Errors
    /// [`SimError::Model`] naming the parameter: missing, a string, not finite, negative; for
    /// `amplitude`, `rho`, `s0`, `e0`, `i0` above 1; `s0 + e0 + i0` above 1.
    fn read(params: &ParameterSet) -> Result<Self, SimError> {
        let [beta, gamma, sigma] = chain::read_rates(params, NAME, &["beta", "gamma", "sigma"])?;
        let mut unit = [0.0; 5];
        for (value, name) in unit.iter_mut().zip(["amplitude", "rho", "s0", "e0", "i0"]) {
            *value = match params.get(name) {
                None => {
                    return Err(SimError::Model(format!(
                        "{NAME}: parameter `{name}` is missing; the model needs {}",
                        PARAMETERS.join(", ")
                    )))
                }
                Some(ParamValue::Str(s)) => {
                    return Err(SimError::Model(format!(
                        "{NAME}: parameter `{name}` is the string {s:?}; give a number in [0, 1]"
                    )))
                }
                Some(v) => v.as_f64().unwrap_or(f64::NAN),
            };
            if !(0.0..=1.0).contains(value) {
                return Err(SimError::Model(format!(
                    "{NAME}: parameter `{name}` is {value}; give a number in [0, 1]"
                )));
            }
        }
        let [amplitude, rho, s0, e0, i0] = unit;
        if s0 + e0 + i0 > 1.0 {
            return Err(SimError::Model(format!(
                "{NAME}: parameters `s0` + `e0` + `i0` = {} > 1; they are fractions of the \
                 initial population",
                s0 + e0 + i0
            )));
        }
        Ok(Params { beta, sigma, gamma, amplitude, rho, s0, e0, i0 })
    }
}

impl SeirSeasonal {
    /// Checks the settings, reads the demography file (relative paths against `base_dir`, the
    /// job file's directory) and builds the model.
    ///
    /// # Errors
    /// [`ModelSettingError`] naming the setting: `demography` (see [`Demography::read`], or
    /// not covering the simulated years), `weeks` or `steps_per_day` 0, `mu_per_year` or
    /// `imported_infections` negative or not finite, `phase_days` not finite.
    pub fn new(settings: SeirSeasonalSettings, base_dir: &Path) -> Result<Self, ModelSettingError> {
        let demography = Demography::read(&base_dir.join(&settings.demography))?;
        Self::with_demography(settings, &demography)
    }

    /// As [`SeirSeasonal::new`], with the demography given (its `demography` setting is then
    /// only a name).
    ///
    /// # Errors
    /// As [`SeirSeasonal::new`], without the file errors.
    pub fn with_demography(
        settings: SeirSeasonalSettings,
        demography: &Demography,
    ) -> Result<Self, ModelSettingError> {
        let err = |setting, message: String| Err(ModelSettingError { setting, message });
        let s = &settings;
        if s.weeks == 0 {
            return err("weeks", "is 0; set the number of weeks to simulate (≥ 1)".into());
        }
        if s.steps_per_day == 0 {
            return err(
                "steps_per_day",
                format!("is 0; set it to at least 1 (default {DEFAULT_STEPS_PER_DAY})"),
            );
        }
        if !(s.mu_per_year.is_finite() && s.mu_per_year >= 0.0) {
            return err(
                "mu_per_year",
                format!(
                    "is {}; give the per-capita death rate per year (≥ 0, default \
                     {DEFAULT_MU_PER_YEAR})",
                    s.mu_per_year
                ),
            );
        }
        if !s.phase_days.is_finite() {
            return err("phase_days", format!("is {}; give a day of the year", s.phase_days));
        }
        if !(s.imported_infections.is_finite() && s.imported_infections >= 0.0) {
            return err(
                "imported_infections",
                format!("is {}; give a number ≥ 0 (default 0)", s.imported_infections),
            );
        }
        let days = u64::from(s.weeks) * 7;
        let last_week_start = f64::from(s.start_year) + (days - 7) as f64 / DAYS_PER_YEAR;
        let needed = (s.start_year, last_week_start.floor() as i32);
        if needed.0 < demography.first_year || needed.1 > demography.last_year() {
            return err(
                "demography",
                format!(
                    "{}: covers {}–{}, but {} weeks from {} need {}–{}; extend the file or \
                     change `start_year` or `weeks`",
                    s.demography.display(),
                    demography.first_year,
                    demography.last_year(),
                    s.weeks,
                    s.start_year,
                    needed.0,
                    needed.1
                ),
            );
        }

        let steps = days as usize * s.steps_per_day as usize;
        let dt = 1.0 / f64::from(s.steps_per_day);
        let year = |t: f64| f64::from(s.start_year) + t / DAYS_PER_YEAR;
        let (mut birth_mean, mut dt_per_pop, mut season) =
            (Vec::with_capacity(steps), Vec::with_capacity(steps), Vec::with_capacity(steps));
        for k in 0..steps {
            let t = k as f64 * dt;
            let births = demography.at(&demography.births, year(t + dt / 2.0), s.interpolation);
            birth_mean.push(births / DAYS_PER_YEAR * dt);
            dt_per_pop.push(dt / demography.at(&demography.population, year(t), s.interpolation));
            season.push((2.0 * PI * (t - s.phase_days) / DAYS_PER_YEAR).cos());
        }
        let initial_population =
            demography.at(&demography.population, year(0.0), s.interpolation).round() as u64;

        let specs = OUTPUTS
            .iter()
            .map(|(name, column)| OutputSpec {
                name: name.to_string(),
                schema: Arc::new(Schema::new(vec![
                    Field::new("week", DataType::Int64, false),
                    Field::new(*column, DataType::Int64, false),
                ])),
            })
            .collect();
        let week: ArrayRef = Arc::new(Int64Array::from_iter_values(1..=i64::from(s.weeks)));
        Ok(SeirSeasonal {
            settings,
            birth_mean,
            dt_per_pop,
            season,
            initial_population,
            specs,
            week,
        })
    }

    /// The settings the model was built with.
    pub fn settings(&self) -> &SeirSeasonalSettings {
        &self.settings
    }

    /// Runs one replicate and calls `observe(week, state)` at the end of every week
    /// `1 … weeks`.
    pub(crate) fn run<F: FnMut(u32, &WeekState)>(&self, p: &Params, seed: u32, mut observe: F) {
        let s = &self.settings;
        let dt = 1.0 / f64::from(s.steps_per_day);
        let mu = s.mu_per_year / DAYS_PER_YEAR;
        let iota = s.imported_infections;
        let e_exit = step_probability(p.sigma + mu, dt);
        let i_exit = step_probability(p.gamma + mu, dt);
        let r_exit = step_probability(mu, dt);
        // Share of exits that progress; deaths are the rest. 0/0 only when the exit
        // probability is 0 too, so nothing is drawn.
        let share = |rate: f64| if rate + mu > 0.0 { rate / (rate + mu) } else { 0.0 };
        let (e_progress, i_progress) = (share(p.sigma), share(p.gamma));

        let n0 = self.initial_population;
        let frac = |f: f64| ((f * n0 as f64).round() as u64).min(n0);
        // s0 + e0 + i0 ≤ 1 (Params::read); the clamps absorb rounding up.
        let s0 = frac(p.s0);
        let e0 = frac(p.e0).min(n0 - s0);
        let i0 = frac(p.i0).min(n0 - s0 - e0);
        let mut x = [s0, e0, i0, n0 - s0 - e0 - i0];

        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(seed));
        let mut state = WeekState::default();
        let steps_per_week = 7 * s.steps_per_day as usize;
        for week in 1..=s.weeks {
            let mut incidence = 0;
            let first = (week as usize - 1) * steps_per_week;
            for k in first..first + steps_per_week {
                let mean = self.birth_mean[k];
                let births = if mean > 0.0 {
                    // Poisson::new fails only for a mean that is not finite and positive.
                    Poisson::new(mean).map_or(0, |d| d.sample(&mut rng) as u64)
                } else {
                    0
                };
                let beta_t = p.beta * (1.0 + p.amplitude * self.season[k]);
                // λ·dt and μ·dt: the step's infection and death hazards.
                let foi_dt = beta_t * (x[2] as f64 + iota) * self.dt_per_pop[k];
                let s_exits = draw(&mut rng, x[0], -(-(foi_dt + mu * dt)).exp_m1());
                let infected_share = if foi_dt > 0.0 { foi_dt / (foi_dt + mu * dt) } else { 0.0 };
                let infections = draw(&mut rng, s_exits, infected_share);
                let e_exits = draw(&mut rng, x[1], e_exit);
                let onsets = draw(&mut rng, e_exits, e_progress);
                let i_exits = draw(&mut rng, x[2], i_exit);
                let recoveries = draw(&mut rng, i_exits, i_progress);
                let r_deaths = draw(&mut rng, x[3], r_exit);
                x[0] = x[0] - s_exits + births;
                x[1] = x[1] - e_exits + infections;
                x[2] = x[2] - i_exits + onsets;
                x[3] = x[3] - r_deaths + recoveries;
                state.births += births;
                state.deaths +=
                    (s_exits - infections) + (e_exits - onsets) + (i_exits - recoveries) + r_deaths;
                incidence += onsets;
            }
            state.x = x;
            state.incidence = incidence;
            state.reported = draw(&mut rng, incidence, p.rho);
            observe(week, &state);
        }
    }
}

impl Simulator for SeirSeasonal {
    fn name(&self) -> &str {
        NAME
    }

    fn parameter_names(&self) -> Vec<String> {
        PARAMETERS.iter().map(|p| p.to_string()).collect()
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.specs.clone()
    }

    fn check_parameters(&self, params: &ParameterSet) -> Result<(), String> {
        Params::read(params).map(|_| ()).map_err(SimError::into_message)
    }

    fn output_times(&self, _output: &str) -> Option<Vec<f64>> {
        Some((1..=self.settings.weeks).map(f64::from).collect())
    }

    /// Runs one replicate (see the [module docs](self) for the parameters).
    ///
    /// # Errors
    /// [`SimError::Model`] naming the parameter when one is missing, not a number, not finite,
    /// negative, or above 1 where it is a probability or fraction, or when `s0 + e0 + i0 > 1`.
    fn simulate(&self, params: &ParameterSet, seed: u32) -> Result<SimOutput, SimError> {
        let p = Params::read(params)?;
        let weeks = self.settings.weeks as usize;
        let mut columns = [(); 3].map(|()| Vec::<i64>::with_capacity(weeks));
        self.run(&p, seed, |_, state| {
            // Counts are ≤ N(0) + births, far below 2^63.
            columns[0].push(state.reported as i64);
            columns[1].push(state.x[2] as i64);
            columns[2].push(state.x[0] as i64);
        });
        let tables = columns
            .into_iter()
            .zip(&self.specs)
            .map(|(values, spec)| {
                let values: ArrayRef = Arc::new(Int64Array::from(values));
                RecordBatch::try_new(spec.schema.clone(), vec![self.week.clone(), values])
                    .map_err(|e| SimError::Model(format!("{NAME}: building `{}`: {e}", spec.name)))
            })
            .collect::<Result<_, _>>()?;
        Ok(SimOutput { tables })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chain::testing::values;

    fn settings(weeks: u32) -> SeirSeasonalSettings {
        SeirSeasonalSettings {
            demography: PathBuf::from("demography.csv"),
            start_year: 2000,
            weeks,
            steps_per_day: 1,
            mu_per_year: 0.02,
            phase_days: 0.0,
            interpolation: Interpolation::Linear,
            imported_infections: 0.0,
        }
    }

    /// `years` years from 2000 with constant births and population.
    fn flat(years: usize, births: f64, population: f64) -> Demography {
        Demography {
            first_year: 2000,
            births: vec![births; years],
            population: vec![population; years],
        }
    }

    fn params(pairs: &[(&str, f64)]) -> ParameterSet {
        let mut p: ParameterSet = [
            ("beta", 0.8),
            ("sigma", 0.2),
            ("gamma", 0.25),
            ("amplitude", 0.3),
            ("rho", 0.5),
            ("s0", 0.6),
            ("e0", 0.0005),
            ("i0", 0.0005),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ParamValue::Float(v)))
        .collect();
        for (k, v) in pairs {
            p.insert(*k, ParamValue::Float(*v));
        }
        p
    }

    fn model(s: SeirSeasonalSettings, d: &Demography) -> SeirSeasonal {
        SeirSeasonal::with_demography(s, d).expect("valid settings")
    }

    fn states(m: &SeirSeasonal, p: &ParameterSet, seed: u32) -> Vec<WeekState> {
        let p = Params::read(p).expect("valid parameters");
        let mut out = Vec::new();
        m.run(&p, seed, |week, s| {
            assert_eq!(week as usize, out.len() + 1);
            out.push(*s);
        });
        out
    }

    #[test]
    fn api_names_outputs_and_defaults() {
        let m = model(settings(3), &flat(1, 2000.0, 100_000.0));
        assert_eq!(m.name(), "seir_seasonal");
        assert_eq!(
            m.parameter_names(),
            ["amplitude", "beta", "e0", "gamma", "i0", "rho", "s0", "sigma"]
        );
        let outputs: Vec<_> = m
            .outputs()
            .iter()
            .map(|o| {
                (o.name.clone(), o.schema.field(0).name().clone(), o.schema.field(1).name().clone())
            })
            .collect();
        assert_eq!(
            outputs,
            [
                ("cases".into(), "week".into(), "cases".into()),
                ("prevalence".into(), "week".into(), "infected".into()),
                ("susceptible".into(), "week".into(), "susceptible".into()),
            ]
        );
        let out = m.simulate(&params(&[]), 1).expect("runs");
        let week = out.tables[0].column(0).as_any().downcast_ref::<Int64Array>().expect("Int64");
        assert_eq!(week.values().to_vec(), [1, 2, 3]);
        // S starts at 0.6 · 100,000; week 1 adds ~38 births and infects a few hundred.
        let s1 = values(&out.tables[2])[0];
        assert!((59_000..60_040).contains(&s1), "S at the end of week 1: {s1}");

        let s: SeirSeasonalSettings =
            toml::from_str("demography = \"d.csv\"\nstart_year = 1944\nweeks = 10")
                .expect("parses");
        assert_eq!(s.steps_per_day, 1);
        assert_eq!(s.mu_per_year, 0.02);
        assert_eq!(s.phase_days, 0.0);
        assert_eq!(s.interpolation, Interpolation::Linear);
        assert_eq!(s.imported_infections, 0.0);
    }

    #[test]
    fn same_seed_same_tables_different_seed_different() {
        let m = model(settings(52), &flat(1, 2000.0, 100_000.0));
        let p = params(&[]);
        let a = m.simulate(&p, 3).expect("runs");
        assert_eq!(a.tables, m.simulate(&p, 3).expect("runs").tables);
        assert_ne!(a.tables, m.simulate(&p, 4).expect("runs").tables);
    }

    #[test]
    fn population_balance_is_exact_and_tracks_the_data() {
        // Births 30,000/yr, μ = 0.02/yr, no migration: the census obeys dP/dt = b − μP, so
        // P(t) = b/μ + (P0 − b/μ)·exp(−μt) with P0 = 10^6. The file gives P at mid-years.
        let (b, mu, p0) = (30_000.0, 0.02, 1.0e6);
        let census = |t_years: f64| b / mu + (p0 - b / mu) * (-mu * t_years).exp();
        let years = 10;
        let demography = Demography {
            first_year: 2000,
            births: vec![b; years],
            population: (0..years).map(|y| census(y as f64 + 0.5)).collect(),
        };
        let mut s = settings(52 * 9);
        s.interpolation = Interpolation::Step;
        let m = model(s, &demography);
        let n0 = m.initial_population;
        assert_eq!(n0, census(0.5).round() as u64, "step: the first year's census");
        let mut worst: f64 = 0.0;
        for seed in 0..3 {
            for (w, st) in states(&m, &params(&[]), seed).iter().enumerate() {
                let total: u64 = st.x.iter().sum();
                assert_eq!(total + st.deaths, n0 + st.births, "seed {seed} week {}", w + 1);
                // The model starts from the mid-year census at t = 0, so compare with the
                // census curve shifted by half a year.
                let t = (w + 1) as f64 * 7.0 / DAYS_PER_YEAR;
                let want = census(t + 0.5);
                worst = worst.max((total as f64 - want).abs() / want);
            }
        }
        // Poisson/binomial noise: sd of the births + deaths over 9 years ≈ sqrt(450,000) ≈ 700,
        // 0.06% of N; 0.3% is > 4 sd.
        assert!(worst < 0.003, "worst relative gap to the census {worst}");
    }

    #[test]
    fn rho_one_reports_true_incidence_and_rho_zero_none() {
        let m = model(settings(30), &flat(1, 2000.0, 100_000.0));
        let all = states(&m, &params(&[("rho", 1.0)]), 5);
        assert!(all.iter().all(|s| s.reported == s.incidence));
        assert!(all.iter().map(|s| s.incidence).sum::<u64>() > 1000, "an epidemic happened");
        let none = states(&m, &params(&[("rho", 0.0)]), 5);
        assert!(none.iter().all(|s| s.reported == 0));
        let out = m.simulate(&params(&[("rho", 1.0)]), 5).expect("runs");
        let want: Vec<i64> = all.iter().map(|s| s.incidence as i64).collect();
        assert_eq!(values(&out.tables[0]), want);
        let half = states(&m, &params(&[("rho", 0.5)]), 5);
        let (rep, inc): (u64, u64) =
            half.iter().fold((0, 0), |(r, i), s| (r + s.reported, i + s.incidence));
        // Binomial(inc, 0.5): sd sqrt(inc)/2; 5 sd.
        assert!(
            (rep as f64 - inc as f64 / 2.0).abs() < 2.5 * (inc as f64).sqrt(),
            "{rep} of {inc}"
        );
    }

    /// RK4 integration of the model's ODE limit at `1/substeps` days; returns the cumulative
    /// `E → I` flow at the end of every week `0 … weeks`.
    fn ode_cumulative_onsets(
        x0: [f64; 4],
        p: [f64; 4], // beta, sigma, gamma, amplitude
        births_per_day: f64,
        mu_per_day: f64,
        population: f64,
        weeks: u32,
        substeps: u32,
    ) -> Vec<f64> {
        let [beta, sigma, gamma, amplitude] = p;
        let deriv = |t: f64, x: &[f64; 5]| {
            let beta_t = beta * (1.0 + amplitude * (2.0 * PI * t / DAYS_PER_YEAR).cos());
            let inf = beta_t * x[2] / population * x[0];
            [
                births_per_day - inf - mu_per_day * x[0],
                inf - (sigma + mu_per_day) * x[1],
                sigma * x[1] - (gamma + mu_per_day) * x[2],
                gamma * x[2] - mu_per_day * x[3],
                sigma * x[1],
            ]
        };
        let step = |x: &[f64; 5], h: f64, d: &[f64; 5]| {
            let mut y = *x;
            for k in 0..5 {
                y[k] += h * d[k];
            }
            y
        };
        let h = 1.0 / f64::from(substeps);
        let mut x = [x0[0], x0[1], x0[2], x0[3], 0.0];
        let mut t = 0.0;
        let mut out = vec![0.0];
        for _ in 0..weeks {
            for _ in 0..7 * substeps {
                let k1 = deriv(t, &x);
                let k2 = deriv(t + h / 2.0, &step(&x, h / 2.0, &k1));
                let k3 = deriv(t + h / 2.0, &step(&x, h / 2.0, &k2));
                let k4 = deriv(t + h, &step(&x, h, &k3));
                for k in 0..5 {
                    x[k] += h / 6.0 * (k1[k] + 2.0 * k2[k] + 2.0 * k3[k] + k4[k]);
                }
                t += h;
            }
            out.push(x[4]);
        }
        out
    }

    #[test]
    fn mean_reported_cases_track_the_ode() {
        // N = 100,000 (census constant, births = μN), 60% susceptible, 50 exposed and 50
        // infectious; β = 0.8, σ = 0.2, γ = 0.25 per day (R0 ≈ 3.2), amplitude 0.3, ρ = 0.5;
        // dt = 0.1 day; 10 weeks (the first epidemic wave rising and peaking), 400 runs.
        // Tolerance: 3% of the ODE's peak weekly reported cases. The mean of 400 runs has an sd
        // of about sqrt(peak)/20 ≈ 1% there; the rest is the O(dt) bias of frozen rates and
        // the spread of stochastic take-off (slight, with 100 initial infections).
        let (n, mu, weeks) = (100_000.0, 0.02, 10);
        let mut s = settings(weeks);
        s.steps_per_day = 10;
        let m = model(s, &flat(1, mu * n, n));
        let p = params(&[]);
        let runs = 400;
        let mut mean = vec![0.0; weeks as usize];
        for seed in 0..runs {
            let out = m.simulate(&p, seed).expect("runs");
            for (acc, v) in mean.iter_mut().zip(values(&out.tables[0])) {
                *acc += v as f64 / f64::from(runs);
            }
        }
        let cumulative = ode_cumulative_onsets(
            [60_000.0, 50.0, 50.0, n - 60_100.0],
            [0.8, 0.2, 0.25, 0.3],
            mu * n / DAYS_PER_YEAR,
            mu / DAYS_PER_YEAR,
            n,
            weeks,
            100,
        );
        let expected: Vec<f64> = cumulative.windows(2).map(|w| 0.5 * (w[1] - w[0])).collect();
        let peak = expected.iter().cloned().fold(0.0, f64::max);
        assert!(peak > 1000.0, "the wave peaks within the horizon: {expected:?}");
        let mut worst: f64 = 0.0;
        for (week, (got, want)) in mean.iter().zip(&expected).enumerate() {
            worst = worst.max((got - want).abs() / peak);
            assert!(
                (got - want).abs() < 0.03 * peak,
                "week {}: mean {got:.1} vs ODE {want:.1} (peak {peak:.0})",
                week + 1
            );
        }
        eprintln!("seir_seasonal: worst |mean − ODE| / peak = {worst:.4}");
    }

    #[test]
    fn parameter_errors_name_the_parameter() {
        let m = model(settings(2), &flat(1, 2000.0, 100_000.0));
        let msg = |p: ParameterSet| match m.simulate(&p, 1) {
            Err(SimError::Model(msg)) => msg,
            other => panic!("expected a model error, got {other:?}"),
        };
        let m1 = msg(params(&[("rho", 1.5)]));
        assert!(m1.contains("`rho` is 1.5") && m1.contains("[0, 1]"), "{m1}");
        let m1 = msg(params(&[("amplitude", -0.1)]));
        assert!(m1.contains("`amplitude` is -0.1"), "{m1}");
        let m1 = msg(params(&[("sigma", -1.0)]));
        assert!(m1.contains("`sigma`") && m1.contains("≥ 0"), "{m1}");
        let m1 = msg(params(&[("s0", 0.7), ("e0", 0.2), ("i0", 0.2)]));
        assert!(m1.contains("`s0` + `e0` + `i0`") && m1.contains("> 1"), "{m1}");
        let mut p = params(&[]);
        p.insert("i0", ParamValue::Str("few".into()));
        let m1 = msg(p);
        assert!(m1.contains("`i0` is the string \"few\""), "{m1}");
        let p: ParameterSet = params(&[])
            .iter()
            .filter(|(k, _)| *k != "rho")
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let m1 = msg(p);
        assert!(m1.contains("`rho` is missing"), "{m1}");
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let d = flat(2, 2000.0, 100_000.0);
        let setting = |f: &dyn Fn(&mut SeirSeasonalSettings)| {
            let mut s = settings(10);
            f(&mut s);
            SeirSeasonal::with_demography(s, &d).err().map(|e| (e.setting, e.message))
        };
        assert_eq!(setting(&|_| {}), None);
        assert_eq!(setting(&|s| s.weeks = 0).map(|e| e.0), Some("weeks"));
        assert_eq!(setting(&|s| s.steps_per_day = 0).map(|e| e.0), Some("steps_per_day"));
        assert_eq!(setting(&|s| s.mu_per_year = -0.1).map(|e| e.0), Some("mu_per_year"));
        assert_eq!(setting(&|s| s.phase_days = f64::NAN).map(|e| e.0), Some("phase_days"));
        assert_eq!(
            setting(&|s| s.imported_infections = f64::INFINITY).map(|e| e.0),
            Some("imported_infections")
        );
        // 2000–2001 in the file: 105 weeks reach a week starting in 2002.
        assert_eq!(setting(&|s| s.weeks = 104), None);
        let (name, message) = setting(&|s| s.weeks = 106).expect("refused");
        assert_eq!(name, "demography");
        assert!(message.contains("covers 2000–2001") && message.contains("2000–2002"), "{message}");
        let (name, _) = setting(&|s| s.start_year = 1999).expect("refused");
        assert_eq!(name, "demography");
    }

    #[test]
    fn demography_file_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = |text: &str| {
            let path = dir.path().join("demography.csv");
            std::fs::write(&path, text).expect("write");
            Demography::read(&path)
        };
        let d = read("year,births,population\n2000,100,1000\n2001,200,3000\n").expect("valid");
        // Stray carriage returns, as in the shared London file, are whitespace.
        assert_eq!(
            d,
            read("year,births,population\r\n2000,100\r,1000\r\n2001,200\r,3000\r\n")
                .expect("valid")
        );
        assert_eq!(
            d,
            Demography {
                first_year: 2000,
                births: vec![100.0, 200.0],
                population: vec![1000.0, 3000.0]
            }
        );
        // Linear between mid-years, held outside; step: the calendar year's value.
        assert_eq!(d.at(&d.population, 2000.0, Interpolation::Linear), 1000.0);
        assert_eq!(d.at(&d.population, 2001.0, Interpolation::Linear), 2000.0);
        assert_eq!(d.at(&d.population, 2003.0, Interpolation::Linear), 3000.0);
        assert_eq!(d.at(&d.population, 2000.99, Interpolation::Step), 1000.0);
        assert_eq!(d.at(&d.population, 2001.0, Interpolation::Step), 3000.0);

        let message = |text: &str| {
            let e = read(text).expect_err("refused");
            assert_eq!(e.setting, "demography");
            e.message
        };
        let m = message("year,births\n2000,100\n");
        assert!(m.contains(":1: no column `population`"), "{m}");
        let m = message("year,births,population\n2000,100,1000\n2002,100,1000\n");
        assert!(m.contains(":3: year 2002") && m.contains("expected 2001"), "{m}");
        let m = message("year,births,population\n2000,lots,1000\n");
        assert!(m.contains(":2: column `births` is \"lots\""), "{m}");
        let m = message("year,births,population\n2000,100,0\n");
        assert!(m.contains(":2: population 0"), "{m}");
        let m = message("year,births,population\n");
        assert!(m.contains("no rows"), "{m}");
        let e = Demography::read(&dir.path().join("missing.csv")).expect_err("refused");
        assert!(e.message.contains("missing.csv") && e.message.contains("cannot read"), "{e}");
    }
}
