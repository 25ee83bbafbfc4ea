//! Identities shared with the other tools of this field: `param_id` and replicate seeds.
//!
//! - `param_id` = lowercase hex of BLAKE2b-256 (32-byte digest) over the UTF-8 bytes
//!   `contracts:param:v1|` followed by the compact JSON of the parameters (keys sorted, no
//!   spaces). NaN and ±Inf are refused.
//! - The seed of replicate `i` = BLAKE2b with an 8-byte digest over `{param_id}:{i}`, read
//!   big-endian, mod 2^32.
//!
//! These are a contract: changing a byte here breaks joins with every other tool's results.

use blake2::digest::{Update, VariableOutput};
use blake2::{Blake2b, Blake2bVar, Digest};
use std::fmt;
use std::sync::Arc;

use crate::params::{ParamValue, ParameterSet};

/// Domain-separation prefix hashed before the parameters' JSON.
pub const PARAM_ID_PREFIX: &str = "contracts:param:v1|";

/// The identity of a parameter set: 64 lowercase hex characters.
///
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId(Arc<str>);

impl ParamId {
    /// The 64-character lowercase hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParamId({})", &self.0)
    }
}

/// A parameter value that cannot be given an identity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter `{name}` is {value}; NaN and infinite values have no param_id")]
pub struct NonFiniteParameter {
    /// The parameter's name.
    pub name: String,
    /// The offending value.
    pub value: f64,
}

/// The compact JSON of a parameter set: keys sorted, no spaces.
///
/// Floats print as serde_json prints an `f64` (shortest round-trip, e.g. `1.7`, `2.0` → `2.0`);
/// integers as integers; strings JSON-escaped.
///
/// # Errors
/// [`NonFiniteParameter`] for NaN or ±Inf.
pub fn canonical_json(params: &ParameterSet) -> Result<String, NonFiniteParameter> {
    let mut map = serde_json::Map::new();
    for (name, value) in params.iter() {
        let v = match value {
            ParamValue::Float(x) => {
                let n = serde_json::Number::from_f64(*x)
                    .ok_or_else(|| NonFiniteParameter { name: name.to_string(), value: *x })?;
                serde_json::Value::Number(n)
            }
            ParamValue::Int(i) => serde_json::Value::Number((*i).into()),
            ParamValue::Str(s) => serde_json::Value::String(s.clone()),
        };
        map.insert(name.to_string(), v);
    }
    // serde_json::Map is a BTreeMap without the `preserve_order` feature: keys come out sorted.
    Ok(serde_json::Value::Object(map).to_string())
}

/// The `param_id` of a parameter set.
///
/// # Errors
/// [`NonFiniteParameter`] for NaN or ±Inf.
pub fn param_id(params: &ParameterSet) -> Result<ParamId, NonFiniteParameter> {
    let json = canonical_json(params)?;
    let mut hasher = Blake2b::<blake2::digest::consts::U32>::new();
    Digest::update(&mut hasher, PARAM_ID_PREFIX.as_bytes());
    Digest::update(&mut hasher, json.as_bytes());
    let digest = hasher.finalize();
    Ok(ParamId(hex(&digest).into()))
}

/// The seed of replicate `replicate` (0-based) of the parameter set `id`, in `0..2^32`.
pub fn replicate_seed(id: &ParamId, replicate: u32) -> u32 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    hasher.update(format!("{}:{}", id.as_str(), replicate).as_bytes());
    let mut out = [0u8; 8];
    hasher.finalize_variable(&mut out).expect("output buffer is exactly the requested 8 bytes");
    // mod 2^32 of the big-endian u64 is its low 32 bits.
    (u64::from_be_bytes(out) & 0xffff_ffff) as u32
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, ParamValue)]) -> ParameterSet {
        pairs.iter().cloned().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn vector_beta_gamma() {
        let p = set(&[("gamma", ParamValue::Float(0.5)), ("beta", ParamValue::Float(1.7))]);
        assert_eq!(canonical_json(&p).unwrap(), r#"{"beta":1.7,"gamma":0.5}"#);
        let id = param_id(&p).unwrap();
        assert_eq!(id.as_str(), "9deb3d6bd878034b070c42bc93488d5d6ae08cdf702724c942acfe3da7296acb");
        let seeds: Vec<u32> = (0..3).map(|i| replicate_seed(&id, i)).collect();
        assert_eq!(seeds, vec![613736416, 1954931685, 3355901632]);
    }

    #[test]
    fn vector_r0() {
        let p = set(&[("R0", ParamValue::Float(3.2))]);
        let id = param_id(&p).unwrap();
        assert_eq!(id.as_str(), "76b93836daabbf955d62fef2329199876779d5d7809d427a3e71fcd49c0780b6");
        let seeds: Vec<u32> = (0..3).map(|i| replicate_seed(&id, i)).collect();
        assert_eq!(seeds, vec![3623437555, 3911892634, 1478281136]);
    }

    #[test]
    fn vector_int_and_string() {
        let p = set(&[
            ("name", ParamValue::Str("x".into())),
            ("gamma", ParamValue::Float(0.25)),
            ("beta", ParamValue::Int(2)),
        ]);
        assert_eq!(canonical_json(&p).unwrap(), r#"{"beta":2,"gamma":0.25,"name":"x"}"#);
        assert_eq!(
            param_id(&p).unwrap().as_str(),
            "802cd616c673875325fba8eefc837b08640ee1da022a4fb75758bfdc78031408"
        );
    }

    #[test]
    fn non_finite_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let p = set(&[("beta", ParamValue::Float(bad))]);
            let err = param_id(&p).unwrap_err();
            assert_eq!(err.name, "beta");
        }
    }
}
