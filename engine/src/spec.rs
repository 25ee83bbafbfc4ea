//! The job spec (TOML), its validation, and the resolved [`Job`].
//!
//! ```toml
//! name = "flu"            # optional; default: the job file's stem
//! replicates = 20         # R >= 1 replicates per parameter set
//! seed = 1                # default sampler seed (default 0); replicate seeds do not use it
//! batch_size = 200        # optional: parameter sets per batch
//! output = "output"       # optional, relative to the job file
//! model_outputs = ["prevalence"]  # optional: model outputs written; [] none; absent all
//!
//! [parameters]            # a space and a sampler ...
//! sampler = "latin_hypercube"
//! count = 1000
//! [parameters.space]
//! beta = { min = 0.1, max = 3.0, scale = "log" }
//! gamma = 0.5
//! # ... or a parameter file instead: `file = "params.csv"` (see `params::file`)
//!
//! [model]                 # a built-in model by name, with its settings
//! name = "sir"
//! population = 1000
//! initial_infected = 10
//! days = 60
//! steps_per_day = 4
//!
//! [[targets]]             # zero or more; none: only the model outputs are written
//! name = "cases"
//! # ... see `target::TargetSpec`
//! ```
//!
//! [`load_job`] / [`parse_job`] refuse bad input before anything runs: TOML errors and unknown
//! or mistyped fields as [`EngineError::SpecSyntax`] with line and column, values out of range as
//! [`EngineError::SpecInvalid`] with the field's dotted path, bad parameter or data files as
//! [`EngineError::Data`] with the file's line and column.
//!
//! # Spec hash
//!
//! [`Job::spec_hash`] is the lowercase hex BLAKE2b-256 over a canonical description of
//! everything that determines the results, and nothing else. Hashed, in order, each part
//! followed by `\n`: [`SPEC_HASH_VERSION`]; `replicates=R`; `points=N`; for each point in sweep
//! order `param_id:seed` (`-` without a fixed seed; the ids cover the values, hence the sampler,
//! its seed and the parameter file's contents); the compact JSON of the [`ModelSpec`]; for each
//! file the model reads ([`ModelSpec::input_files`], e.g. a demography file) `model_file=` and
//! the BLAKE2b-256 of its bytes (an external model's own program is not hashed);
//! `targets=T`; for each target its [`TargetSpec`] as compact JSON and `data=` followed by the
//! lowercase hex BLAKE2b-256 of its data file's bytes; then, only when `model_outputs` leaves
//! some output out, `model_outputs=` followed by the selected names in model order, joined by
//! `,` (so a job writing every output keeps its hash, whether it lists them or not).
//!
//! That is the hash of stored parameter sets (a parameter file). For a sweep computed from a
//! space the per-point lines are replaced by the space's description, so that the hash costs
//! O(1) rather than O(sets): [`SPEC_HASH_VERSION_SPACE`]; `replicates=R`; `points=N`;
//! `space=` and [`SpacePoints::description`](crate::params::space::SpacePoints::description)
//! (the `[parameters]` section as compact JSON with its resolved seed, and the samplers'
//! algorithm versions); then the same lines from the model on. An output written before this
//! (its manifest holds the [`SPEC_HASH_VERSION`] hash of the same job) is recognised by
//! [`Job::legacy_spec_hash`] on resume, once, and its manifest upgraded.
//!
//! `model_outputs` does not change any value, but it changes which files exist: a resumed run
//! must not mix batches that wrote an output with batches that did not, so it is hashed.
//!
//! Not hashed, because they do not change the results: `name`, `output`, `batch_size`, the job
//! `seed` beyond its effect on the points, the number of workers.
//!
//! # Duplicate parameter sets
//!
//! Two parameter sets with the same `param_id` are refused, naming both (two file lines, or two
//! sampler indices): they would run the same replicate seeds twice and write two sets of rows
//! under one `param_id`. Rows of a parameter file that carry a `seed` are refused only when the
//! seed is the same too, so that chosen replicates of one parameter set can be run, one per row.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blake2::{Blake2b, Digest};

use crate::error::{EngineError, Result};
use crate::identity::ParamId;
use crate::model::{ModelSpec, SharedSimulator};
use crate::params::file::{read_parameter_file, ParameterTable};
use crate::params::space::{ParameterSpaceSpec, SamplerKind, SpaceEntry};
use crate::params::{ParamValue, ParameterSet, Sweep};
use crate::target::{Target, TargetSpec};

/// Names a parameter cannot have: the columns written beside the parameters in the target
/// files (`param_id`, `loss`, `loss_se`, `n_replicates`, `n_failed`, `seeds`), and `shard`, the column a
/// sharded output's folders give readers (hive partitioning).
pub const RESERVED_PARAMETER_NAMES: [&str; 7] =
    ["param_id", "loss", "loss_se", "n_replicates", "n_failed", "seeds", "shard"];

/// Column names a model output cannot have: those simsweep adds to every model output row
/// (`param_id`, `replicate`, `seed`), and `shard`.
pub const RESERVED_OUTPUT_COLUMNS: [&str; 4] = ["param_id", "replicate", "seed", "shard"];

/// Most replicates per parameter set (`replicates`): the replicates of a parameter set are
/// held in memory together until all are in.
pub const MAX_REPLICATES: u32 = 100_000;

/// Longest target name, in bytes: it names a folder (file systems allow 255 bytes per name).
pub const MAX_TARGET_NAME_BYTES: usize = 128;

/// Output directory, relative to the job file, when the spec gives none.
pub const DEFAULT_OUTPUT_DIR: &str = "output";

/// Version prefix of the bytes hashed into [`Job::spec_hash`] for stored parameter sets (a
/// parameter file), and for every sweep before simsweep 0.1 computed a space's sets on demand;
/// bumped whenever what is hashed changes, so that old and new hashes never match by accident.
pub const SPEC_HASH_VERSION: &str = "simsweep:spec:v1";

/// Version prefix of the bytes hashed into [`Job::spec_hash`] for a sweep computed from a
/// space: the space's description stands for its sets.
pub const SPEC_HASH_VERSION_SPACE: &str = "simsweep:spec:v2-space";

/// A job file as written (before validation).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job name; default: the job file's stem (`flu.toml` → `flu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replicates `R` per parameter set (>= 1); rows of a parameter file with a `seed` run one.
    pub replicates: u32,
    /// Job seed, default 0: the sampler seed when `[parameters]` gives none. Replicate seeds do
    /// NOT depend on it: they derive from each set's `param_id` alone (see
    /// [`crate::identity`]), so the same parameter set gets the same replicates in every job.
    #[serde(default)]
    pub seed: u64,
    /// Parameter sets per batch (>= 1), the unit of commit and resume; default chosen by the
    /// runner. Does not change the results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Output directory, relative to the job file; default [`DEFAULT_OUTPUT_DIR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Model outputs written to `model_outputs/<output>/`, by name: `[]` writes none; absent,
    /// all. Targets are scored from every output whatever this says. Hashed (see *Spec hash*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_outputs: Option<Vec<String>>,
    /// Where the parameter sets come from: a space with a sampler, or a file.
    pub parameters: ParametersSpec,
    /// The model and its fixed settings.
    pub model: ModelSpec,
    /// Observed data to score the replicates against; may be empty.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// After the sweep: re-run its best parameter sets with many more replicates. Not part of
    /// the sweep's spec hash (adding it later resumes the finished sweep and only refines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<RefineSpec>,
}

/// Subfolder of a job's output directory holding its refine step's output.
pub const REFINE_DIR: &str = "refine";

/// Most parameter sets a refine step may take per target.
pub const MAX_REFINE_TOP_K: usize = 10_000;

/// The `[refine]` section: after the sweep has finished, its `top_k` best parameter sets of
/// each target (finite sweep losses only; the union over targets) are run again with
/// `replicates` replicates each, with seeds the sweep did not use (replicate numbers
/// `R … R + replicates − 1` of each set, `R` the sweep's replicates), and scored against every
/// target. The result is an output of its own under `<output>/refine/` (same layout, manifest,
/// commit log: resumable, deterministic), whose losses have a Monte Carlo standard error
/// `replicates / R` times smaller in variance than the sweep's: a ranking of the top sets that
/// is not replicate noise (the sweep's best-of-many is biased low, the winner's curse).
///
/// ```toml
/// [refine]
/// top_k = 10         # per target
/// replicates = 200   # per parameter set, ≥ 2
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RefineSpec {
    /// Parameter sets taken per target, 1 … [`MAX_REFINE_TOP_K`].
    pub top_k: usize,
    /// Replicates per refined parameter set, 2 … [`MAX_REPLICATES`].
    pub replicates: u32,
}

/// The `[parameters]` section as written: either `file`, or `space` with the sampler fields.
///
/// The space fields mirror [`ParameterSpaceSpec`] rather than flattening it because serde does
/// not support `flatten` together with `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParametersSpec {
    /// A CSV or Parquet parameter file, relative to the job file (see
    /// [`crate::params::file`]); excludes every other field of the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Parameter name → fixed value or range (see [`crate::params::space`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<BTreeMap<String, SpaceEntry>>,
    /// The sampler: `grid`, `uniform`, `latin_hypercube` or `sobol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerKind>,
    /// Number of parameter sets (`uniform`, `latin_hypercube`, `sobol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Values per range, ends included (`grid`); the sweep has their product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_per_axis: Option<u64>,
    /// Sampler seed; default: the job's `seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Where a sweep's parameter sets come from, once `[parameters]` is checked.
enum ParameterSource {
    Space(ParameterSpaceSpec),
    File(PathBuf),
}

impl ParametersSpec {
    fn source(self, job_file: &Path) -> Result<ParameterSource> {
        let ParametersSpec { file, space, sampler, count, points_per_axis, seed } = self;
        match (file, space) {
            (Some(file), space) => {
                let others = [
                    ("space", space.is_some()),
                    ("sampler", sampler.is_some()),
                    ("count", count.is_some()),
                    ("points_per_axis", points_per_axis.is_some()),
                    ("seed", seed.is_some()),
                ];
                if let Some((other, _)) = others.iter().find(|(_, given)| *given) {
                    return Err(invalid(
                        job_file,
                        "parameters.file",
                        format!(
                            "a parameter file excludes `{other}`: give either `file` or a \
                             `space` with its sampler, not both"
                        ),
                    ));
                }
                Ok(ParameterSource::File(file))
            }
            (None, Some(space)) => Ok(ParameterSource::Space(ParameterSpaceSpec {
                space,
                sampler,
                count,
                points_per_axis,
                seed,
            })),
            (None, None) => Err(invalid(
                job_file,
                "parameters",
                "no parameters: give a space (`[parameters.space]` with `beta = { min = 0.1, max \
                 = 2.0 }` and a `sampler`) or a file (`file = \"params.csv\"`)",
            )),
        }
    }
}

/// A validated job, ready to run: from a job file ([`load_job`], [`parse_job`]) or built in
/// code ([`JobBuilder`]), with the same validation.
///
/// Its fields are read through methods: what is derived from the spec (the sweep, the spec
/// hash, the model built, the targets' data) cannot be changed after validation, so it cannot
/// disagree with the spec. What does not change the results can be set:
/// [`Job::set_output_dir`].
#[derive(Clone)]
pub struct Job {
    /// Job name.
    name: String,
    /// The job file (or the path given to [`parse_job`]).
    spec_file: PathBuf,
    /// Lowercase hex BLAKE2b-256 of what determines the results (module docs, *Spec hash*).
    spec_hash: String,
    /// The parameter sets with their ids, in sweep order. Shared: the one part of a job that
    /// grows with its size, so clones of the job and the dataflow's actors never copy it.
    sweep: Arc<Sweep>,
    /// Replicates per parameter set without a fixed seed.
    replicates: u32,
    /// The job seed (default sampler seed only).
    seed: u64,
    /// The model spec as written.
    model: ModelSpec,
    /// The model, built.
    simulator: SharedSimulator,
    /// The targets, data loaded, in spec order.
    targets: Vec<Target>,
    /// Output directory (resolved against the job file's directory).
    output_dir: PathBuf,
    /// Parameter sets per batch, when the spec sets it.
    batch_size: Option<NonZeroUsize>,
    /// Names of the model outputs written to `model_outputs/`, in the model's output order (all
    /// of them when the spec does not choose).
    model_outputs: Vec<String>,
    /// The spec hash's lines after the parameter sets ([`hash_tail`]), kept to compute the
    /// [`SPEC_HASH_VERSION`] hash of a space's sweep when an older output asks for it.
    hash_tail: Arc<[String]>,
    /// Replicate number of each set's first replicate: 0, or for a refine step's job the
    /// sweep's replicates (its seeds are then ones the sweep did not use).
    first_replicate: u32,
    /// The refine step to run after the sweep, if any.
    refine: Option<RefineSpec>,
}

impl Job {
    /// Job name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job file (or the path given to [`parse_job`], or [`JobBuilder::new`]'s base
    /// folder joined with `job.toml` for a job built in code).
    pub fn spec_file(&self) -> &Path {
        &self.spec_file
    }

    /// Lowercase hex BLAKE2b-256 of what determines the results (module docs, *Spec hash*).
    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// The parameter sets, in sweep order. Shared: clones of the job never copy it.
    pub fn sweep(&self) -> &Arc<Sweep> {
        &self.sweep
    }

    /// Replicates per parameter set without a fixed seed.
    pub fn replicates(&self) -> u32 {
        self.replicates
    }

    /// The job seed (default sampler seed only).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The model spec as written.
    pub fn model(&self) -> &ModelSpec {
        &self.model
    }

    /// The model, built.
    pub fn simulator(&self) -> &SharedSimulator {
        &self.simulator
    }

    /// The targets, data loaded, in spec order.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Output directory (resolved against the job file's directory).
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// Writes the results to `dir` instead (not part of the spec hash: it does not change
    /// them).
    pub fn set_output_dir(&mut self, dir: impl Into<PathBuf>) {
        self.output_dir = dir.into();
    }

    /// Parameter sets per batch, when the spec sets it.
    pub fn batch_size(&self) -> Option<NonZeroUsize> {
        self.batch_size
    }

    /// Names of the model outputs written to `model_outputs/`, in the model's output order
    /// (all of them when the spec does not choose).
    pub fn model_outputs(&self) -> &[String] {
        &self.model_outputs
    }

    /// For a sweep computed from a space: the [`SPEC_HASH_VERSION`] hash this job had before
    /// spaces were hashed by their description, so that an output directory written then is
    /// recognised (and its manifest upgraded) instead of refused. O(sets): ≈ 1 µs per set.
    /// `None` for stored parameter sets, whose hash did not change.
    pub fn legacy_spec_hash(&self) -> Option<String> {
        self.sweep.space_points()?;
        Some(spec_hash_v1(&self.sweep, self.replicates, &self.hash_tail))
    }

    /// Replicate number of each parameter set's first replicate: 0, except for the job of a
    /// refine step ([`Job::refine_job`]). Replicate `r`'s seed derives from `param_id` and `r`.
    pub fn first_replicate(&self) -> u32 {
        self.first_replicate
    }

    /// The refine step of the spec, if any.
    pub fn refine(&self) -> Option<&RefineSpec> {
        self.refine.as_ref()
    }

    /// The job of this job's refine step over the parameter sets at sweep positions `points`
    /// (the sweep's best, in ascending order): the same model and targets, `refine.replicates` replicates numbered from
    /// this job's `replicates` on (fresh seeds), output in `<output>/refine/`, no refine step of
    /// its own. Its spec hash covers the sets' `param_id`s, the replicates and the first
    /// replicate number, the model and targets: a resumed refine step is recognised, and one
    /// over other sets is not.
    ///
    /// # Errors
    /// [`EngineError::SpecInvalid`] naming `refine` when the job has no refine step, `points`
    /// is empty or names a position outside the sweep.
    pub fn refine_job(&self, points: &[u64]) -> Result<Job> {
        let Some(refine) = &self.refine else {
            return Err(invalid(&self.spec_file, "refine", "the job has no refine step"));
        };
        if let Some(p) = points.iter().find(|&&p| p >= self.sweep.len() as u64) {
            return Err(invalid(
                &self.spec_file,
                "refine",
                format!("position {p} is outside the sweep of {} sets", self.sweep.len()),
            ));
        }
        let sets: Vec<ParameterSet> =
            points.iter().map(|&p| self.sweep.params(p as usize)).collect();
        // A sweep's sets all have a param_id (non-finite values are refused when it is built).
        let sets = Sweep::from_sets(&sets, None)
            .map_err(|e| invalid(&self.spec_file, "refine", e.to_string()))?;
        if sets.is_empty() {
            return Err(invalid(
                &self.spec_file,
                "refine",
                "no parameter set to refine: no target has a finite loss",
            ));
        }
        let mut tail = self.hash_tail.to_vec();
        tail.push(format!("first_replicate={}", self.replicates));
        let spec_hash = spec_hash_v1(&sets, refine.replicates, &tail);
        Ok(Job {
            name: format!("{} (refine)", self.name),
            spec_file: self.spec_file.clone(),
            spec_hash,
            sweep: Arc::new(sets),
            replicates: refine.replicates,
            seed: self.seed,
            model: self.model.clone(),
            simulator: self.simulator.clone(),
            targets: self.targets.clone(),
            output_dir: self.output_dir.join(REFINE_DIR),
            batch_size: self.batch_size,
            model_outputs: self.model_outputs.clone(),
            hash_tail: tail.into(),
            first_replicate: self.replicates,
            refine: None,
        })
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("spec_file", &self.spec_file)
            .field("spec_hash", &self.spec_hash)
            .field("sweep", &format_args!("{} points", self.sweep.len()))
            .field("replicates", &self.replicates)
            .field("seed", &self.seed)
            .field("model", &self.model)
            .field("simulator", &self.simulator.name())
            .field("targets", &self.targets)
            .field("output_dir", &self.output_dir)
            .field("batch_size", &self.batch_size)
            .field("model_outputs", &self.model_outputs)
            .finish()
    }
}

impl Job {
    /// Total number of simulations: for each parameter set, 1 if it has a fixed seed, else
    /// `replicates`.
    pub fn simulations(&self) -> u64 {
        if self.sweep.has_fixed_seeds() {
            self.sweep.len() as u64
        } else {
            self.sweep.len() as u64 * u64::from(self.replicates)
        }
    }
}

/// Builds a [`Job`] in code, with the validation a job file gets: the model (built-in,
/// external command, or the host's own [`Simulator`](crate::model::Simulator)), the parameter
/// space or file, the targets with their observations from files or Arrow tables, the output.
///
/// ```
/// use simsweep_engine::model::ModelSpec;
/// use simsweep_engine::params::space::ParameterSpaceSpec;
/// use simsweep_engine::spec::JobBuilder;
///
/// let model: ModelSpec = toml::from_str(
///     "name = \"sir\"\npopulation = 1000\ninitial_infected = 10\ndays = 30",
/// )?;
/// let space: ParameterSpaceSpec = toml::from_str(
///     "sampler = \"latin_hypercube\"\ncount = 100\n\
///      space = { beta = { min = 0.1, max = 2.0 }, gamma = { min = 0.05, max = 0.5 } }",
/// )?;
/// let job = JobBuilder::new("flu", "/tmp/flu").replicates(10).model(model).space(space).build()?;
/// assert_eq!((job.name(), job.sweep().len(), job.replicates()), ("flu", 100, 10));
/// assert_eq!(job.output_dir(), std::path::Path::new("/tmp/flu/output"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Errors name the builder's settings by the job file's field paths (`replicates`,
/// `parameters.space.beta.min`, `targets[0].data_column`, ...), with the file
/// `<base_dir>/(JobBuilder)`.
#[derive(Clone)]
pub struct JobBuilder {
    name: String,
    base_dir: PathBuf,
    replicates: u32,
    seed: u64,
    batch_size: Option<usize>,
    output: Option<PathBuf>,
    model_outputs: Option<Vec<String>>,
    parameters: ParametersSpec,
    model: Option<ModelSpec>,
    host: Option<SharedSimulator>,
    targets: Vec<TargetSpec>,
    tables: Vec<(usize, arrow::record_batch::RecordBatch)>,
    refine: Option<RefineSpec>,
}

impl JobBuilder {
    /// A job called `name` whose relative paths (output, parameter file, data files) are
    /// resolved against `base_dir`. Nothing else is set: give at least
    /// [`replicates`](Self::replicates), a model and the parameters.
    pub fn new(name: impl Into<String>, base_dir: impl Into<PathBuf>) -> JobBuilder {
        JobBuilder {
            name: name.into(),
            base_dir: base_dir.into(),
            replicates: 0,
            seed: 0,
            batch_size: None,
            output: None,
            model_outputs: None,
            parameters: ParametersSpec::default(),
            model: None,
            host: None,
            targets: Vec::new(),
            tables: Vec::new(),
            refine: None,
        }
    }

    /// A builder holding everything `spec` (a job file as read) says, its relative paths
    /// resolved against `base_dir` (the job file's folder): to change parts in code before
    /// validating, e.g. give the host's own simulator in place of the file's model.
    pub fn from_spec(spec: JobSpec, base_dir: impl Into<PathBuf>) -> JobBuilder {
        let JobSpec {
            name,
            replicates,
            seed,
            batch_size,
            output,
            model_outputs,
            parameters,
            model,
            targets,
            refine,
        } = spec;
        JobBuilder {
            refine,
            replicates,
            seed,
            batch_size,
            output,
            model_outputs,
            parameters,
            model: Some(model),
            targets,
            ..JobBuilder::new(name.unwrap_or_else(|| "job".to_string()), base_dir)
        }
    }

    /// The refine step after the sweep, the job file's `[refine]` (see [`RefineSpec`]).
    pub fn refine(mut self, refine: RefineSpec) -> JobBuilder {
        self.refine = Some(refine);
        self
    }

    /// Replicates per parameter set (≥ 1), the job file's `replicates`.
    pub fn replicates(mut self, replicates: u32) -> JobBuilder {
        self.replicates = replicates;
        self
    }

    /// The job seed (default 0): the sampler seed when the space gives none.
    pub fn seed(mut self, seed: u64) -> JobBuilder {
        self.seed = seed;
        self
    }

    /// Parameter sets per batch (≥ 1).
    pub fn batch_size(mut self, batch_size: usize) -> JobBuilder {
        self.batch_size = Some(batch_size);
        self
    }

    /// The output folder, relative to the base folder (default [`DEFAULT_OUTPUT_DIR`]).
    pub fn output(mut self, dir: impl Into<PathBuf>) -> JobBuilder {
        self.output = Some(dir.into());
        self
    }

    /// The model outputs written, by name (default: all).
    pub fn model_outputs<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.model_outputs = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The parameter sets: a space and its sampler (replaces a parameter file).
    pub fn space(mut self, space: ParameterSpaceSpec) -> JobBuilder {
        let ParameterSpaceSpec { space, sampler, count, points_per_axis, seed } = space;
        self.parameters = ParametersSpec {
            file: None,
            space: Some(space),
            sampler,
            count,
            points_per_axis,
            seed,
        };
        self
    }

    /// The parameter sets: a CSV or Parquet parameter file (replaces a space).
    pub fn parameter_file(mut self, file: impl Into<PathBuf>) -> JobBuilder {
        self.parameters = ParametersSpec { file: Some(file.into()), ..ParametersSpec::default() };
        self
    }

    /// The model: built-in or external, as a job file's `[model]` gives it.
    pub fn model(mut self, model: ModelSpec) -> JobBuilder {
        self.model = Some(model);
        self.host = None;
        self
    }

    /// The model: the host's own simulator. `version` is recorded in the spec hash in its
    /// place (the host's code is not hashed): change it whenever the model's results change.
    pub fn simulator(mut self, simulator: SharedSimulator, version: impl Into<String>) -> Self {
        let host =
            crate::model::HostModel { host: simulator.name().to_string(), version: version.into() };
        self.model = Some(ModelSpec {
            model: crate::model::ModelKind::Host(host),
            retry: crate::model::RetryPolicy::default(),
        });
        self.host = Some(simulator);
        self
    }

    /// A target whose observations are in its `data` file.
    pub fn target(mut self, target: TargetSpec) -> JobBuilder {
        self.targets.push(target);
        self
    }

    /// A target whose observations are the columns `data_column` and `data_time_column` of
    /// `table` (its `data` is ignored): see [`TargetSpec::resolve_table`]. The spec hash covers
    /// the observations.
    pub fn target_table(
        mut self,
        target: TargetSpec,
        table: arrow::record_batch::RecordBatch,
    ) -> JobBuilder {
        self.tables.push((self.targets.len(), table));
        self.targets.push(target);
        self
    }

    /// Validates everything as a job file is validated and builds the job.
    ///
    /// # Errors
    /// As [`JobSpec::resolve`], with the file `<base_dir>/(JobBuilder)`; and
    /// [`EngineError::SpecInvalid`] for `model` when no model was given.
    pub fn build(self) -> Result<Job> {
        let file = self.base_dir.join("(JobBuilder)");
        let Some(model) = self.model else {
            return Err(invalid(
                &file,
                "model",
                "no model; give one with JobBuilder::model (built-in or external) or \
                 JobBuilder::simulator (the host's own)",
            ));
        };
        let spec = JobSpec {
            name: Some(self.name),
            replicates: self.replicates,
            seed: self.seed,
            batch_size: self.batch_size,
            output: self.output,
            model_outputs: self.model_outputs,
            parameters: self.parameters,
            model,
            targets: self.targets,
            refine: self.refine,
        };
        spec.resolve_with(&file, self.host, &self.tables)
    }
}

/// Reads and validates the job file at `path`.
///
/// Relative paths in the spec (`output`, `parameters.file`, targets' `data`) are resolved
/// against the job file's directory.
///
/// # Errors
/// [`EngineError::Data`] when the job file does not exist, [`EngineError::Io`] when it cannot
/// be read; otherwise as [`parse_job`].
pub fn load_job(path: &Path) -> Result<Job> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::Data {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: "job file not found; check the path".into(),
            })
        }
        Err(e) if path.is_dir() => {
            return Err(EngineError::Data {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: format!("is a directory ({e}); give the job file (TOML)"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(EngineError::Data {
                file: path.to_path_buf(),
                line: None,
                column: None,
                message: "is not UTF-8 text; a job file is TOML".into(),
            })
        }
        Err(e) => return Err(EngineError::io(path, e)),
    };
    parse_job(&text, path)
}

/// Parses and validates a job spec whose text is `text`, as if read from `file` (which names
/// the job by default, appears in errors, and whose parent directory is the base of relative
/// paths).
///
/// # Errors
/// - [`EngineError::SpecSyntax`] (line, column): invalid TOML, unknown or mistyped fields.
/// - [`EngineError::SpecInvalid`] (field path): see [`JobSpec::resolve`].
/// - [`EngineError::Data`]: a parameter file or target data file that cannot be used.
///
/// # Example
/// ```no_run
/// # use std::path::Path;
/// let job = simsweep_engine::spec::load_job(Path::new("flu.toml"))?;
/// println!("{}: {} simulations", job.name(), job.simulations());
/// # Ok::<(), simsweep_engine::EngineError>(())
/// ```
pub fn parse_job(text: &str, file: &Path) -> Result<Job> {
    let spec: JobSpec = toml::from_str(text).map_err(|e| syntax_error(text, file, &e))?;
    spec.resolve(file)
}

fn syntax_error(text: &str, file: &Path, e: &toml::de::Error) -> EngineError {
    let span = e.span().map_or(0..0, |s| s.start.min(text.len())..s.end.min(text.len()));
    // An error inside `[model]` comes at the section's header; when it names its key, point
    // at the key's line in the section.
    let offset = crate::model::model_error_key(e.message())
        .and_then(|key| key_line_offset(&text[span.start..], key))
        .map_or(span.start, |o| span.start + o);
    let (line, column) = line_column(text, offset);
    EngineError::SpecSyntax {
        file: file.to_path_buf(),
        line,
        column,
        message: e.message().trim_end().to_string(),
    }
}

/// Byte offset in `section` (text from a table's header on) of the first line of that table
/// that assigns `key` (`key = …`, leading spaces allowed, the key bare or quoted); `None` when
/// the table ends (the next `[` header) first.
fn key_line_offset(section: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in section.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            return None;
        }
        let rest = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
            .iter()
            .find_map(|k| trimmed.strip_prefix(k.as_str()).map(str::trim_start));
        if rest.is_some_and(|r| r.starts_with('=')) {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// 1-based line and column (in characters) of byte `offset` of `text` (an offset past the end
/// counts as the end; one inside a character as that character), as a job file's errors give
/// them.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn invalid(file: &Path, field: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::SpecInvalid {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

/// A parameter set's position, for errors: an index for samplers, a file line for files.
#[derive(Clone, Copy)]
enum Position {
    Index(usize),
    Line(u64),
}

impl Position {
    fn line(self) -> Option<u64> {
        match self {
            Position::Line(l) => Some(l),
            Position::Index(_) => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Index(i) => write!(f, "parameter set {i}"),
            Position::Line(l) => write!(f, "line {l}"),
        }
    }
}

impl JobSpec {
    /// Validates the spec and resolves it into a [`Job`], as if read from `file`.
    ///
    /// # Errors
    /// [`EngineError::SpecInvalid`] naming the field for: `replicates` 0; `batch_size` 0; an
    /// empty `name`; a model setting out of range (`model.<setting>`); the space errors of
    /// [`ParameterSpaceSpec::sweep`]; `parameters.file` together with space fields, or neither;
    /// a parameter the model does not have, or a model parameter the sweep does not give; two
    /// identical parameter sets (same `param_id`) from a sampler; two targets with one name;
    /// `model_outputs` naming an output the model does not have, or one twice.
    /// [`EngineError::Data`] for parameter file errors (see
    /// [`crate::params::file::read_parameter_file`]), a file column the model does not have or
    /// a model parameter without a column, and two rows with the same parameter values (naming
    /// both lines); target errors from [`TargetSpec::resolve`].
    pub fn resolve(self, file: &Path) -> Result<Job> {
        self.resolve_with(file, None, &[])
    }

    /// [`JobSpec::resolve`] with a host's own simulator instead of building `model` (which
    /// then records it, [`ModelKind::Host`](crate::model::ModelKind::Host)), and with the
    /// observations of target `i` from the table paired with `i` in `tables` instead of its
    /// `data` file.
    fn resolve_with(
        self,
        file: &Path,
        host: Option<SharedSimulator>,
        tables: &[(usize, arrow::record_batch::RecordBatch)],
    ) -> Result<Job> {
        let base_dir = file.parent().unwrap_or(Path::new(""));
        if self.replicates == 0 {
            return Err(invalid(file, "replicates", "must be at least 1"));
        }
        if self.replicates > MAX_REPLICATES {
            return Err(invalid(
                file,
                "replicates",
                format!(
                    "{} is more than simsweep runs per parameter set (at most {MAX_REPLICATES}: \
                     a parameter set's replicates are held together until all are in); use \
                     fewer, or repeat parameter sets in a parameter file with a `seed` column",
                    self.replicates
                ),
            ));
        }
        let refine = match self.refine {
            Some(r) if r.top_k == 0 || r.top_k > MAX_REFINE_TOP_K => {
                return Err(invalid(
                    file,
                    "refine.top_k",
                    format!(
                        "{} is not a usable number of parameter sets to refine: give 1 … \
                         {MAX_REFINE_TOP_K} (per target)",
                        r.top_k
                    ),
                ))
            }
            Some(r) if r.replicates < 2 || r.replicates > MAX_REPLICATES => {
                return Err(invalid(
                    file,
                    "refine.replicates",
                    format!(
                        "{} replicates cannot refine a loss: give 2 … {MAX_REPLICATES} (a \
                         standard error needs at least 2; typically 10× the sweep's)",
                        r.replicates
                    ),
                ))
            }
            Some(_) if self.targets.is_empty() => {
                return Err(invalid(
                    file,
                    "refine",
                    "refines the best parameter sets of the targets, but the job has no \
                     target; add a [[targets]] section or remove [refine]",
                ))
            }
            other => other,
        };
        if self.output.as_ref().is_some_and(|o| o.as_os_str().is_empty()) {
            return Err(invalid(
                file,
                "output",
                "is empty; give the output folder (relative to the job file, e.g. \"output\"), \
                 or remove the field for the default",
            ));
        }
        let batch_size = match self.batch_size {
            None => None,
            Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| {
                invalid(file, "batch_size", "must be at least 1; remove it for the default")
            })?),
        };
        let name = match &self.name {
            Some(n) if n.trim().is_empty() => {
                return Err(invalid(file, "name", "is empty; give a name or remove the field"))
            }
            Some(n) => n.clone(),
            None => file
                .file_stem()
                .map_or_else(|| "job".to_string(), |s| s.to_string_lossy().into_owned()),
        };

        let simulator = match host {
            Some(simulator) => simulator,
            None => self
                .model
                .resolved(base_dir)
                .build(base_dir)
                .map_err(|e| invalid(file, format!("model.{}", e.setting), e.message))?,
        };
        let mut model_params = simulator.parameter_names();
        // Parameters of the targets' measurement models (reporting fractions) are swept like
        // the model's own and must be in [0, 1].
        let measurement_params: Vec<(usize, String)> = self
            .targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.reporting_fraction {
                Some(crate::target::ReportingFractionSpec::Parameter(name)) => {
                    Some((i, name.clone()))
                }
                _ => None,
            })
            .collect();
        let space_names =
            self.parameters.space.as_ref().map(|s| s.keys().cloned().collect::<Vec<_>>());
        for (i, name) in &measurement_params {
            let field = format!("targets[{i}].reporting_fraction");
            if name.trim().is_empty() {
                return Err(invalid(
                    file,
                    field,
                    "is empty: give a number in (0, 1] or the name of a swept parameter",
                ));
            }
            if let Some(names) = space_names.as_ref().filter(|n| !n.contains(name)) {
                return Err(invalid(
                    file,
                    field,
                    format!(
                        "names `{name}`, which is not a parameter of the space ({}); add it to \
                         [parameters.space] (e.g. `{name} = {{ min = 0.5, max = 1.0 }}`) or fix \
                         the name",
                        names.join(", ")
                    ),
                ));
            }
            if !model_params.contains(name) {
                model_params.push(name.clone());
            }
        }
        model_params.sort();
        let check_all = |p: &ParameterSet| -> std::result::Result<(), String> {
            for (i, name) in &measurement_params {
                let value = match p.get(name) {
                    Some(ParamValue::Float(v)) => *v,
                    Some(ParamValue::Int(v)) => *v as f64,
                    _ => f64::NAN,
                };
                if !(value > 0.0 && value <= 1.0) {
                    return Err(format!(
                        "`{name}` = {value} is the reporting fraction of targets[{i}] (`{}`) \
                         and must be a number in (0, 1]",
                        self.targets[*i].name
                    ));
                }
            }
            simulator.check_parameters(p)
        };

        let source = self.parameters.source(file)?;
        let from_file = matches!(source, ParameterSource::File(_));
        let sweep = match source {
            ParameterSource::Space(space) => {
                let check = |p: &ParameterSet| check_all(p);
                space_sweep(&space, self.seed, file, simulator.name(), &model_params, &check)?
            }
            ParameterSource::File(path) => {
                let path = base_dir.join(path);
                if path.is_dir() {
                    return Err(invalid(
                        file,
                        "parameters.file",
                        format!(
                            "`{}` is a directory, not a parameter file; give a CSV or Parquet \
                             file",
                            path.display()
                        ),
                    ));
                }
                let check = |p: &ParameterSet| check_all(p);
                file_sweep(&path, simulator.name(), &model_params, &check)?
            }
        };

        for (name, _) in sweep.columns() {
            if RESERVED_PARAMETER_NAMES.contains(&name.as_str()) {
                let field = if from_file {
                    "parameters.file".to_string()
                } else {
                    format!("parameters.space.{name}")
                };
                return Err(invalid(
                    file,
                    field,
                    format!(
                        "parameter name `{name}` is taken by a column simsweep writes beside the \
                         parameters ({}); rename the parameter (and the model's use of it)",
                        RESERVED_PARAMETER_NAMES.join(", ")
                    ),
                ));
            }
        }
        for output in &simulator.outputs() {
            for field in output.schema.fields() {
                if RESERVED_OUTPUT_COLUMNS.contains(&field.name().as_str()) {
                    return Err(invalid(
                        file,
                        "model",
                        format!(
                            "model output `{}` has a column `{}`, a name simsweep adds to every \
                             model output row ({}); rename that column in the model",
                            output.name,
                            field.name(),
                            RESERVED_OUTPUT_COLUMNS.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        for (j, t) in self.targets.iter().enumerate() {
            if t.name.len() > MAX_TARGET_NAME_BYTES {
                return Err(invalid(
                    file,
                    format!("targets[{j}].name"),
                    format!(
                        "is {} bytes long; a target name names a folder, at most \
                         {MAX_TARGET_NAME_BYTES} bytes: shorten it",
                        t.name.len()
                    ),
                ));
            }
            // Folder names that differ only in case are one folder on macOS and Windows.
            if let Some(i) = names.insert(t.name.to_lowercase(), j) {
                let other = &self.targets[i].name;
                if other != &t.name {
                    return Err(invalid(
                        file,
                        format!("targets[{j}].name"),
                        format!(
                            "target name `{}` differs from targets[{i}]'s `{other}` only in case: \
                             they would share one folder on case-insensitive file systems \
                             (macOS, Windows); give the targets names that differ in letters",
                            t.name
                        ),
                    ));
                }
                return Err(invalid(
                    file,
                    format!("targets[{j}].name"),
                    format!(
                        "target name `{}` is also used by targets[{i}]; give each target its \
                         own name",
                        t.name
                    ),
                ));
            }
        }
        let outputs = simulator.outputs();
        let targets = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| match tables.iter().find(|(j, _)| *j == i) {
                Some((_, table)) => t.resolve_table(i, file, base_dir, &outputs, table),
                None => t.resolve(i, file, base_dir, &outputs),
            })
            .collect::<Result<Vec<_>>>()?;
        for target in &targets {
            if let Some(times) = simulator.output_times(&target.output) {
                target.check_times(&times)?;
            }
        }

        let model_outputs =
            select_model_outputs(self.model_outputs.as_deref(), &outputs, simulator.name(), file)?;
        let hash_tail = hash_tail(
            &self.model,
            &self.targets,
            &targets,
            (model_outputs.len() < outputs.len()).then_some(model_outputs.as_slice()),
            &self.model.input_files(base_dir),
        )?;
        let spec_hash = spec_hash(&sweep, self.replicates, &hash_tail);
        Ok(Job {
            name,
            spec_file: file.to_path_buf(),
            spec_hash,
            sweep: Arc::new(sweep),
            replicates: self.replicates,
            seed: self.seed,
            model: self.model,
            simulator,
            targets,
            output_dir: base_dir
                .join(self.output.as_deref().unwrap_or(Path::new(DEFAULT_OUTPUT_DIR))),
            batch_size,
            model_outputs,
            hash_tail: hash_tail.into(),
            first_replicate: 0,
            refine,
        })
    }
}

/// The model outputs to write: `selected` checked against the model's `outputs` and put in
/// model order, or every output when `selected` is `None`.
///
/// # Errors
/// [`EngineError::SpecInvalid`] for `model_outputs` naming an output the model does not have
/// (listing the model's outputs) or naming one twice.
fn select_model_outputs(
    selected: Option<&[String]>,
    outputs: &[crate::model::OutputSpec],
    model: &str,
    file: &Path,
) -> Result<Vec<String>> {
    let Some(selected) = selected else {
        return Ok(outputs.iter().map(|o| o.name.clone()).collect());
    };
    for (i, name) in selected.iter().enumerate() {
        if !outputs.iter().any(|o| &o.name == name) {
            let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(invalid(
                file,
                "model_outputs",
                format!(
                    "model `{model}` has no output `{name}` (its outputs: {}); fix the name, or \
                     write `model_outputs = []` for none",
                    names.join(", ")
                ),
            ));
        }
        if selected[..i].contains(name) {
            return Err(invalid(
                file,
                "model_outputs",
                format!("`{name}` is listed twice; list each output once"),
            ));
        }
    }
    Ok(outputs.iter().filter(|o| selected.contains(&o.name)).map(|o| o.name.clone()).collect())
}

fn space_sweep(
    space: &ParameterSpaceSpec,
    job_seed: u64,
    file: &Path,
    model: &str,
    model_params: &[String],
    check: &dyn Fn(&ParameterSet) -> std::result::Result<(), String>,
) -> Result<Sweep> {
    let names = space.parameter_names();
    if let Some(extra) = names.iter().find(|n| !model_params.contains(n)) {
        return Err(invalid(
            file,
            format!("parameters.space.{extra}"),
            format!(
                "model `{model}` has no parameter `{extra}` (its parameters: {}); remove it or \
                 fix the name",
                model_params.join(", ")
            ),
        ));
    }
    if let Some(missing) = model_params.iter().find(|n| !names.contains(n)) {
        return Err(invalid(
            file,
            "parameters.space",
            format!(
                "model `{model}` needs parameter `{missing}`, which the space does not give; add \
                 it as a value (`{missing} = 1.0`) or a range"
            ),
        ));
    }
    let sweep = space.sweep(job_seed, file)?;
    let points = sweep.space_points().expect("a space's sweep is computed from it");
    let outside = |what: String, m: String| {
        invalid(
            file,
            "parameters.space",
            format!("{what} is outside the model's domain: {m}; narrow the ranges"),
        )
    };
    // A small sweep is checked set by set; a large one by the corners of its box.
    let corners = (sweep.len() > EXHAUSTIVE_CHECK_MAX_SETS)
        .then(|| points.corners(MAX_CORNER_DIMS))
        .flatten();
    match corners {
        Some(corners) => {
            let names = sweep.columns().iter().map(|(n, _)| n.clone());
            for corner in corners {
                let set: ParameterSet = names
                    .clone()
                    .zip(corner)
                    .map(|(n, v)| (n, crate::params::ParamValue::Float(v)))
                    .collect();
                check(&set).map_err(|m| {
                    let values: Vec<String> =
                        set.iter().map(|(n, v)| format!("{n} = {v}")).collect();
                    outside(format!("the corner ({}) of the space", values.join(", ")), m)
                })?;
            }
        }
        None => {
            for i in 0..sweep.len() {
                check(&sweep.params(i)).map_err(|m| outside(format!("parameter set {i}"), m))?;
            }
        }
    }
    if sweep.len() > EXHAUSTIVE_CHECK_MAX_SETS && points.cannot_repeat() {
        return Ok(sweep);
    }
    check_duplicates(&sweep, Position::Index, |first, second, id| {
        invalid(
            file,
            "parameters",
            format!(
                "{second} is identical to {first} (param_id {id}); duplicates would run the \
                     same replicates twice under one param_id: change the sampler settings or \
                     ranges"
            ),
        )
    })?;
    Ok(sweep)
}

/// Sweeps from a space of at most this many sets are checked set by set, against the model's
/// domain and for duplicates (≈ 1 µs per set); larger ones by the corners of the space's box
/// and by whether the sampler can repeat a set at all
/// ([`SpacePoints::cannot_repeat`](crate::params::space::SpacePoints::cannot_repeat)), so that
/// validating and starting a run do not grow with the sweep.
pub const EXHAUSTIVE_CHECK_MAX_SETS: usize = 100_000;

/// Most ranges whose 2^n corners are checked against the model's domain; a larger space with
/// more than [`EXHAUSTIVE_CHECK_MAX_SETS`] sets is checked set by set.
pub const MAX_CORNER_DIMS: usize = 12;

fn file_sweep(
    path: &Path,
    model: &str,
    model_params: &[String],
    check: &dyn Fn(&ParameterSet) -> std::result::Result<(), String>,
) -> Result<Sweep> {
    let ParameterTable { sweep, lines } = read_parameter_file(path)?;
    let columns = sweep.columns();
    let data = |line: Option<u64>, column: Option<&str>, message: String| EngineError::Data {
        file: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        message,
    };
    if let Some((extra, _)) = columns.iter().find(|(n, _)| !model_params.contains(n)) {
        return Err(data(
            Some(1),
            Some(extra),
            format!(
                "model `{model}` has no parameter `{extra}` (its parameters: {}); remove the \
                 column or fix its name",
                model_params.join(", ")
            ),
        ));
    }
    if let Some(missing) = model_params.iter().find(|m| !columns.iter().any(|(n, _)| n == *m)) {
        return Err(data(
            Some(1),
            None,
            format!("model `{model}` needs parameter `{missing}`; add a column `{missing}`"),
        ));
    }
    for (i, &line) in lines.iter().enumerate() {
        check(&sweep.params(i)).map_err(|m| data(Some(line), None, format!("{m}; fix the row")))?;
    }
    check_duplicates(
        &sweep,
        |i| Position::Line(lines[i]),
        |first, second, id| {
            data(
                second.line(),
                None,
                format!(
                    "same parameter values as {first} (param_id {id}); duplicates would run the \
                     same replicates twice under one param_id: remove one of the rows"
                ),
            )
        },
    )?;
    Ok(sweep)
}

/// Refuses two parameter sets with the same `param_id` (and the same fixed seed, or none),
/// naming the first set with that identity and the second one, as a scan in sweep order would
/// meet them. `position(i)` says where set `i` comes from.
///
/// Duplicates are refused rather than merged: they would run identical seeds twice and write
/// two sets of rows under one `param_id`. Rows of a parameter file with a `seed` are duplicates
/// only when their seeds are equal too: re-running chosen replicates of one parameter set, one
/// seed per row, is what the seed column is for.
///
/// Sorts the sets' positions by identity (the ids and positions: 40 bytes per set, dropped on
/// return) rather than keeping a map of the identities seen.
fn check_duplicates(
    sweep: &Sweep,
    position: impl Fn(usize) -> Position,
    duplicate: impl Fn(Position, Position, &ParamId) -> EngineError,
) -> Result<()> {
    let ids = sweep.param_ids(0..sweep.len());
    let key = |i: usize| (ids[i], sweep.fixed_seed(i));
    let mut order: Vec<usize> = (0..sweep.len()).collect();
    // Equal identities end up side by side, each run in sweep order.
    order.sort_unstable_by_key(|&i| (key(i), i));
    // (first, second) of the run whose second set comes first in the sweep.
    let mut found: Option<(usize, usize)> = None;
    for (k, pair) in order.windows(2).enumerate() {
        let (a, b) = (pair[0], pair[1]);
        let second_of_run = k == 0 || key(order[k - 1]) != key(a);
        if second_of_run && key(a) == key(b) && found.is_none_or(|(_, second)| b < second) {
            found = Some((a, b));
        }
    }
    match found {
        Some((first, second)) => Err(duplicate(position(first), position(second), &ids[first])),
        None => Ok(()),
    }
}

/// Sets whose `param_id`s are computed at a time when hashing a whole sweep.
pub(crate) const PARAM_ID_CHUNK: usize = 4096;

/// The spec hash's lines after the parameter sets: the model, the files it reads, the
/// targets with their data, the written model outputs (module docs, *Spec hash*).
fn hash_tail(
    model: &ModelSpec,
    target_specs: &[TargetSpec],
    targets: &[Target],
    model_outputs: Option<&[String]>,
    model_files: &[PathBuf],
) -> Result<Vec<String>> {
    let digest = |bytes: &[u8]| hex(&Blake2b::<blake2::digest::consts::U32>::digest(bytes));
    let mut lines = vec![json(model)];
    for file in model_files {
        let bytes = std::fs::read(file).map_err(|e| EngineError::io(file, e))?;
        lines.push(format!("model_file={}", digest(&bytes)));
    }
    lines.push(format!("targets={}", target_specs.len()));
    for (spec, target) in target_specs.iter().zip(targets) {
        lines.push(json(spec));
        if target.data_from_table {
            // The observations as aligned: times and values, bit for bit.
            let mut bytes = Vec::with_capacity(16 * target.times.len());
            for (t, y) in target.times.iter().zip(&target.observed) {
                bytes.extend_from_slice(&t.to_le_bytes());
                bytes.extend_from_slice(&y.to_le_bytes());
            }
            lines.push(format!("data_table={}", digest(&bytes)));
        } else {
            let bytes = std::fs::read(&target.data_file)
                .map_err(|e| EngineError::io(&target.data_file, e))?;
            lines.push(format!("data={}", digest(&bytes)));
        }
    }
    if let Some(names) = model_outputs {
        lines.push(format!("model_outputs={}", names.join(",")));
    }
    Ok(lines)
}

/// The spec hash (module docs, *Spec hash*): [`SPEC_HASH_VERSION_SPACE`] over the space's
/// description for a sweep computed from a space (O(1)), [`SPEC_HASH_VERSION`] over every
/// set's `param_id` for stored sets.
fn spec_hash(sweep: &Sweep, replicates: u32, tail: &[String]) -> String {
    let Some(points) = sweep.space_points() else {
        return spec_hash_v1(sweep, replicates, tail);
    };
    let mut h = Blake2b::<blake2::digest::consts::U32>::new();
    for line in [
        SPEC_HASH_VERSION_SPACE,
        &format!("replicates={replicates}"),
        &format!("points={}", sweep.len()),
        &format!("space={}", points.description()),
    ]
    .into_iter()
    .chain(tail.iter().map(String::as_str))
    {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// The [`SPEC_HASH_VERSION`] hash: every set's `param_id` and fixed seed, in sweep order.
/// O(sets): ≈ 1 µs per set.
fn spec_hash_v1(sweep: &Sweep, replicates: u32, tail: &[String]) -> String {
    let mut h = Blake2b::<blake2::digest::consts::U32>::new();
    let mut line = |s: &str| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(SPEC_HASH_VERSION);
    line(&format!("replicates={replicates}"));
    line(&format!("points={}", sweep.len()));
    let mut point = String::with_capacity(ParamId::HEX_LEN + 12);
    for chunk in (0..sweep.len()).step_by(PARAM_ID_CHUNK) {
        let end = (chunk + PARAM_ID_CHUNK).min(sweep.len());
        for (i, id) in (chunk..end).zip(sweep.param_ids(chunk..end)) {
            point.clear();
            // Writing to a String cannot fail.
            let _ = match sweep.fixed_seed(i) {
                Some(s) => write!(point, "{id}:{s}"),
                None => write!(point, "{id}:-"),
            };
            line(&point);
        }
    }
    for l in tail {
        line(l);
    }
    hex(&h.finalize())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain derived structs and enums of strings, numbers and paths into a String
    // cannot fail except for non-UTF-8 paths, which then hash by their lossy form.
    serde_json::to_string(value).unwrap_or_else(|e| format!("<unserializable: {e}>"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;
    use crate::params::{ParamColumn, ParamKind, ParamValue};
    use std::io::Write;

    const MODEL: &str = "[model]\nname = \"sir\"\npopulation = 1000\ninitial_infected = 10\n\
                         days = 30\nsteps_per_day = 4\n";

    fn job(head: &str, params: &str) -> Result<Job> {
        parse_job(&format!("{head}\n{params}\n{MODEL}"), Path::new("/jobs/flu.toml"))
    }

    fn grid_params() -> &'static str {
        "[parameters]\nsampler = \"grid\"\npoints_per_axis = 3\n\
         [parameters.space]\nbeta = { min = 1.0, max = 2.0 }\ngamma = { min = 0.1, max = 0.5 }"
    }

    fn err(head: &str, params: &str) -> EngineError {
        job(head, params).unwrap_err()
    }

    #[test]
    fn minimal_sir_grid_job() {
        let j = job("replicates = 5", grid_params()).unwrap();
        assert_eq!(j.name, "flu");
        assert_eq!(j.replicates, 5);
        assert_eq!(j.seed, 0);
        assert_eq!(j.batch_size, None);
        assert_eq!(j.output_dir, PathBuf::from("/jobs/output"));
        assert_eq!(
            j.sweep.columns(),
            [("beta".to_string(), ParamKind::Float), ("gamma".to_string(), ParamKind::Float)]
        );
        assert_eq!(j.sweep.len(), 9);
        assert_eq!(j.simulations(), 45);
        let p = |i: usize| j.sweep.params(i);
        // Row-major, gamma (last in name order) fastest.
        assert_eq!(p(0).get_f64("beta"), Some(1.0));
        assert_eq!(p(0).get_f64("gamma"), Some(0.1));
        assert_eq!(p(1).get_f64("beta"), Some(1.0));
        assert_eq!(p(1).get_f64("gamma"), Some(0.30000000000000004)); // 0.1 + 0.5·0.4
        assert_eq!(p(2).get_f64("gamma"), Some(0.5));
        assert_eq!(p(3).get_f64("beta"), Some(1.5));
        assert_eq!(p(8).get_f64("beta"), Some(2.0));
        for i in 0..j.sweep.len() {
            assert_eq!(j.sweep.param_id(i), identity::param_id(&p(i)).unwrap());
            assert_eq!(j.sweep.fixed_seed(i), None);
        }
    }

    #[test]
    fn fixed_values_and_options() {
        let j = job(
            "name = \"x\"\nreplicates = 2\nseed = 3\nbatch_size = 4\noutput = \"out/a\"",
            "[parameters]\nsampler = \"uniform\"\ncount = 6\n\
             [parameters.space]\nbeta = 2\ngamma = { min = 0.1, max = 0.5, scale = \"log\" }",
        )
        .unwrap();
        assert_eq!(j.name, "x");
        assert_eq!(j.batch_size, NonZeroUsize::new(4));
        assert_eq!(j.output_dir, PathBuf::from("/jobs/out/a"));
        assert_eq!(j.sweep.len(), 6);
        for i in 0..j.sweep.len() {
            let p = j.sweep.params(i);
            assert_eq!(p.get("beta"), Some(&ParamValue::Float(2.0)));
            let g = p.get_f64("gamma").unwrap();
            assert!((0.1..0.5).contains(&g), "{g}");
        }
    }

    #[test]
    fn sampler_seed_follows_job_seed() {
        let params = "[parameters]\nsampler = \"sobol\"\ncount = 4\n\
                      [parameters.space]\nbeta = { min = 1.0, max = 2.0 }\ngamma = 0.2";
        let ids = |head: &str| -> Vec<ParamId> {
            {
                let s = job(head, params).unwrap().sweep;
                s.param_ids(0..s.len())
            }
        };
        assert_eq!(ids("replicates = 1\nseed = 1"), ids("replicates = 1\nseed = 1"));
        assert_ne!(ids("replicates = 1\nseed = 1"), ids("replicates = 1\nseed = 2"));
    }

    #[test]
    fn spec_hash_tracks_results_only() {
        let h = |head: &str| job(head, grid_params()).unwrap().spec_hash;
        let base = h("replicates = 5");
        assert_eq!(base.len(), 64);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(base, h("replicates = 5"));
        assert_ne!(base, h("replicates = 6"));
        assert_eq!(base, h("replicates = 5\nbatch_size = 7"));
        assert_eq!(base, h("replicates = 5\nname = \"other\"\noutput = \"elsewhere\""));
        // The job seed does not enter a grid's points, hence not the hash.
        assert_eq!(base, h("replicates = 5\nseed = 9"));
        let other_model = parse_job(
            &format!(
                "replicates = 5\n{}\n{}",
                grid_params(),
                MODEL.replace("days = 30", "days = 31")
            ),
            Path::new("/jobs/flu.toml"),
        )
        .unwrap();
        assert_ne!(base, other_model.spec_hash);
    }

    #[test]
    fn spec_hash_and_parts_as_before_the_columnar_sweep() {
        // Hashes written by the builds before the sweep was stored by column and before a
        // space's sets were computed on demand (a resumed run compares them with its manifest):
        // a space's sweep is recognised by its legacy hash, a parameter file's keeps its hash.
        let j = job("replicates = 5", grid_params()).unwrap();
        let v1 = "8fc162412097da69ceb6deaad5afc81c2e7f60a4467346810e7c010406480556";
        assert_eq!(j.legacy_spec_hash().as_deref(), Some(v1));
        let parts = crate::output::SpecIdentity::legacy_parts_of_job(&j);
        assert_eq!(parts["parameter sets"], "9 sets of (beta, gamma), 8d7f36205f41f44b");
        // Today's: the space's description stands for its sets.
        assert_eq!(j.spec_hash, "ed3c46ad51f30a127a29365fad5b535292633b0b1b28b803a0d32ec3cbef1069");
        let parts = crate::output::SpecIdentity::of_job(&j).parts;
        assert!(parts["parameter sets"].starts_with("9 sets of (beta, gamma), "), "{parts:?}");
        assert_ne!(parts["parameter sets"], "9 sets of (beta, gamma), 8d7f36205f41f44b");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "params.csv", "b,a,seed\n0.5,1.7,11\n0.25,2,12\n0.25,3,13\n0.25,3,14\n");
        let job_file = write(
            dir.path(),
            "job.toml",
            "replicates = 2\n[parameters]\nfile = \"params.csv\"\n\
             [model]\nname = \"noop\"\nrows = 10\n",
        );
        let j = load_job(&job_file).unwrap();
        assert_eq!(j.spec_hash, "d451fe139943013a182e6045e1f8e8d579291e56a1ba773a92123e4bc3f7a048");
        assert_eq!(j.legacy_spec_hash(), None);
        let parts = crate::output::SpecIdentity::of_job(&j).parts;
        assert_eq!(parts["parameter sets"], "4 sets of (a, b), 685c359c9f493051");
    }

    #[test]
    fn model_outputs_selects_validates_and_is_hashed() {
        let outputs = |head: &str| job(head, grid_params()).unwrap().model_outputs;
        assert_eq!(outputs("replicates = 1"), ["prevalence", "incidence"]);
        assert_eq!(outputs("replicates = 1\nmodel_outputs = []"), Vec::<String>::new());
        // Model order, whatever the spec's order.
        assert_eq!(
            outputs("replicates = 1\nmodel_outputs = [\"incidence\", \"prevalence\"]"),
            ["prevalence", "incidence"]
        );
        assert_eq!(outputs("replicates = 1\nmodel_outputs = [\"incidence\"]"), ["incidence"]);

        let t = invalid_text(err("replicates = 1\nmodel_outputs = [\"in_bed\"]", grid_params()));
        assert!(
            t.contains("field `model_outputs`")
                && t.contains("no output `in_bed`")
                && t.contains("prevalence, incidence"),
            "{t}"
        );
        let t = invalid_text(err(
            "replicates = 1\nmodel_outputs = [\"incidence\", \"incidence\"]",
            grid_params(),
        ));
        assert!(t.contains("field `model_outputs`") && t.contains("twice"), "{t}");

        let h = |head: &str| job(head, grid_params()).unwrap().spec_hash;
        let all = h("replicates = 1");
        assert_ne!(all, h("replicates = 1\nmodel_outputs = []"));
        assert_ne!(all, h("replicates = 1\nmodel_outputs = [\"incidence\"]"));
        assert_ne!(
            h("replicates = 1\nmodel_outputs = []"),
            h("replicates = 1\nmodel_outputs = [\"incidence\"]")
        );
        // Same files, same hash: another order, or every output listed.
        assert_eq!(all, h("replicates = 1\nmodel_outputs = [\"incidence\", \"prevalence\"]"));
        assert_eq!(
            h("replicates = 1\nmodel_outputs = [\"prevalence\", \"incidence\"]"),
            h("replicates = 1\nmodel_outputs = [\"incidence\", \"prevalence\"]")
        );
    }

    #[test]
    fn spec_hash_covers_target_data_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("obs.csv");
        std::fs::write(&data, "day,cases\n1,3\n").unwrap();
        let spec: TargetSpec = toml::from_str(
            "name = \"cases\"\noutput = \"incidence\"\ncolumn = \"cases\"\ndata = \"obs.csv\"\n\
             data_column = \"cases\"\ndata_time_column = \"day\"\naggregation = \"annealed\"\n\
             loss = \"mse\"",
        )
        .unwrap();
        let target = Target {
            name: "cases".into(),
            output: "incidence".into(),
            output_index: 0,
            column: "cases".into(),
            time_column: "day".into(),
            times: vec![1.0],
            observed: vec![3.0],
            aggregation: spec.aggregation,
            loss_fn: crate::loss::Loss::Mse,
            data_file: data.clone(),
            data_from_table: false,
            data_time_column: "day".into(),
            lines: vec![2],
            observation: Default::default(),
        };
        let j = job("replicates = 2", grid_params()).unwrap();
        let hash = |specs: &[TargetSpec], t: &[Target]| {
            spec_hash(&j.sweep, 2, &hash_tail(&j.model, specs, t, None, &[]).unwrap())
        };
        let a = hash(std::slice::from_ref(&spec), std::slice::from_ref(&target));
        assert_eq!(a, hash(std::slice::from_ref(&spec), std::slice::from_ref(&target)));
        assert_ne!(a, hash(&[], &[]));
        std::fs::write(&data, "day,cases\n1,4\n").unwrap();
        assert_ne!(a, hash(std::slice::from_ref(&spec), &[target]));
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = err("replicates = 5\nreplicate = 3", grid_params());
        let EngineError::SpecSyntax { line, column, ref message, .. } = e else { panic!("{e:?}") };
        assert_eq!((line, column), (2, 1));
        assert!(
            message.contains("unknown field `replicate`") && message.contains("replicates"),
            "{message}"
        );
        assert!(e.to_string().starts_with("/jobs/flu.toml:2:1: "), "{e}");

        let e = err("replicates = \"ten\"", grid_params());
        let EngineError::SpecSyntax { line, column, .. } = e else { panic!("{e:?}") };
        assert_eq!((line, column), (1, 14));

        let e = err("replicates = 5\nseed = = 1", grid_params());
        assert!(matches!(e, EngineError::SpecSyntax { line: 2, .. }), "{e:?}");

        let e = err(
            "replicates = 5",
            &grid_params().replace("points_per_axis = 3", "points_per_axis = 3\ncont = 2"),
        );
        let EngineError::SpecSyntax { line, ref message, .. } = e else { panic!("{e:?}") };
        assert_eq!(line, 5);
        assert!(message.contains("unknown field `cont`"), "{message}");

        let e = err("replicates = 5", &grid_params().replace("max = 2.0", "mx = 2.0"));
        let EngineError::SpecSyntax { line, ref message, .. } = e else { panic!("{e:?}") };
        assert_eq!(line, 6);
        assert!(message.contains("unknown field `mx`"), "{message}");

        let e = err("replicates = 5", &grid_params().replace("\"grid\"", "\"gird\""));
        assert!(matches!(e, EngineError::SpecSyntax { line: 3, .. }), "{e:?}");
    }

    /// A space of `count` sets drawn by `sampler` with `beta` in `[beta_min, 2]`.
    fn space(sampler: &str, count: u64, beta_min: f64) -> String {
        format!(
            "[parameters]\nsampler = \"{sampler}\"\ncount = {count}\n[parameters.space]\n\
             beta = {{ min = {beta_min:?}, max = 2.0 }}\ngamma = {{ min = 0.1, max = 0.5 }}"
        )
    }

    /// A small space is checked set by set against the model's domain (naming the first set
    /// outside it), a large one by its box's corners (naming the corner); a large space that
    /// fits is accepted without computing its sets.
    #[test]
    fn domain_checked_by_set_or_by_corner() {
        let t = invalid_text(err("replicates = 1", &space("uniform", 50, -0.5)));
        let set = t.split("parameter set ").nth(1).unwrap_or_else(|| panic!("{t}"));
        let first: usize = set.split(' ').next().unwrap().parse().unwrap();
        let j = job("replicates = 1", &space("uniform", 50, 0.0)).unwrap();
        // The first set whose beta, mapped from [−0.5, 2] instead of [0, 2], is negative.
        let first_negative = (0..50)
            .find(|&i| -0.5 + 2.5 * (j.sweep.params(i).get_f64("beta").unwrap() / 2.0) < 0.0)
            .unwrap();
        assert_eq!(first, first_negative, "{t}");
        assert!(t.contains("outside the model's domain") && t.contains("narrow the ranges"), "{t}");

        let t = invalid_text(err("replicates = 1", &space("uniform", 200_000, -0.5)));
        assert!(
            t.contains(
                "the corner (beta = -0.5, gamma = 0.1) of the space is outside the \
                        model's domain"
            ),
            "{t}"
        );
        let j = job("replicates = 1", &space("latin_hypercube", 200_000, 0.0)).unwrap();
        assert_eq!(j.sweep.len(), 200_000);
        assert!(j.sweep.heap_bytes() < 2 * 4 * 200_000 + 4096, "{}", j.sweep.heap_bytes());
        let j = job("replicates = 1", &space("uniform", 200_000, 0.0)).unwrap();
        assert!(j.sweep.heap_bytes() < 4096, "{}", j.sweep.heap_bytes());
    }

    fn invalid_text(e: EngineError) -> String {
        assert!(matches!(e, EngineError::SpecInvalid { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn invalid_values_name_the_field() {
        let t = invalid_text(err("replicates = 0", grid_params()));
        assert!(t.contains("field `replicates`"), "{t}");
        let t = invalid_text(err("replicates = 1\nbatch_size = 0", grid_params()));
        assert!(t.contains("field `batch_size`"), "{t}");
        let t = invalid_text(
            parse_job(
                &format!(
                    "replicates = 1\n{}\n{}",
                    grid_params(),
                    MODEL.replace("population = 1000", "population = 0")
                ),
                Path::new("/jobs/flu.toml"),
            )
            .unwrap_err(),
        );
        assert!(t.contains("field `model.population`"), "{t}");
        let t = invalid_text(err("replicates = 1", &format!("{}\ndelta = 0.3", grid_params())));
        assert!(
            t.contains("parameters.space.delta") && t.contains("beta") && t.contains("gamma"),
            "{t}"
        );
        let t = invalid_text(err(
            "replicates = 1",
            &grid_params().replace("gamma = { min = 0.1, max = 0.5 }", ""),
        ));
        assert!(t.contains("`gamma`") && t.contains("parameters.space"), "{t}");
        let t =
            invalid_text(err("replicates = 1", &grid_params().replace("max = 2.0", "max = 0.5")));
        assert!(t.contains("parameters.space.beta.min") && t.contains("inverted"), "{t}");
        let t = invalid_text(err(
            "replicates = 1",
            &grid_params().replace("points_per_axis = 3", "count = 3"),
        ));
        assert!(t.contains("parameters.count") && t.contains("points_per_axis"), "{t}");
        let t = invalid_text(err(
            "replicates = 1",
            &grid_params().replace("beta = { min = 1.0, max = 2.0 }", "beta = nan"),
        ));
        assert!(t.contains("parameters.space.beta"), "{t}");
        let t = invalid_text(err("replicates = 1", "[parameters]"));
        assert!(t.contains("field `parameters`") && t.contains("file"), "{t}");
        let t = invalid_text(err(
            "replicates = 1",
            &grid_params().replace("[parameters]", "[parameters]\nfile = \"p.csv\""),
        ));
        assert!(t.contains("parameters.file") && t.contains("not both"), "{t}");
    }

    #[test]
    fn duplicate_target_names_refused() {
        let target = "[[targets]]\nname = \"cases\"\noutput = \"incidence\"\ncolumn = \"cases\"\n\
                      data = \"obs.csv\"\ndata_column = \"cases\"\ndata_time_column = \"day\"\n\
                      aggregation = \"annealed\"\nloss = \"mse\"\n";
        let text = format!("replicates = 1\n{}\n{MODEL}{target}{target}", grid_params());
        let t = invalid_text(parse_job(&text, Path::new("/jobs/flu.toml")).unwrap_err());
        assert!(t.contains("targets[1].name") && t.contains("targets[0]"), "{t}");
    }

    #[test]
    fn missing_job_file() {
        let e = load_job(Path::new("/nonexistent/job.toml")).unwrap_err();
        assert!(
            matches!(e, EngineError::Data { .. }) && e.to_string().contains("not found"),
            "{e}"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn csv_parameter_file_with_seeds() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "params.csv", "gamma,beta,seed\n0.5,1.7,11\n0.25,2,12\n0.25,3,13\n");
        let job_file = write(
            dir.path(),
            "job.toml",
            &format!("replicates = 10\n[parameters]\nfile = \"params.csv\"\n{MODEL}"),
        );
        let j = load_job(&job_file).unwrap();
        assert_eq!(j.name, "job");
        assert_eq!(
            j.sweep.columns(),
            [("beta".to_string(), ParamKind::Float), ("gamma".to_string(), ParamKind::Float)]
        );
        assert_eq!(j.sweep.len(), 3);
        assert_eq!(j.simulations(), 3);
        assert_eq!(j.sweep.fixed_seed(0), Some(11));
        assert_eq!(j.sweep.fixed_seed(2), Some(13));
        // The identity module's reference vector: {"beta":1.7,"gamma":0.5}.
        assert_eq!(
            j.sweep.param_id(0).hex().as_str(),
            "9deb3d6bd878034b070c42bc93488d5d6ae08cdf702724c942acfe3da7296acb"
        );
        assert_eq!(j.sweep.params(2).get_f64("beta"), Some(3.0));
    }

    #[test]
    fn parameter_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let job_file = write(
            dir.path(),
            "job.toml",
            &format!("replicates = 2\n[parameters]\nfile = \"params.csv\"\n{MODEL}"),
        );
        let run = |csv: &str| {
            write(dir.path(), "params.csv", csv);
            let e = load_job(&job_file).unwrap_err();
            assert!(matches!(e, EngineError::Data { .. }), "{e:?}");
            e.to_string()
        };
        let t = run("beta,gamma\n1,2\n3,4\n1,2.0\n");
        assert!(t.contains("params.csv:4") && t.contains("line 2"), "{t}");
        let t = run("beta,gamma,delta\n1,2,3\n");
        assert!(t.contains(":1: column `delta`") && t.contains("beta, gamma"), "{t}");
        let t = run("beta\n1\n");
        assert!(t.contains("`gamma`"), "{t}");
        let t = run("beta,gamma\n1,nan\n");
        assert!(t.contains(":2: column `gamma`"), "{t}");
        let t = run("beta,gamma,seed\n1,2,5\n1,2,6\n1,2.0,5\n");
        assert!(t.contains("params.csv:4") && t.contains("line 2"), "{t}");
        // The same parameters with different seeds: chosen replicates, one per row.
        write(dir.path(), "params.csv", "beta,gamma,seed\n1,2,5\n1,2,6\n");
        let job = load_job(&job_file).unwrap();
        assert_eq!(job.sweep.len(), 2);
        assert_eq!(job.sweep.param_id(0), job.sweep.param_id(1));
        assert_eq!(job.simulations(), 2);
        std::fs::remove_file(dir.path().join("params.csv")).unwrap();
        let e = load_job(&job_file).unwrap_err();
        assert!(
            matches!(e, EngineError::Data { .. }) && e.to_string().contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn parquet_parameter_file() {
        use arrow::array::{ArrayRef, Float64Array, Int64Array};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![
            ("beta", Arc::new(Float64Array::from(vec![1.7, 1.8])) as ArrayRef),
            ("gamma", Arc::new(Float64Array::from(vec![0.5, 0.5])) as ArrayRef),
            ("seed", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ])
        .unwrap();
        let f = std::fs::File::create(dir.path().join("p.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let job_file = write(
            dir.path(),
            "job.toml",
            &format!("replicates = 4\n[parameters]\nfile = \"p.parquet\"\n{MODEL}"),
        );
        let j = load_job(&job_file).unwrap();
        assert_eq!(j.sweep.len(), 2);
        assert_eq!(j.sweep.fixed_seed(1), Some(2));
        assert_eq!(
            j.sweep.param_id(0).hex().as_str(),
            "9deb3d6bd878034b070c42bc93488d5d6ae08cdf702724c942acfe3da7296acb"
        );
        assert_eq!(j.simulations(), 2);
    }

    #[test]
    fn duplicate_sampler_points_refused() {
        // A space without ranges and count > 1 would give identical sets: refused up front.
        let t = invalid_text(err(
            "replicates = 1",
            "[parameters]\nsampler = \"uniform\"\ncount = 2\n[parameters.space]\nbeta = 1.0\ngamma = 2.0",
        ));
        assert!(t.contains("parameters.count") && t.contains("identical"), "{t}");
    }

    /// The duplicate `check_duplicates` reports for sets `values` (parameter `a`) with
    /// `seeds`, as "second is identical to first".
    fn duplicate_of(values: &[i64], seeds: Option<Vec<u32>>) -> Option<String> {
        let sweep =
            Sweep::from_columns(vec![("a".into(), ParamColumn::Int(values.to_vec()))], seeds)
                .unwrap();
        check_duplicates(&sweep, Position::Index, |a, b, id| {
            assert_eq!(
                *id,
                sweep.param_id(match a {
                    Position::Index(i) => i,
                    Position::Line(_) => unreachable!(),
                })
            );
            invalid(Path::new("j"), "parameters", format!("{b} is identical to {a}"))
        })
        .err()
        .map(|e| match e {
            EngineError::SpecInvalid { message, .. } => message,
            other => panic!("{other:?}"),
        })
    }

    /// What the former map of identities seen reported: the first set met again, in sweep
    /// order, with the first set that had its identity.
    fn duplicate_by_map(values: &[i64], seeds: Option<&[u32]>) -> Option<String> {
        let mut seen = HashMap::new();
        for (i, v) in values.iter().enumerate() {
            if let Some(first) = seen.insert((v, seeds.map(|s| s[i])), i) {
                return Some(format!("parameter set {i} is identical to parameter set {first}"));
            }
        }
        None
    }

    #[test]
    fn duplicates_name_first_and_second_occurrence() {
        let dup = |values: &[i64]| duplicate_of(values, None);
        assert_eq!(dup(&[1, 2, 3]), None);
        assert_eq!(
            dup(&[1, 2, 1]).as_deref(),
            Some("parameter set 2 is identical to parameter set 0")
        );
        // The first set met again decides, not the identity that sorts first.
        for values in [[5, 7, 9, 7, 5, 5], [7, 5, 9, 5, 7, 7], [9, 7, 5, 7, 9, 9]] {
            assert_eq!(
                dup(&values).as_deref(),
                Some("parameter set 3 is identical to parameter set 1"),
                "{values:?}"
            );
        }
        // With seeds, the same values are duplicates only with the same seed.
        assert_eq!(duplicate_of(&[1, 1, 2], Some(vec![5, 6, 5])), None);
        assert_eq!(
            duplicate_of(&[1, 1, 2, 1], Some(vec![5, 6, 5, 6])).as_deref(),
            Some("parameter set 3 is identical to parameter set 1")
        );
    }

    proptest::proptest! {
        #[test]
        fn duplicates_as_a_map_would_report(
            values in proptest::collection::vec(0i64..6, 0..30),
            seeded in proptest::bool::ANY,
            seed_bits in proptest::collection::vec(0u32..2, 30),
        ) {
            let seeds = seeded.then(|| seed_bits[..values.len()].to_vec());
            proptest::prop_assert_eq!(
                duplicate_of(&values, seeds.clone()),
                duplicate_by_map(&values, seeds.as_deref())
            );
        }
    }

    #[test]
    fn unknown_model_setting_is_a_syntax_error_at_its_line() {
        // toml points at `[model]` (internally tagged enums buffer their table); the error names
        // the key, and the parser moves to the key's line.
        let text = format!("replicates = 1\n{}\n{MODEL}popul = 3\n", grid_params());
        let expected = text.lines().position(|l| l.starts_with("popul =")).unwrap() + 1;
        assert!(expected > text.lines().position(|l| l == "[model]").unwrap() + 1);
        let e = parse_job(&text, Path::new("j.toml")).unwrap_err();
        let EngineError::SpecSyntax { line, ref message, .. } = e else { panic!("{e:?}") };
        assert_eq!(line, expected);
        assert!(message.contains("[model] key `popul`: unknown field `popul`"), "{message}");
    }

    #[test]
    fn run_options_for_a_job_take_its_batch_size() {
        use crate::progress::{RunOptions, DEFAULT_BATCH_SIZE};
        let with = job("replicates = 1\nbatch_size = 7", grid_params()).unwrap();
        assert_eq!(RunOptions::for_job(&with).batch_size.get(), 7);
        assert_eq!(RunOptions::default().batch_size.get(), DEFAULT_BATCH_SIZE, "ignores jobs");
        let without = job("replicates = 1", grid_params()).unwrap();
        assert_eq!(RunOptions::for_job(&without), RunOptions::default());
    }

    #[test]
    fn key_line_offset_stays_in_its_table() {
        let section = "[model]\n  days = 3\n\"rate\" = 1\n[[targets]]\nname = \"x\"\n";
        assert_eq!(key_line_offset(section, "days"), Some(10));
        assert_eq!(key_line_offset(section, "rate"), Some(19));
        assert_eq!(key_line_offset(section, "name"), None, "`name` is in the next table");
        assert_eq!(key_line_offset(section, "day"), None, "whole keys only");
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
    }
}
