//! Parameter values and parameter sets: the plain data that [`crate::identity`] hashes and
//! [`crate::params`] stores by column (re-exported there). A module of its own so that neither
//! of those two depends on the other's internals (`params` uses `identity`, not the reverse).

use std::fmt;

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

/// A borrowed [`ParamValue`]: what a [`Sweep`]'s columns hand out without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValueRef<'a> {
    /// A real number.
    Float(f64),
    /// An integer.
    Int(i64),
    /// A string.
    Str(&'a str),
}

impl ParamValueRef<'_> {
    /// The owned value.
    pub fn to_owned_value(self) -> ParamValue {
        match self {
            ParamValueRef::Float(x) => ParamValue::Float(x),
            ParamValueRef::Int(i) => ParamValue::Int(i),
            ParamValueRef::Str(s) => ParamValue::Str(s.to_string()),
        }
    }
}

impl<'a> From<&'a ParamValue> for ParamValueRef<'a> {
    fn from(value: &'a ParamValue) -> Self {
        match value {
            ParamValue::Float(x) => ParamValueRef::Float(*x),
            ParamValue::Int(i) => ParamValueRef::Int(*i),
            ParamValue::Str(s) => ParamValueRef::Str(s),
        }
    }
}

/// As [`ParamValue`]'s: a number as a JSON number, a string as a JSON string.
impl serde::Serialize for ParamValueRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParamValueRef::Float(x) => serializer.serialize_f64(*x),
            ParamValueRef::Int(i) => serializer.serialize_i64(*i),
            ParamValueRef::Str(s) => serializer.serialize_str(s),
        }
    }
}

/// One point of the parameter space: parameter name → value, names sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParameterSet {
    /// Sorted by name, names unique. A sorted `Vec` rather than a `BTreeMap`: a sweep holds one
    /// of these per parameter set, and a map's node costs ~600 bytes for a handful of entries.
    pub(crate) values: Vec<(String, ParamValue)>,
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
