//! Identities shared with the other tools of this field: `param_id` and replicate seeds.
//!
//! - `param_id` = lowercase hex of BLAKE2b-256 (32-byte digest) over the UTF-8 bytes
//!   `contracts:param:v1|` followed by the compact JSON of the parameters (keys sorted, no
//!   spaces). NaN and ±Inf are refused.
//! - The seed of replicate `i` = BLAKE2b with an 8-byte digest over `{param_id}:{i}`, read
//!   big-endian, mod 2^32.
//!
//! These are a contract: changing a byte here breaks joins with every other tool's results.
//!
//! A [`ParamId`] holds the 32-byte digest itself (`Copy`, 32 bytes on the stack); its hex
//! form, the one that is hashed and written, comes from [`ParamId::hex`] without allocating.

use blake2::digest::{Update, VariableOutput};
use blake2::{Blake2b, Blake2bVar, Digest};
use serde::ser::{SerializeMap, Serializer};
use std::fmt;

use crate::value::{ParamValueRef, ParameterSet};

/// Domain-separation prefix hashed before the parameters' JSON.
pub const PARAM_ID_PREFIX: &str = "contracts:param:v1|";

/// The identity of a parameter set: the 32-byte BLAKE2b-256 digest.
///
/// Written and hashed as 64 lowercase hex characters ([`ParamId::hex`], `Display`). Ordered as
/// its hex string is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamId([u8; 32]);

impl ParamId {
    /// Length of the hex form, in characters.
    pub const HEX_LEN: usize = 64;

    /// The id with digest `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> ParamId {
        ParamId(bytes)
    }

    /// The 32-byte digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lowercase hex form, on the stack.
    pub fn hex(&self) -> ParamIdHex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(&self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        ParamIdHex(out)
    }
}

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParamId({})", self.hex().as_str())
    }
}

/// The hex form of a [`ParamId`]: 64 lowercase hex characters, held inline (no allocation).
///
/// Dereferences to `str`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamIdHex([u8; 64]);

impl ParamIdHex {
    /// The 64 characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ParamId::hex writes only ASCII hex digits")
    }
}

impl std::ops::Deref for ParamIdHex {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ParamIdHex {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ParamIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ParamIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
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
    let mut json = Vec::new();
    write_canonical_json(params.iter().map(|(k, v)| (k, v.into())), &mut json)?;
    Ok(String::from_utf8(json).expect("serde_json writes UTF-8"))
}

/// Writes the compact JSON of the parameters `params` (as [`canonical_json`] does) into
/// `json`, which is cleared first; reuse one buffer across calls to save the allocations.
///
/// `params` yields (name, value) pairs, names sorted ascending (byte order) and unique, as
/// [`ParameterSet::iter`] and the columns of a [`crate::params::Sweep`] are.
///
/// # Errors
/// [`NonFiniteParameter`] for NaN or ±Inf (`json` then holds a prefix of the JSON).
///
/// # Panics
/// When the names are not sorted and unique: the JSON would not be canonical.
pub fn write_canonical_json<'a>(
    params: impl IntoIterator<Item = (&'a str, ParamValueRef<'a>)>,
    json: &mut Vec<u8>,
) -> Result<(), NonFiniteParameter> {
    json.clear();
    let mut ser = serde_json::Serializer::new(&mut *json);
    // Writing to a Vec cannot fail, and every value serializes (non-finite floats are refused
    // before they are written).
    const INFALLIBLE: &str = "serializing parameters into a Vec cannot fail";
    let mut map = ser.serialize_map(None).expect(INFALLIBLE);
    let mut previous: Option<&str> = None;
    for (name, value) in params {
        if let Some(previous) = previous {
            assert!(
                previous < name,
                "parameter names must be sorted and unique (`{name}` after `{previous}`)"
            );
        }
        previous = Some(name);
        if let ParamValueRef::Float(x) = value {
            if !x.is_finite() {
                return Err(NonFiniteParameter { name: name.to_string(), value: x });
            }
        }
        map.serialize_entry(name, &value).expect(INFALLIBLE);
    }
    SerializeMap::end(map).expect(INFALLIBLE);
    Ok(())
}

/// The `param_id` of a parameter set.
///
/// # Errors
/// [`NonFiniteParameter`] for NaN or ±Inf.
pub fn param_id(params: &ParameterSet) -> Result<ParamId, NonFiniteParameter> {
    param_id_of(params.iter().map(|(k, v)| (k, v.into())), &mut Vec::new())
}

/// The `param_id` of the parameters `params` (names sorted and unique, see
/// [`write_canonical_json`]), without building a [`ParameterSet`]; `json` is scratch space for
/// the canonical JSON, reused across calls.
///
/// # Errors
/// [`NonFiniteParameter`] for NaN or ±Inf.
///
/// # Panics
/// When the names are not sorted and unique.
pub fn param_id_of<'a>(
    params: impl IntoIterator<Item = (&'a str, ParamValueRef<'a>)>,
    json: &mut Vec<u8>,
) -> Result<ParamId, NonFiniteParameter> {
    write_canonical_json(params, json)?;
    let mut hasher = Blake2b::<blake2::digest::consts::U32>::new();
    Digest::update(&mut hasher, PARAM_ID_PREFIX.as_bytes());
    Digest::update(&mut hasher, json);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&hasher.finalize());
    Ok(ParamId(digest))
}

/// The seed of replicate `replicate` (0-based) of the parameter set `id`, in `0..2^32`.
pub fn replicate_seed(id: &ParamId, replicate: u32) -> u32 {
    let mut hasher = Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    // The bytes of `{hex}:{replicate}`, fed in parts.
    hasher.update(id.hex().as_bytes());
    hasher.update(b":");
    let mut digits = [0u8; 10];
    hasher.update(decimal(replicate, &mut digits));
    let mut out = [0u8; 8];
    hasher.finalize_variable(&mut out).expect("output buffer is exactly the requested 8 bytes");
    // mod 2^32 of the big-endian u64 is its low 32 bits.
    (u64::from_be_bytes(out) & 0xffff_ffff) as u32
}

/// The decimal digits of `n` (as `n.to_string()`), written at the end of `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ParamValue;

    fn set(pairs: &[(&str, ParamValue)]) -> ParameterSet {
        pairs.iter().cloned().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn vector_beta_gamma() {
        let p = set(&[("gamma", ParamValue::Float(0.5)), ("beta", ParamValue::Float(1.7))]);
        assert_eq!(canonical_json(&p).unwrap(), r#"{"beta":1.7,"gamma":0.5}"#);
        let id = param_id(&p).unwrap();
        assert_eq!(
            id.hex().as_str(),
            "9deb3d6bd878034b070c42bc93488d5d6ae08cdf702724c942acfe3da7296acb"
        );
        let seeds: Vec<u32> = (0..3).map(|i| replicate_seed(&id, i)).collect();
        assert_eq!(seeds, vec![613736416, 1954931685, 3355901632]);
    }

    #[test]
    fn vector_r0() {
        let p = set(&[("R0", ParamValue::Float(3.2))]);
        let id = param_id(&p).unwrap();
        assert_eq!(
            id.hex().as_str(),
            "76b93836daabbf955d62fef2329199876779d5d7809d427a3e71fcd49c0780b6"
        );
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
            param_id(&p).unwrap().to_string(),
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

    /// The JSON and id as the implementation before the columnar sweep computed them: through
    /// a `serde_json::Value` map.
    fn reference(params: &ParameterSet) -> (String, String) {
        let mut map = serde_json::Map::new();
        for (name, value) in params.iter() {
            let v = match value {
                ParamValue::Float(x) => {
                    serde_json::Value::Number(serde_json::Number::from_f64(*x).unwrap())
                }
                ParamValue::Int(i) => serde_json::Value::Number((*i).into()),
                ParamValue::Str(s) => serde_json::Value::String(s.clone()),
            };
            map.insert(name.to_string(), v);
        }
        let json = serde_json::Value::Object(map).to_string();
        let mut hasher = Blake2b::<blake2::digest::consts::U32>::new();
        Digest::update(&mut hasher, PARAM_ID_PREFIX.as_bytes());
        Digest::update(&mut hasher, json.as_bytes());
        let hex = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (json, hex)
    }

    #[test]
    fn same_json_and_id_as_a_serde_json_map() {
        let cases = [
            set(&[]),
            set(&[("a", ParamValue::Float(2.0)), ("b", ParamValue::Float(-0.0))]),
            set(&[("x", ParamValue::Float(1e21)), ("y", ParamValue::Float(1.5e-7))]),
            set(&[("x", ParamValue::Float(f64::MAX)), ("y", ParamValue::Float(f64::MIN_POSITIVE))]),
            set(&[("k", ParamValue::Int(i64::MIN)), ("m", ParamValue::Int(i64::MAX))]),
            set(&[
                ("quote\"d", ParamValue::Str("tab\t, newline\n, \\ and é, \u{1}".into())),
                ("Z", ParamValue::Str(String::new())),
                ("é", ParamValue::Float(0.1)),
            ]),
        ];
        let mut json = Vec::new();
        for p in &cases {
            let (ref_json, ref_hex) = reference(p);
            assert_eq!(canonical_json(p).unwrap(), ref_json);
            let id = param_id_of(p.iter().map(|(k, v)| (k, v.into())), &mut json).unwrap();
            assert_eq!(id.hex().as_str(), ref_hex);
            assert_eq!(id, param_id(p).unwrap());
        }
    }

    #[test]
    fn hex_display_debug_and_order() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x09;
        let id = ParamId::from_bytes(bytes);
        let hex = format!("ab{}09", "0".repeat(60));
        assert_eq!(id.hex().as_str(), hex);
        assert_eq!(&*id.hex(), hex);
        assert_eq!(id.to_string(), hex);
        assert_eq!(format!("{id:?}"), format!("ParamId({hex})"));
        assert_eq!(id.as_bytes(), &bytes);
        assert_eq!(id.hex().len(), ParamId::HEX_LEN);
        // Ordered as the hex strings are.
        let mut ids: Vec<ParamId> = (0..50u8)
            .map(|i| param_id(&set(&[("a", ParamValue::Int(i.into()))])).unwrap())
            .collect();
        let mut hexes: Vec<String> = ids.iter().map(ToString::to_string).collect();
        ids.sort();
        hexes.sort();
        assert_eq!(ids.iter().map(ToString::to_string).collect::<Vec<_>>(), hexes);
    }

    #[test]
    fn replicate_seed_hashes_hex_colon_decimal() {
        let id = param_id(&set(&[("R0", ParamValue::Float(3.2))])).unwrap();
        for replicate in [0, 1, 9, 10, 99, 100, 12345, u32::MAX] {
            let mut hasher = Blake2bVar::new(8).unwrap();
            hasher.update(format!("{id}:{replicate}").as_bytes());
            let mut out = [0u8; 8];
            hasher.finalize_variable(&mut out).unwrap();
            let expected = (u64::from_be_bytes(out) & 0xffff_ffff) as u32;
            assert_eq!(replicate_seed(&id, replicate), expected, "replicate {replicate}");
        }
    }

    #[test]
    #[should_panic(expected = "sorted and unique")]
    fn unsorted_names_panic() {
        let params = [("b", ParamValueRef::Float(1.0)), ("a", ParamValueRef::Float(1.0))];
        let _ = param_id_of(params, &mut Vec::new());
    }
}
