//! What a job is made of, part by part, so that a refused resume can say what changed.
//!
//! The spec hash ([`crate::spec::Job::spec_hash`]) decides whether a directory holds this job's
//! results; it is one number. The manifest also stores one short fingerprint per part of the
//! spec (parameter sets, replicates, model, written model outputs, each target), and when the
//! hashes differ the parts whose fingerprints differ are named. The fingerprints only explain:
//! they never decide.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use blake2::{Blake2b, Digest};

use crate::spec::Job;

/// Hex characters kept of each part's BLAKE2b-256 fingerprint.
const PART_HASH_CHARS: usize = 16;
/// Key prefix of a target's part; the target's name follows.
const TARGET_PREFIX: &str = "target ";
/// Key of the written model outputs' part: `all` or the names, e.g. `[in_bed]`.
const MODEL_OUTPUTS: &str = "model_outputs";

/// The spec hash of a job and a fingerprint of each of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIdentity {
    /// [`Job::spec_hash`].
    pub hash: String,
    /// Part name → fingerprint: `parameter sets`, `replicates`, `model`, `model_outputs`, and
    /// one `target <name>` per target. Stored in [`crate::output::Manifest::spec_parts`].
    pub parts: BTreeMap<String, String>,
    /// The job's earlier spec hash ([`Job::legacy_spec_hash`]), computed only when a manifest's
    /// hash differs from `hash`: a match is the same job, and its manifest is upgraded.
    pub legacy: Option<LegacySpecHash>,
}

/// A job's spec hash as an earlier simsweep computed it, computed on demand (it is O(sets)).
#[derive(Clone)]
pub struct LegacySpecHash(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl LegacySpecHash {
    /// The hash `compute` returns (`None`: the job has no earlier hash).
    pub fn new(compute: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        LegacySpecHash(Arc::new(compute))
    }

    /// Computes the hash.
    pub fn compute(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for LegacySpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LegacySpecHash(..)")
    }
}

impl PartialEq for LegacySpecHash {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LegacySpecHash {}

impl SpecIdentity {
    /// The identity of `job`. O(1) for a sweep computed from a space (its description is
    /// fingerprinted), O(sets) for stored sets.
    pub fn of_job(job: &Job) -> SpecIdentity {
        SpecIdentity::of_job_with(job, false).with_legacy(job)
    }

    /// The identity `of_job` gave before a space's sets were fingerprinted by its description
    /// (`legacy`: fingerprint every set, as stored sets are).
    fn of_job_with(job: &Job, legacy: bool) -> SpecIdentity {
        let mut parts = BTreeMap::new();
        let mut points = Hasher::default();
        match job.sweep().space_points() {
            Some(space) if !legacy => points.line(space.description()),
            _ => {
                let mut point = String::new();
                let n = job.sweep().len();
                for chunk in (0..n).step_by(crate::spec::PARAM_ID_CHUNK) {
                    let end = (chunk + crate::spec::PARAM_ID_CHUNK).min(n);
                    for (i, id) in (chunk..end).zip(job.sweep().param_ids(chunk..end)) {
                        point.clear();
                        // `{param_id}:{fixed seed:?}`, e.g. `…:None`; writing to a String
                        // cannot fail.
                        let _ = write!(point, "{id}:{:?}", job.sweep().fixed_seed(i));
                        points.line(&point);
                    }
                }
            }
        }
        let names: Vec<&str> = job.sweep().columns().iter().map(|(n, _)| n.as_str()).collect();
        parts.insert(
            "parameter sets".to_string(),
            format!("{} sets of ({}), {}", job.sweep().len(), names.join(", "), points.finish()),
        );
        parts.insert("replicates".to_string(), job.replicates().to_string());
        let model = serde_json::to_string(&job.model()).unwrap_or_else(|e| format!("<{e}>"));
        let mut h = Hasher::default();
        h.line(&model);
        parts.insert("model".to_string(), format!("{}, {}", job.simulator().name(), h.finish()));
        let job_dir = job.spec_file().parent().unwrap_or(std::path::Path::new(""));
        for t in job.targets() {
            let mut h = Hasher::default();
            // Debug of the resolved target: output, column, aligned observations (f64 Debug is
            // exact), aggregation and loss with its settings; and the data file's path as the
            // spec gives it (the spec hash has it: a renamed copy of the same data must be
            // named too).
            let data = t.data_file.strip_prefix(job_dir).unwrap_or(&t.data_file);
            h.line(&format!(
                "{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}",
                t.output,
                t.column,
                t.time_column,
                t.times,
                t.observed,
                t.aggregation,
                t.loss_fn,
                data.display()
            ));
            // The measurement model only when it is not the identity (parts of outputs
            // written before it existed stay the same).
            if !t.observation.is_identity() {
                h.line(&format!("{:?}", t.observation));
            }
            parts.insert(format!("{TARGET_PREFIX}{}", t.name), h.finish());
        }
        let all: Vec<String> = job.simulator().outputs().into_iter().map(|o| o.name).collect();
        let written = if job.model_outputs() == all {
            "all".to_string()
        } else {
            format!("[{}]", job.model_outputs().join(", "))
        };
        parts.insert(MODEL_OUTPUTS.to_string(), written);
        let resolved = job.model().resolved(job_dir);
        if let Some(files) = resolved.external().and_then(model_files) {
            parts.insert(MODEL_FILES.to_string(), files);
        }
        SpecIdentity { hash: job.spec_hash().to_string(), parts, legacy: None }
    }

    /// Adds `job`'s [`Job::legacy_spec_hash`], when it has one, computed on demand.
    fn with_legacy(mut self, job: &Job) -> SpecIdentity {
        if job.sweep().space_points().is_some() {
            let job = job.clone();
            self.legacy = Some(LegacySpecHash::new(move || job.legacy_spec_hash()));
        }
        self
    }

    /// The parts the manifest of an output written before spaces were fingerprinted by their
    /// description stores for `job` (tests of the upgrade).
    pub fn legacy_parts_of_job(job: &Job) -> BTreeMap<String, String> {
        SpecIdentity::of_job_with(job, true).parts
    }

    /// The target names of a stored parts map, in name order.
    pub fn target_names(parts: &BTreeMap<String, String>) -> Vec<String> {
        parts.keys().filter_map(|k| k.strip_prefix(TARGET_PREFIX)).map(str::to_string).collect()
    }
}

/// Key of the part naming an external model's program files and their contents' hashes.
pub const MODEL_FILES: &str = "model files";

/// The files an external model's command names (the program when given as a path, and any
/// argument that is an existing file, relative to the worker's working directory), each as
/// `name hash` of its contents; `None` when it names none. Recorded in the manifest so that
/// `simsweep merge` can tell shards run with different model code apart (the spec hash covers
/// the command line, not the files it runs).
fn model_files(external: &crate::model::external::ExternalSettings) -> Option<String> {
    let dir = external.working_dir.clone().unwrap_or_default();
    let mut named = Vec::new();
    for word in &external.command {
        let path = dir.join(word);
        if !path.is_file() {
            continue;
        }
        let mut h = Hasher::default();
        match std::fs::read(&path) {
            Ok(bytes) => h.0.update(&bytes),
            Err(e) => h.line(&format!("<unreadable: {e}>")),
        }
        named.push(format!("{word} {}", h.finish()));
    }
    (!named.is_empty()).then(|| named.join(", "))
}

/// What differs between the stored parts `before` and `now`, one phrase per part, e.g.
/// `replicates (3 → 5)`, `model`, `target \`in_bed\` added`. Empty when no part differs (or
/// `before` is empty: a manifest written before parts were stored).
pub fn changed_parts(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    if before.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    for key in keys {
        let label = match key.strip_prefix(TARGET_PREFIX) {
            Some(name) => format!("target `{name}`"),
            None => key.clone(),
        };
        match (before.get(key), now.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) if key == "replicates" || key == MODEL_OUTPUTS => {
                out.push(format!("{label} ({a} → {b})"))
            }
            (Some(a), Some(b)) if key == "parameter sets" => {
                // "N sets of (names), hash": show the count and names when they changed.
                let head =
                    |s: &str| s.rsplit_once(", ").map_or(s.to_string(), |(h, _)| h.to_string());
                if head(a) == head(b) {
                    out.push(format!("{label} (same number and names, other values)"));
                } else {
                    out.push(format!("{label} ({} → {})", head(a), head(b)));
                }
            }
            (Some(_), Some(_)) => out.push(label),
            (Some(_), None) => out.push(format!("{label} removed")),
            (None, Some(_)) => out.push(format!("{label} added")),
            (None, None) => {}
        }
    }
    out
}

#[derive(Default)]
struct Hasher(Blake2b<blake2::digest::consts::U32>);

impl Hasher {
    fn line(&mut self, s: &str) {
        self.0.update(s.as_bytes());
        self.0.update(b"\n");
    }
    fn finish(self) -> String {
        let bytes = self.0.finalize();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..PART_HASH_CHARS].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn names_what_changed() {
        let a = parts(&[
            ("parameter sets", "10 sets of (beta), aaaa"),
            ("replicates", "3"),
            ("model", "sir, m1"),
            ("target x", "t1"),
            ("target y", "t2"),
        ]);
        let b = parts(&[
            ("parameter sets", "12 sets of (beta), bbbb"),
            ("replicates", "5"),
            ("model", "sir, m1"),
            ("target x", "t9"),
            ("target z", "t3"),
        ]);
        assert_eq!(
            changed_parts(&a, &b),
            vec![
                "parameter sets (10 sets of (beta) → 12 sets of (beta))",
                "replicates (3 → 5)",
                "target `x`",
                "target `y` removed",
                "target `z` added",
            ]
        );
        assert!(changed_parts(&a, &a).is_empty());
        assert!(changed_parts(&BTreeMap::new(), &b).is_empty());
        assert_eq!(SpecIdentity::target_names(&a), vec!["x", "y"]);
    }
}
