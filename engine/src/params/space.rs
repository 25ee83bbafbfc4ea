//! Named parameter spaces and the samplers that draw parameter sets from them.
//!
//! A space gives each parameter either a fixed value or a range:
//!
//! ```toml
//! [parameters]
//! sampler = "latin_hypercube"   # grid | uniform | latin_hypercube | sobol
//! count = 1000                  # grid takes `points_per_axis` instead
//! seed = 7                      # optional; default: the job seed
//! [parameters.space]
//! beta = { min = 0.1, max = 3.0, scale = "log" }
//! gamma = { min = 0.05, max = 0.5 }
//! N = 763.0                     # fixed: the same value in every set
//! ```
//!
//! A sampler produces points of the unit hypercube `[0, 1]^d`, one axis per range parameter in
//! sorted name order, each then mapped onto its range ([`Scale`]). The order of the points is
//! deterministic for a given seed and is the order of the sweep.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{EngineError, Result};
use crate::params::Sweep;

/// Largest number of parameter sets a space may produce (grid product or `count`).
///
/// A space's sets are computed on demand ([`SpacePoints`]), so the limit is not memory: it
/// keeps a sweep's positions in 32 bits (a `latin_hypercube` permutation is `u32`) and a run
/// to a size whose outputs one machine writes in hours. Larger studies are split into jobs
/// (different `seed`s) or shards.
pub const MAX_POINTS: u64 = 10_000_000;

/// Largest number of range parameters the `sobol` sampler supports (a limit of `sobol_burley`).
pub const MAX_SOBOL_DIMENSIONS: usize = 256;

/// Largest `count` the `sobol` sampler supports: `sobol_burley`'s sequence has 2^16 points
/// (past them it would repeat points, which simsweep refuses rather than caps).
pub const MAX_SOBOL_POINTS: u64 = 1 << 16;

/// The space form of a job's `[parameters]` section: named parameters and a sampler.
///
/// See the [module documentation](self) for the TOML.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpaceSpec {
    /// Parameter name → fixed value or range.
    #[serde(default)]
    pub space: BTreeMap<String, SpaceEntry>,
    /// How points are drawn; required when at least one parameter is a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerKind>,
    /// Number of parameter sets, for `uniform`, `latin_hypercube` and `sobol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Values per range parameter, ends included, for `grid`; the sweep has their product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_per_axis: Option<u64>,
    /// Sampler seed; default: the job's `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// One entry of a space: a fixed number or a range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum SpaceEntry {
    /// The same value in every parameter set (`beta = 2.0`).
    Fixed(f64),
    /// A range sampled by the sampler (`beta = { min = 0.1, max = 2.0 }`).
    Range(RangeSpec),
}

// Hand-written rather than `#[serde(untagged)]`: untagged enums replace the inner error (e.g.
// "unknown field `mx`, expected one of `min`, `max`, `scale`") with "did not match any variant".
impl<'de> serde::Deserialize<'de> for SpaceEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;

        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = SpaceEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number (fixed value) or a table `{ min, max, scale }` (range)")
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SpaceEntry, E> {
                Ok(SpaceEntry::Fixed(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SpaceEntry, E> {
                Ok(SpaceEntry::Fixed(v as f64))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SpaceEntry, E> {
                Ok(SpaceEntry::Fixed(v as f64))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SpaceEntry, A::Error> {
                let range = serde::Deserialize::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(SpaceEntry::Range(range))
            }
        }

        deserializer.deserialize_any(EntryVisitor)
    }
}

/// A range of a space.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Lower end, included.
    pub min: f64,
    /// Upper end, included (grid) or approached (the other samplers).
    pub max: f64,
    /// How unit-interval values map onto the range (default `linear`).
    #[serde(default)]
    pub scale: Scale,
}

/// How a unit-interval value `u` maps onto `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// `min + u·(max − min)`.
    #[default]
    Linear,
    /// `exp(ln min + u·(ln max − ln min))`; requires `min > 0`.
    Log,
}

impl RangeSpec {
    /// Maps `u` in `[0, 1]` onto the range. `u = 0` gives exactly `min` and `u = 1` exactly
    /// `max` (the formulas alone can be off by one ulp there, which would change `param_id`s).
    pub fn map(&self, u: f64) -> f64 {
        if u <= 0.0 {
            return self.min;
        }
        if u >= 1.0 {
            return self.max;
        }
        match self.scale {
            Scale::Linear => self.min + u * (self.max - self.min),
            Scale::Log => {
                let (lo, hi) = (self.min.ln(), self.max.ln());
                (lo + u * (hi - lo)).exp()
            }
        }
    }
}

/// The sampler of a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Full factorial grid, `points_per_axis` values per axis including both ends (one value:
    /// the midpoint), row-major with the last axis (in name order) varying fastest.
    Grid,
    /// Independent uniform draws from ChaCha8 seeded with the sampler seed, point by point,
    /// axis by axis within a point.
    Uniform,
    /// Latin hypercube (McKay, Beckman & Conover 1979, Technometrics 21(2)): on each axis, a
    /// random permutation of the `count` strata and a uniform offset within each stratum.
    LatinHypercube,
    /// Owen-scrambled Sobol sequence (`sobol_burley`), the sampler seed as scramble seed.
    Sobol,
}

impl SamplerKind {
    fn name(self) -> &'static str {
        match self {
            SamplerKind::Grid => "grid",
            SamplerKind::Uniform => "uniform",
            SamplerKind::LatinHypercube => "latin_hypercube",
            SamplerKind::Sobol => "sobol",
        }
    }
}

impl ParameterSpaceSpec {
    /// Names of the space's parameters, sorted.
    pub fn parameter_names(&self) -> Vec<String> {
        self.space.keys().cloned().collect()
    }

    /// Validates the space and draws its parameter sets: the sweep, in sampler order.
    ///
    /// `job_seed` is the sampler seed when the space has none; `file` is the job file, for
    /// errors. Every parameter of the space is a `Float` column: a fixed value repeated, a
    /// range mapped from its axis of the sampler's points (column by column, never as
    /// parameter sets).
    ///
    /// # Errors
    /// [`EngineError::SpecInvalid`] naming the field (`parameters.space.beta.min`,
    /// `parameters.count`, ...) for: an empty space; a non-finite fixed value or bound; an
    /// inverted (`min > max`) or empty (`min == max`) range; a log range with `min <= 0`; a
    /// missing sampler; `count` with `grid` or `points_per_axis` with the others; a missing or
    /// zero `count`/`points_per_axis`; more than [`MAX_POINTS`] points; a `sobol` space with
    /// more than [`MAX_SOBOL_DIMENSIONS`] ranges, more than [`MAX_SOBOL_POINTS`] points or a seed that does not fit in 32 bits; more
    /// than one set from a space without ranges; a range whose mapped values overflow to
    /// infinity (`parameters.space.<name>`).
    pub fn sweep(&self, job_seed: u64, file: &Path) -> Result<Sweep> {
        let invalid = |field: String, message: String| EngineError::SpecInvalid {
            file: file.to_path_buf(),
            field,
            message,
        };
        if self.space.is_empty() {
            return Err(invalid(
                "parameters.space".into(),
                "the space has no parameters; give each model parameter a value \
                 (`beta = 2.0`) or a range (`beta = { min = 0.1, max = 2.0 }`)"
                    .into(),
            ));
        }
        let mut dims = 0;
        for (name, entry) in &self.space {
            match entry {
                SpaceEntry::Fixed(v) => {
                    if !v.is_finite() {
                        return Err(invalid(
                            format!("parameters.space.{name}"),
                            format!("fixed value {v} is not a finite number; give a real number"),
                        ));
                    }
                }
                SpaceEntry::Range(range) => {
                    check_range(name, range).map_err(|(field, message)| invalid(field, message))?;
                    dims += 1;
                }
            }
        }

        let seed = self.seed.unwrap_or(job_seed);
        let seed_field = if self.seed.is_some() { "parameters.seed" } else { "seed" };
        let count = self.point_count(dims).map_err(|(f, m)| invalid(f, m))?;
        let unit = match self.sampler {
            Some(sampler) if dims > 0 => match sampler {
                SamplerKind::Grid => {
                    UnitPoints::Grid { per_axis: self.points_per_axis.unwrap_or(1) }
                }
                SamplerKind::Uniform => UnitPoints::Uniform { seed },
                SamplerKind::LatinHypercube => latin_hypercube_strata(count, dims, seed),
                SamplerKind::Sobol => {
                    if count > MAX_SOBOL_POINTS {
                        return Err(invalid(
                            "parameters.count".into(),
                            format!(
                                "sobol gives at most {MAX_SOBOL_POINTS} distinct points, {count} \
                                 were asked for; use latin_hypercube or uniform (up to \
                                 {MAX_POINTS}), or split the study into sobol jobs with \
                                 different `seed`s"
                            ),
                        ));
                    }
                    if dims > MAX_SOBOL_DIMENSIONS {
                        return Err(invalid(
                            "parameters.sampler".into(),
                            format!(
                                "sobol supports at most {MAX_SOBOL_DIMENSIONS} ranges, the space \
                                 has {dims}; use latin_hypercube or uniform"
                            ),
                        ));
                    }
                    let seed = u32::try_from(seed).map_err(|_| {
                        invalid(
                            seed_field.into(),
                            format!(
                                "sobol takes a 32-bit scramble seed, {seed} is larger than {}; \
                                 use a smaller seed",
                                u32::MAX
                            ),
                        )
                    })?;
                    UnitPoints::Sobol { seed }
                }
            },
            // No ranges (`point_count` refused ranges without a sampler, and more than one
            // set without ranges): the one set of fixed values.
            _ => UnitPoints::Single,
        };

        // Range `axis` (in name order) is coordinate `axis` of the sampler's points.
        let mut axis = 0;
        let entries = self
            .space
            .iter()
            .map(|(_, entry)| match entry {
                SpaceEntry::Fixed(v) => PointEntry::Fixed(*v),
                SpaceEntry::Range(range) => {
                    axis += 1;
                    PointEntry::Range { range: *range, axis: axis - 1 }
                }
            })
            .collect();
        // The seed as it determines the sets: a grid's and a fixed space's do not use one.
        let mut resolved = self.clone();
        resolved.seed = match unit {
            UnitPoints::Single | UnitPoints::Grid { .. } => None,
            _ => Some(seed),
        };
        let description = format!(
            "{} sampler_algorithms={SAMPLER_ALGORITHMS}",
            serde_json::to_string(&resolved).unwrap_or_else(|e| format!("<{e}>"))
        );
        let points = SpacePoints { entries, unit, dims, count, description };
        Ok(Sweep::from_space(self.parameter_names(), points))
    }

    /// The number of points the sampler settings ask for, after checking them.
    fn point_count(&self, dims: usize) -> std::result::Result<u64, (String, String)> {
        let Some(sampler) = self.sampler else {
            if dims > 0 {
                return Err((
                    "parameters.sampler".into(),
                    "the space has ranges but no sampler; add `sampler = \"grid\"`, \
                     \"uniform\", \"latin_hypercube\" or \"sobol\""
                        .into(),
                ));
            }
            if self.count.is_some() || self.points_per_axis.is_some() {
                let field = if self.count.is_some() { "count" } else { "points_per_axis" };
                return Err((
                    format!("parameters.{field}"),
                    "every parameter is fixed, so the space has exactly one set; remove \
                     this field or make a parameter a range"
                        .into(),
                ));
            }
            return Ok(1);
        };
        let name = sampler.name();
        let count = if sampler == SamplerKind::Grid {
            if self.count.is_some() {
                return Err((
                    "parameters.count".into(),
                    "the grid sampler takes `points_per_axis` (values per range, the sweep has \
                     their product), not `count`; replace `count` with `points_per_axis`"
                        .into(),
                ));
            }
            let per_axis = match self.points_per_axis {
                None => {
                    return Err((
                        "parameters.points_per_axis".into(),
                        "the grid sampler needs `points_per_axis` (values per range, ends \
                         included); add e.g. `points_per_axis = 10`"
                            .into(),
                    ))
                }
                Some(0) => {
                    return Err((
                        "parameters.points_per_axis".into(),
                        "must be at least 1 (1 gives the midpoint of each range)".into(),
                    ))
                }
                Some(n) => n,
            };
            let mut total: u64 = 1;
            for _ in 0..dims {
                total = total.saturating_mul(per_axis);
            }
            if total > MAX_POINTS {
                return Err((
                    "parameters.points_per_axis".into(),
                    format!(
                        "{per_axis} points on each of {dims} ranges make {} sets, more than \
                         the {MAX_POINTS} allowed; lower `points_per_axis` or use \
                         latin_hypercube or sobol with a `count`",
                        if total == u64::MAX { "over 2^64".to_string() } else { total.to_string() }
                    ),
                ));
            }
            total
        } else {
            if self.points_per_axis.is_some() {
                return Err((
                    "parameters.points_per_axis".into(),
                    format!(
                        "the {name} sampler takes `count` (number of parameter sets), not \
                         `points_per_axis` (grid only); replace it with `count`"
                    ),
                ));
            }
            match self.count {
                None => {
                    return Err((
                        "parameters.count".into(),
                        format!("the {name} sampler needs `count`, the number of parameter sets"),
                    ))
                }
                Some(0) => return Err(("parameters.count".into(), "must be at least 1".into())),
                Some(n) if n > MAX_POINTS => {
                    return Err((
                        "parameters.count".into(),
                        format!(
                            "{n} is more than the {MAX_POINTS} parameter sets allowed; split \
                             the study into several jobs"
                        ),
                    ))
                }
                Some(n) => n,
            }
        };
        if dims == 0 && count > 1 {
            return Err((
                format!(
                    "parameters.{}",
                    if sampler == SamplerKind::Grid { "points_per_axis" } else { "count" }
                ),
                format!(
                    "every parameter is fixed, so all {count} sets would be identical; make a \
                     parameter a range or remove the sampler"
                ),
            ));
        }
        Ok(count)
    }
}

fn check_range(name: &str, r: &RangeSpec) -> std::result::Result<(), (String, String)> {
    let field = |f: &str| format!("parameters.space.{name}.{f}");
    if !r.min.is_finite() {
        return Err((
            field("min"),
            format!("{} is not a finite number; give a real number", r.min),
        ));
    }
    if !r.max.is_finite() {
        return Err((
            field("max"),
            format!("{} is not a finite number; give a real number", r.max),
        ));
    }
    if r.min > r.max {
        return Err((
            field("min"),
            format!(
                "min {} is greater than max {}: the range is inverted; swap them",
                r.min, r.max
            ),
        ));
    }
    if r.min == r.max {
        return Err((
            format!("parameters.space.{name}"),
            format!(
                "min and max are both {}: the range is empty; for a fixed value write \
                 `{name} = {:?}` instead",
                r.min, r.min
            ),
        ));
    }
    if r.scale == Scale::Log && r.min <= 0.0 {
        return Err((
            field("min"),
            format!(
                "a log-scale range needs min > 0, got {}; raise min or use scale = \"linear\"",
                r.min
            ),
        ));
    }
    // Every mapped value is finite when the width is (linear: `min + u·(max − min)`) and the
    // value just below `max` is (log: `exp` may round up past `f64::MAX`).
    if !(r.max - r.min).is_finite() || !r.map(next_down(1.0)).is_finite() {
        return Err((
            format!("parameters.space.{name}"),
            format!(
                "the range [{}, {}] is too wide: its mapped values overflow to infinity, which \
                 has no param_id; narrow it",
                r.min, r.max
            ),
        ));
    }
    Ok(())
}

/// The algorithms behind the samplers' points, part of a generated sweep's description (and
/// so of the spec hash): changing how any sampler computes its points must change this text.
const SAMPLER_ALGORITHMS: &str = "grid1,uniform_chacha8_1,lhs_chacha8_1,sobol_burley0.5";

/// A space's parameter sets, computed point by point on demand instead of held in memory: set
/// `i` costs the same whatever the size of the sweep, and so does starting a run.
///
/// Equal to the materialising samplers ([`grid`], [`uniform`], [`latin_hypercube`], [`sobol`])
/// point for point, bit for bit (tests compare whole sweeps). Memory: a few hundred bytes,
/// except for `latin_hypercube`, whose per-axis permutations of the strata are held (4 bytes
/// per set per range, computed at the start: one shuffle per range).
#[derive(Debug, Clone, PartialEq)]
pub struct SpacePoints {
    /// One entry per parameter, in name order (the sweep's columns).
    entries: Vec<PointEntry>,
    /// The sampler's points of the unit hypercube.
    unit: UnitPoints,
    /// Number of ranges (axes).
    dims: usize,
    /// Number of sets.
    count: u64,
    /// Canonical text that determines every set: the space with its resolved seed, and
    /// [`SAMPLER_ALGORITHMS`].
    description: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PointEntry {
    Fixed(f64),
    Range { range: RangeSpec, axis: usize },
}

#[derive(Debug, Clone, PartialEq)]
enum UnitPoints {
    /// No ranges: one set of fixed values.
    Single,
    /// [`grid`]: point `i` in mixed radix `per_axis`, last axis fastest.
    Grid { per_axis: u64 },
    /// [`uniform`]: value `k = i·dims + axis` of the stream is the `f64` drawn from ChaCha8
    /// words `2k, 2k + 1`.
    Uniform { seed: u64 },
    /// [`latin_hypercube`]: each axis's stratum permutation, and the ChaCha8 word position of
    /// that axis's first offset draw (offset `i` is at `word_pos + 2i`).
    LatinHypercube { seed: u64, strata: Vec<Vec<u32>>, word_pos: Vec<u128> },
    /// [`sobol`]: `sobol_burley::sample(i, axis, seed)`.
    Sobol { seed: u32 },
}

impl SpacePoints {
    /// Number of sets.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when there are no sets (never, for a checked space).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Canonical text that determines every set (hashed into the spec hash).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Number of ranges.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Set `i`'s values, one per parameter in name order, into `out` (cleared first).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn point_into(&self, i: u64, out: &mut Vec<f64>) {
        assert!(i < self.count, "parameter set {i} of a space of {} sets", self.count);
        let mut unit = [0.0; 16];
        let mut unit_heap = Vec::new();
        let unit: &mut [f64] = if self.dims <= unit.len() {
            &mut unit[..self.dims]
        } else {
            unit_heap.resize(self.dims, 0.0);
            &mut unit_heap
        };
        self.unit_point(i, unit);
        out.clear();
        out.extend(self.entries.iter().map(|entry| match *entry {
            PointEntry::Fixed(v) => v,
            PointEntry::Range { range, axis } => range.map(unit[axis]),
        }));
    }

    /// Point `i` of the unit hypercube, one coordinate per axis.
    fn unit_point(&self, i: u64, unit: &mut [f64]) {
        let dims = self.dims as u128;
        match &self.unit {
            UnitPoints::Single => {}
            UnitPoints::Grid { per_axis } => {
                let mut rest = i;
                for u in unit.iter_mut().rev() {
                    *u = grid_value(rest % per_axis, *per_axis);
                    rest /= per_axis;
                }
            }
            UnitPoints::Uniform { seed } => {
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                rng.set_word_pos(2 * u128::from(i) * dims);
                for u in unit.iter_mut() {
                    *u = rng.random();
                }
            }
            UnitPoints::LatinHypercube { seed, strata, word_pos } => {
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                for (axis, u) in unit.iter_mut().enumerate() {
                    rng.set_word_pos(word_pos[axis] + 2 * u128::from(i));
                    let offset: f64 = rng.random();
                    *u = stratum_point(
                        strata[axis][i as usize] as usize,
                        offset,
                        self.count as usize,
                    );
                }
            }
            UnitPoints::Sobol { seed } => {
                for (axis, u) in unit.iter_mut().enumerate() {
                    *u = f64::from(sobol_burley::sample(i as u32, axis as u32, *seed));
                }
            }
        }
    }

    /// The corners of the box that holds every set (each range at its lowest and highest
    /// sampled end; fixed values as they are), as value vectors in name order; `None` when
    /// there are more than 2^`max_dims` of them.
    ///
    /// For `grid` the corners are sets of the sweep (its extreme values); for the other
    /// samplers they are the ranges' ends, which every set lies between.
    pub fn corners(&self, max_dims: usize) -> Option<Vec<Vec<f64>>> {
        if self.dims > max_dims {
            return None;
        }
        let ends = |range: &RangeSpec| match self.unit {
            UnitPoints::Grid { per_axis: 1 } => [range.map(0.5), range.map(0.5)],
            _ => [range.min, range.max],
        };
        let corners = (0..1usize << self.dims)
            .map(|corner| {
                self.entries
                    .iter()
                    .map(|entry| match entry {
                        PointEntry::Fixed(v) => *v,
                        PointEntry::Range { range, axis } => ends(range)[(corner >> axis) & 1],
                    })
                    .collect()
            })
            .collect();
        Some(corners)
    }

    /// True when no two sets can be equal (or only with a probability below 2^-40): then the
    /// sweep needs no duplicate check. `grid`: the mapped values of each axis are distinct.
    /// `latin_hypercube`: on some axis every stratum spans at least 64 representable values,
    /// so points of different strata cannot round to one value. `uniform`: the axes' combined
    /// resolution makes a collision among the sets less likely than 2^-40 (birthday bound).
    /// `sobol`: never claimed (its sweeps are small; they are checked).
    pub fn cannot_repeat(&self) -> bool {
        let ranges = || {
            self.entries.iter().filter_map(|e| match e {
                PointEntry::Range { range, .. } => Some(range),
                PointEntry::Fixed(_) => None,
            })
        };
        match &self.unit {
            UnitPoints::Single => true,
            UnitPoints::Grid { per_axis } => ranges().all(|range| {
                let mut previous = None;
                (0..*per_axis).all(|k| {
                    let v = range.map(grid_value(k, *per_axis));
                    let increasing = previous.is_none_or(|p| v > p);
                    previous = Some(v);
                    increasing
                })
            }),
            UnitPoints::LatinHypercube { .. } => {
                ranges().any(|range| resolution(range) >= 64.0 * self.count as f64)
            }
            UnitPoints::Uniform { .. } => {
                let bits: f64 = ranges().map(|r| resolution(r).min(2f64.powi(53)).log2()).sum();
                bits >= 2.0 * (self.count as f64).log2() + 40.0
            }
            UnitPoints::Sobol { .. } => false,
        }
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        let strata = match &self.unit {
            UnitPoints::LatinHypercube { strata, word_pos, .. } => {
                strata.iter().map(|s| s.capacity() * 4).sum::<usize>() + word_pos.capacity() * 16
            }
            _ => 0,
        };
        self.entries.capacity() * std::mem::size_of::<PointEntry>()
            + self.description.capacity()
            + strata
    }
}

/// Unit value `k` of a grid axis of `per_axis` values (ends included; one value: 0.5).
fn grid_value(k: u64, per_axis: u64) -> f64 {
    if per_axis == 1 {
        0.5
    } else {
        k as f64 / (per_axis - 1) as f64
    }
}

/// The point of stratum `stratum` (of `count`) at `offset` in `[0, 1)` within it, kept inside
/// the stratum where rounding would reach its upper end.
fn stratum_point(stratum: usize, offset: f64, count: usize) -> f64 {
    ((stratum as f64 + offset) / count as f64).min(next_down((stratum + 1) as f64 / count as f64))
}

/// Roughly how many distinct `f64` values `range.map` can give: the width over the spacing of
/// doubles at its larger end (for a log range, of the logarithms `map` interpolates).
fn resolution(range: &RangeSpec) -> f64 {
    let eps = f64::EPSILON;
    match range.scale {
        Scale::Linear => (range.max - range.min) / (range.min.abs().max(range.max.abs()) * eps),
        Scale::Log => {
            let (lo, hi) = (range.min.ln(), range.max.ln());
            (hi - lo) / (lo.abs().max(hi.abs()).max(1.0) * eps)
        }
    }
}

/// The strata permutations of [`latin_hypercube`] and the stream position of each axis's
/// offsets, drawn exactly as it draws them.
fn latin_hypercube_strata(count: u64, dims: usize, seed: u64) -> UnitPoints {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut strata = Vec::with_capacity(dims);
    let mut word_pos = Vec::with_capacity(dims);
    for _ in 0..dims {
        // `count` ≤ MAX_POINTS < 2^32. The shuffle depends on the length only, not on the type.
        let mut perm: Vec<u32> = (0..count as u32).collect();
        perm.shuffle(&mut rng);
        let pos = rng.get_word_pos();
        // `latin_hypercube` then draws one f64 (two words) per point.
        rng.set_word_pos(pos + 2 * u128::from(count));
        strata.push(perm);
        word_pos.push(pos);
    }
    UnitPoints::LatinHypercube { seed, strata, word_pos }
}

/// Full factorial grid over `[0, 1]^dims`, `per_axis` values per axis including both ends
/// (`per_axis = 1`: 0.5), row-major with the last axis varying fastest.
///
/// Returns `per_axis^dims` points flattened point by point (`dims` values each); one empty
/// point when `dims = 0`.
pub fn grid(per_axis: usize, dims: usize) -> Vec<f64> {
    let values: Vec<f64> = (0..per_axis).map(|k| grid_value(k as u64, per_axis as u64)).collect();
    let total = (0..dims).fold(1usize, |acc, _| acc.saturating_mul(per_axis));
    let mut out = Vec::with_capacity(total.saturating_mul(dims));
    let mut index = vec![0usize; dims];
    for _ in 0..total {
        out.extend(index.iter().map(|&k| values[k]));
        // Odometer increment, last axis fastest.
        for axis in (0..dims).rev() {
            index[axis] += 1;
            if index[axis] < per_axis {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// `count` independent uniform points of `[0, 1)^dims` from ChaCha8 seeded with `seed`, drawn
/// point by point and axis by axis within a point; flattened (`dims` values per point).
pub fn uniform(count: usize, dims: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count * dims).map(|_| rng.random::<f64>()).collect()
}

/// A Latin hypercube sample of `count` points of `[0, 1)^dims` (McKay, Beckman & Conover 1979).
///
/// With ChaCha8 seeded with `seed`, for each axis in turn: shuffle the strata `0..count`
/// (Fisher–Yates), then for point `i` draw `v ~ U[0, 1)` and take `(perm[i] + v) / count`. Every
/// axis therefore has exactly one point in each stratum `[k/count, (k+1)/count)`. Flattened
/// point by point (`dims` values per point).
pub fn latin_hypercube(count: usize, dims: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0.0; count * dims];
    let mut perm: Vec<usize> = Vec::with_capacity(count);
    for axis in 0..dims {
        perm.clear();
        perm.extend(0..count);
        perm.shuffle(&mut rng);
        for (i, &stratum) in perm.iter().enumerate() {
            let v: f64 = rng.random();
            out[i * dims + axis] = stratum_point(stratum, v, count);
        }
    }
    out
}

/// The largest `f64` below a positive finite `x`.
fn next_down(x: f64) -> f64 {
    f64::from_bits(x.to_bits() - 1)
}

/// The first `count` points of the Owen-scrambled Sobol sequence in `dims ≤ 256` dimensions,
/// scramble seed `seed` (`sobol_burley::sample(i, d, seed)`); flattened point by point.
/// `count` must be at most 2^32 (the sequence index is 32-bit).
///
/// `sobol_burley` computes in `f32`; values are widened to `f64`.
pub fn sobol(count: usize, dims: usize, seed: u32) -> Vec<f64> {
    let mut out = Vec::with_capacity(count * dims);
    for i in 0..count {
        for d in 0..dims {
            out.push(f64::from(sobol_burley::sample(i as u32, d as u32, seed)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamColumn, ParamKind, ParamValue, ParameterSet};
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn range(min: f64, max: f64) -> SpaceEntry {
        SpaceEntry::Range(RangeSpec { min, max, scale: Scale::Linear })
    }

    fn spec(entries: &[(&str, SpaceEntry)], sampler: Option<SamplerKind>) -> ParameterSpaceSpec {
        ParameterSpaceSpec {
            space: entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            sampler,
            ..Default::default()
        }
    }

    fn err_text(s: &ParameterSpaceSpec) -> String {
        let e = s.sweep(0, &PathBuf::from("job.toml")).unwrap_err();
        assert!(matches!(e, EngineError::SpecInvalid { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn grid_order_last_axis_fastest() {
        let u = grid(3, 2);
        let pts: Vec<&[f64]> = u.chunks(2).collect();
        assert_eq!(pts.len(), 9);
        assert_eq!(pts[0], &[0.0, 0.0]);
        assert_eq!(pts[1], &[0.0, 0.5]);
        assert_eq!(pts[2], &[0.0, 1.0]);
        assert_eq!(pts[3], &[0.5, 0.0]);
        assert_eq!(pts[8], &[1.0, 1.0]);
        assert_eq!(grid(1, 3), vec![0.5, 0.5, 0.5]);
    }

    #[test]
    fn grid_maps_ranges_and_fixed_values() {
        let mut s = spec(
            &[
                ("gamma", range(0.1, 0.3)),
                ("beta", SpaceEntry::Range(RangeSpec { min: 1.0, max: 100.0, scale: Scale::Log })),
                ("n", SpaceEntry::Fixed(7.0)),
            ],
            Some(SamplerKind::Grid),
        );
        s.points_per_axis = Some(3);
        let pts = s.sweep(0, Path::new("job.toml")).unwrap();
        assert_eq!(pts.len(), 9);
        // Axes in name order: beta (log 1..100) then gamma, gamma fastest.
        let get = |i: usize, n: &str| pts.params(i).get_f64(n).unwrap();
        assert_eq!((get(0, "beta"), get(0, "gamma"), get(0, "n")), (1.0, 0.1, 7.0));
        assert_eq!(get(1, "beta"), 1.0);
        assert!((get(1, "gamma") - 0.2).abs() < 1e-15);
        assert_eq!(get(2, "gamma"), 0.3);
        assert!((get(3, "beta") - 10.0).abs() < 1e-12);
        assert_eq!(get(8, "beta"), 100.0);
    }

    #[test]
    fn latin_hypercube_one_point_per_stratum() {
        let n = 17;
        let u = latin_hypercube(n, 3, 42);
        for axis in 0..3 {
            let mut strata: Vec<usize> =
                (0..n).map(|i| (u[i * 3 + axis] * n as f64).floor() as usize).collect();
            strata.sort_unstable();
            assert_eq!(strata, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn uniform_deterministic_and_in_unit_cube() {
        let a = uniform(50, 2, 9);
        assert_eq!(a, uniform(50, 2, 9));
        assert_ne!(a, uniform(50, 2, 10));
        assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn sobol_deterministic_per_seed() {
        let a = sobol(64, 3, 1);
        assert_eq!(a, sobol(64, 3, 1));
        assert_ne!(a, sobol(64, 3, 2));
        assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn sampler_seed_defaults_to_job_seed() {
        let mut s = spec(&[("beta", range(0.0, 1.0))], Some(SamplerKind::Sobol));
        s.count = Some(8);
        let p = Path::new("job.toml");
        let by_job = s.sweep(5, p).unwrap();
        s.seed = Some(5);
        assert_eq!(s.sweep(123, p).unwrap(), by_job);
        s.seed = Some(6);
        assert_ne!(s.sweep(5, p).unwrap(), by_job);
    }

    #[test]
    fn fixed_only_space_gives_one_set() {
        let s = spec(&[("beta", SpaceEntry::Fixed(2.0))], None);
        let pts = s.sweep(0, Path::new("job.toml")).unwrap();
        assert_eq!(pts.len(), 1);
        assert_eq!(pts.params(0).get("beta"), Some(&ParamValue::Float(2.0)));
    }

    #[test]
    fn columns_hold_the_sampler_points_with_their_ids() {
        let log = SpaceEntry::Range(RangeSpec { min: 0.01, max: 3.0, scale: Scale::Log });
        let mut s = spec(
            &[("gamma", range(0.1, 0.5)), ("N", SpaceEntry::Fixed(763.0)), ("beta", log)],
            Some(SamplerKind::LatinHypercube),
        );
        s.count = Some(40);
        let sweep = s.sweep(3, Path::new("job.toml")).unwrap();
        assert_eq!(sweep.len(), 40);
        assert_eq!(
            sweep.columns(),
            [
                ("N".to_string(), ParamKind::Float),
                ("beta".to_string(), ParamKind::Float),
                ("gamma".to_string(), ParamKind::Float),
            ]
        );
        // The ranges' unit coordinates, by inverting the maps by hand: beta log-scale on
        // [0.01, 3], gamma linear on [0.1, 0.5].
        let unit = |set: &ParameterSet| {
            let beta = set.get_f64("beta").unwrap();
            let gamma = set.get_f64("gamma").unwrap();
            ((beta / 0.01).ln() / (3.0_f64 / 0.01).ln(), (gamma - 0.1) / 0.4)
        };
        // The Latin hypercube law: on each axis, exactly one of the 40 sets in each stratum
        // [k/40, (k+1)/40); N fixed; each set's id is the id of its values.
        let mut strata = (Vec::new(), Vec::new());
        for i in 0..40 {
            let set = sweep.params(i);
            assert_eq!(set.get_f64("N"), Some(763.0));
            let (u_beta, u_gamma) = unit(&set);
            strata.0.push((u_beta * 40.0).floor() as usize);
            strata.1.push((u_gamma * 40.0).floor() as usize);
            assert_eq!(sweep.param_id(i), crate::identity::param_id(&set).unwrap(), "set {i}");
            assert_eq!(sweep.fixed_seed(i), None);
        }
        strata.0.sort_unstable();
        strata.1.sort_unstable();
        assert_eq!(strata.0, (0..40).collect::<Vec<_>>());
        assert_eq!(strata.1, (0..40).collect::<Vec<_>>());
        // Sobol: point i, axis d (beta 0, gamma 1) is sobol_burley's sample(i, d, seed), the
        // reference implementation, mapped onto the ranges.
        s.sampler = Some(SamplerKind::Sobol);
        let sweep = s.sweep(3, Path::new("job.toml")).unwrap();
        for i in 0..40u32 {
            let (u_beta, u_gamma) = unit(&sweep.params(i as usize));
            let want = |d| f64::from(sobol_burley::sample(i, d, 3));
            assert!((u_beta - want(0)).abs() < 1e-12, "set {i}: beta at {u_beta}, {}", want(0));
            assert!((u_gamma - want(1)).abs() < 1e-12, "set {i}: gamma at {u_gamma}, {}", want(1));
        }
    }

    /// The sweep of `s` as the materialising samplers give it: every set's values in name
    /// order, flattened.
    fn materialised(s: &ParameterSpaceSpec, job_seed: u64) -> Vec<f64> {
        let dims = s.space.values().filter(|e| matches!(e, SpaceEntry::Range(_))).count();
        let seed = s.seed.unwrap_or(job_seed);
        let count = s.count.unwrap_or(0) as usize;
        let unit = match s.sampler.unwrap() {
            SamplerKind::Grid => grid(s.points_per_axis.unwrap() as usize, dims),
            SamplerKind::Uniform => uniform(count, dims, seed),
            SamplerKind::LatinHypercube => latin_hypercube(count, dims, seed),
            SamplerKind::Sobol => sobol(count, dims, seed as u32),
        };
        let mut out = Vec::new();
        for point in unit.chunks(dims) {
            let mut axis = 0;
            for entry in s.space.values() {
                out.push(match entry {
                    SpaceEntry::Fixed(v) => *v,
                    SpaceEntry::Range(r) => {
                        axis += 1;
                        r.map(point[axis - 1])
                    }
                });
            }
        }
        out
    }

    /// Every set of a space, computed on demand, is bit for bit the set the materialising
    /// sampler gives (the samplers before sets were computed on demand): whole sweeps, each
    /// sampler, several sizes and seeds, log and linear ranges, a fixed value in between.
    #[test]
    fn sets_on_demand_equal_the_materialised_samplers() {
        let log = SpaceEntry::Range(RangeSpec { min: 0.01, max: 3.0, scale: Scale::Log });
        for (sampler, sizes) in [
            (SamplerKind::Grid, vec![1u64, 2, 7]),
            (SamplerKind::Uniform, vec![1, 5, 333]),
            (SamplerKind::LatinHypercube, vec![1, 2, 31, 1000]),
            (SamplerKind::Sobol, vec![1, 64, 100]),
        ] {
            for size in sizes {
                for seed in [0u64, 7, 1 << 31] {
                    let mut s = spec(
                        &[
                            ("a", range(-1.0, 2.0)),
                            ("b", log.clone()),
                            ("c", SpaceEntry::Fixed(763.0)),
                            ("d", range(0.0, 1e-3)),
                        ],
                        Some(sampler),
                    );
                    if sampler == SamplerKind::Grid {
                        s.points_per_axis = Some(size);
                    } else {
                        s.count = Some(size);
                    }
                    let sweep = s.sweep(seed, Path::new("job.toml")).unwrap();
                    let want = materialised(&s, seed);
                    let got: Vec<f64> = sweep
                        .columns_of(0..sweep.len())
                        .into_iter()
                        .map(|c| match c {
                            ParamColumn::Float(v) => v,
                            other => panic!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .iter()
                        .fold(vec![Vec::new(); sweep.len()], |mut rows, column| {
                            for (row, v) in rows.iter_mut().zip(column) {
                                row.push(*v);
                            }
                            rows
                        })
                        .concat();
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{sampler:?} size {size} seed {seed}");
                    // A set alone, at the end and in the middle, is the same set.
                    for i in [sweep.len() - 1, sweep.len() / 2] {
                        let set = sweep.params(i);
                        let row: Vec<f64> = set
                            .iter()
                            .map(|(_, v)| match v {
                                ParamValue::Float(x) => *x,
                                other => panic!("{other:?}"),
                            })
                            .collect();
                        assert_eq!(bits(&row), bits(&want[i * 4..i * 4 + 4]), "set {i}");
                    }
                }
            }
        }
    }

    /// Which spaces are said never to repeat a set: the claims that let a large sweep skip the
    /// duplicate check.
    #[test]
    fn cannot_repeat_claims() {
        let points = |sampler, entries: &[(&str, SpaceEntry)], size: u64| {
            let mut s = spec(entries, Some(sampler));
            if sampler == SamplerKind::Grid {
                s.points_per_axis = Some(size);
            } else {
                s.count = Some(size);
            }
            s.sweep(1, Path::new("job.toml")).unwrap().space_points().unwrap().clone()
        };
        let wide = [("a", range(0.0, 1.0)), ("b", range(0.1, 0.5))];
        assert!(points(SamplerKind::Grid, &wide, 1000).cannot_repeat());
        // 3 grid values between 1 and 1 + 2 ulp: the middle one rounds onto an end.
        let narrow = [("a", range(1.0, 1.0 + 2.0 * f64::EPSILON))];
        assert!(!points(SamplerKind::Grid, &narrow, 4).cannot_repeat());
        assert!(points(SamplerKind::LatinHypercube, &wide, 100_000).cannot_repeat());
        assert!(!points(SamplerKind::LatinHypercube, &narrow, 100).cannot_repeat());
        // Two wide axes: 2 × 53 bits against 10^5 sets. One axis of 53 bits at 10^5 sets is
        // not enough for the 2^-40 bound (2·17 + 40 > 53).
        assert!(points(SamplerKind::Uniform, &wide, 100_000).cannot_repeat());
        assert!(!points(SamplerKind::Uniform, &wide[..1], 100_000).cannot_repeat());
        assert!(!points(SamplerKind::Sobol, &wide, 100).cannot_repeat());
    }

    /// The corners of a space: every combination of each range's ends, fixed values as they
    /// are; a one-point grid's only point.
    #[test]
    fn corners_of_the_box() {
        let mut s = spec(
            &[("a", range(0.0, 1.0)), ("n", SpaceEntry::Fixed(5.0)), ("z", range(-2.0, 2.0))],
            Some(SamplerKind::Uniform),
        );
        s.count = Some(10);
        let sweep = s.sweep(1, Path::new("job.toml")).unwrap();
        let corners = sweep.space_points().unwrap().corners(12).unwrap();
        assert_eq!(corners, [[0.0, 5.0, -2.0], [1.0, 5.0, -2.0], [0.0, 5.0, 2.0], [1.0, 5.0, 2.0]]);
        assert_eq!(sweep.space_points().unwrap().corners(1), None);
        s.sampler = Some(SamplerKind::Grid);
        s.count = None;
        s.points_per_axis = Some(1);
        let sweep = s.sweep(1, Path::new("job.toml")).unwrap();
        let corners = sweep.space_points().unwrap().corners(12).unwrap();
        assert!(corners.iter().all(|c| c == &[0.5, 5.0, 0.0]), "{corners:?}");
    }

    #[test]
    fn overflowing_range_names_the_parameter() {
        let mut s = spec(&[("beta", range(-f64::MAX, f64::MAX))], Some(SamplerKind::Uniform));
        s.count = Some(3);
        let t = err_text(&s);
        assert!(t.contains("parameters.space.beta") && t.contains("no param_id"), "{t}");
        assert!(t.contains("too wide") && t.contains("narrow it"), "{t}");
    }

    #[test]
    fn range_errors_name_the_field() {
        let cases: Vec<(SpaceEntry, &str, &str)> = vec![
            (range(f64::NAN, 1.0), "parameters.space.beta.min", "finite"),
            (range(0.0, f64::INFINITY), "parameters.space.beta.max", "finite"),
            (range(2.0, 1.0), "parameters.space.beta.min", "inverted"),
            (range(2.0, 2.0), "`parameters.space.beta`", "beta = 2.0"),
            (
                SpaceEntry::Range(RangeSpec { min: 0.0, max: 1.0, scale: Scale::Log }),
                "parameters.space.beta.min",
                "min > 0",
            ),
            (SpaceEntry::Fixed(f64::NAN), "`parameters.space.beta`", "finite"),
        ];
        for (entry, field, hint) in cases {
            let mut s = spec(&[("beta", entry)], Some(SamplerKind::Uniform));
            s.count = Some(3);
            let text = err_text(&s);
            assert!(text.contains(field) && text.contains(hint), "{text}");
        }
    }

    #[test]
    fn sampler_settings_errors() {
        let base = spec(&[("beta", range(0.0, 1.0))], Some(SamplerKind::Grid));
        let with = |f: &dyn Fn(&mut ParameterSpaceSpec)| {
            let mut s = base.clone();
            f(&mut s);
            err_text(&s)
        };
        let t = with(&|s| s.count = Some(4));
        assert!(t.contains("parameters.count") && t.contains("points_per_axis"), "{t}");
        let t = with(&|s| s.points_per_axis = Some(0));
        assert!(t.contains("parameters.points_per_axis") && t.contains("at least 1"), "{t}");
        let t = with(&|_| {});
        assert!(t.contains("parameters.points_per_axis"), "{t}");
        let t = with(&|s| {
            s.sampler = Some(SamplerKind::LatinHypercube);
            s.points_per_axis = Some(4);
        });
        assert!(t.contains("parameters.points_per_axis") && t.contains("`count`"), "{t}");
        let t = with(&|s| {
            s.sampler = Some(SamplerKind::Uniform);
            s.count = Some(0);
        });
        assert!(t.contains("parameters.count") && t.contains("at least 1"), "{t}");
        let t = with(&|s| s.sampler = None);
        assert!(t.contains("parameters.sampler"), "{t}");
        let t = err_text(&ParameterSpaceSpec::default());
        assert!(t.contains("`parameters.space`"), "{t}");
        // Sobol up to its 2^16 distinct points, refused past them (not silently repeated).
        let sobol = |count| {
            let mut s = base.clone();
            s.sampler = Some(SamplerKind::Sobol);
            s.count = Some(count);
            s
        };
        assert_eq!(sobol(65_536).sweep(1, Path::new("job.toml")).expect("fits").len(), 65_536);
        let t = err_text(&sobol(65_537));
        assert!(
            t.contains("parameters.count") && t.contains("at most 65536 distinct points, 65537"),
            "{t}"
        );
    }

    #[test]
    fn grid_too_large_refused() {
        let mut s = spec(
            &[("a", range(0.0, 1.0)), ("b", range(0.0, 1.0)), ("c", range(0.0, 1.0))],
            Some(SamplerKind::Grid),
        );
        s.points_per_axis = Some(216); // 216^3 = 10,077,696
        let t = err_text(&s);
        assert!(t.contains("parameters.points_per_axis") && t.contains("10077696"), "{t}");
        s.points_per_axis = Some(u64::MAX);
        assert!(err_text(&s).contains("over 2^64"));
    }

    #[test]
    fn space_entry_toml_forms() {
        let s: ParameterSpaceSpec = toml::from_str(
            "space = { a = 2, b = 0.5, c = { min = 1, max = 3.0, scale = \"log\" } }",
        )
        .unwrap();
        assert_eq!(s.space["a"], SpaceEntry::Fixed(2.0));
        assert_eq!(s.space["b"], SpaceEntry::Fixed(0.5));
        assert_eq!(
            s.space["c"],
            SpaceEntry::Range(RangeSpec { min: 1.0, max: 3.0, scale: Scale::Log })
        );
        let e = toml::from_str::<ParameterSpaceSpec>("space = { c = { min = 1, mx = 3.0 } }")
            .unwrap_err();
        assert!(e.message().contains("unknown field `mx`"), "{}", e.message());
    }

    proptest! {
        #[test]
        fn lhs_stratified(count in 1usize..300, dims in 1usize..5, seed in any::<u64>()) {
            let u = latin_hypercube(count, dims, seed);
            prop_assert_eq!(u.len(), count * dims);
            for axis in 0..dims {
                let mut seen = vec![false; count];
                for i in 0..count {
                    let x = u[i * dims + axis];
                    prop_assert!((0.0..1.0).contains(&x));
                    let k = (x * count as f64).floor() as usize;
                    prop_assert!(!seen[k], "stratum {} hit twice on axis {}", k, axis);
                    seen[k] = true;
                }
            }
        }
    }
}
