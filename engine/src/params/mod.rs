//! Parameter sets and the sweep's list of points.
//!
//! - [`ParameterSet`]: one point of the parameter space, a sorted map from name to value.
//! - [`SweepPoint`]: a parameter set at its position in the sweep, with its `param_id` and, for
//!   rows of a parameter file that carry a `seed`, the one seed to run.
//! - `space` (samplers over a named space) and `file` (CSV/Parquet parameter files) produce the
//!   points; `spec` decides which.

use std::fmt;

use crate::identity::ParamId;

pub mod file;
pub mod space;

/// One parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A real number (samplers always give these).
    Float(f64),
    /// An integer (from an integer column of a parameter file).
    Int(i64),
    /// A string (from a string column of a parameter file), e.g. a scenario name.
    Str(String),
}

impl ParamValue {
    /// The value as `f64`: floats as they are, integers converted, strings `None`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Float(x) => Some(*x),
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Str(_) => None,
        }
    }
}

/// A number as a JSON number, a string as a JSON string.
impl serde::Serialize for ParamValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParamValue::Float(x) => serializer.serialize_f64(*x),
            ParamValue::Int(i) => serializer.serialize_i64(*i),
            ParamValue::Str(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ParamValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Str(String),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Int(i) => ParamValue::Int(i),
            Raw::Float(x) => ParamValue::Float(x),
            Raw::Str(s) => ParamValue::Str(s),
        })
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// One point of the parameter space: parameter name → value, names sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParameterSet {
    /// Sorted by name, names unique. A sorted `Vec` rather than a `BTreeMap`: a sweep holds one
    /// of these per parameter set, and a map's node costs ~600 bytes for a handful of entries.
    values: Vec<(String, ParamValue)>,
}

impl ParameterSet {
    /// An empty parameter set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: ParamValue) {
        let name = name.into();
        match self.values.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => self.values[i].1 = value,
            Err(i) => self.values.insert(i, (name, value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| &self.values[i].1)
    }

    /// The value of `name` as `f64` (see [`ParamValue::as_f64`]).
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(ParamValue::as_f64)
    }

    /// Names and values, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl FromIterator<(String, ParamValue)> for ParameterSet {
    fn from_iter<T: IntoIterator<Item = (String, ParamValue)>>(iter: T) -> Self {
        let mut set = ParameterSet::new();
        for (name, value) in iter {
            set.insert(name, value);
        }
        set.values.shrink_to_fit();
        set
    }
}

/// The Arrow type a parameter column has in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// `Float64`
    Float,
    /// `Int64`
    Int,
    /// `Utf8`
    Str,
}

/// A parameter set at its place in the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// 0-based position in the sweep; batches are contiguous ranges of these.
    pub index: u64,
    /// The parameter values.
    pub params: ParameterSet,
    /// `param_id` of `params`.
    pub param_id: ParamId,
    /// From a parameter file's `seed` column: run exactly one replicate with this seed instead
    /// of `replicates` replicates with derived seeds.
    pub fixed_seed: Option<u32>,
}

/// The points of a sweep with the names and kinds of their parameters (the output columns).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Parameter names, sorted, with the kind of each.
    pub columns: Vec<(String, ParamKind)>,
    /// The points, `index` = position.
    pub points: Vec<SweepPoint>,
}
