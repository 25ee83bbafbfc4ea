//! Parameter sets and the sweep's columns of them.
//!
//! - [`ParameterSet`]: one point of the parameter space, a sorted map from name to value.
//! - [`Sweep`]: every parameter set of a job: computed on demand from a space's sampler
//!   ([`space::SpacePoints`]), or stored by column (one typed [`ParamColumn`] per parameter)
//!   for a parameter file, with each set's one seed to run when the file has a `seed` column.
//!   A set ([`Sweep::params`]) and its [`ParamId`] ([`Sweep::param_id`]) are computed on
//!   demand.
//! - `space` (samplers over a named space) and `file` (CSV/Parquet parameter files) produce the
//!   sweeps; `spec` checks them against the model and refuses duplicates.
//!
//! # Memory
//!
//! A sweep from a space holds no sets: set `i` is computed when asked for (≈ 0.1–0.3 µs per
//! set; `latin_hypercube` holds its strata permutations, 4 bytes per set per range). A sweep
//! from a parameter file is the one part of a job that grows with the number of parameter
//! sets, so it holds per set only its values (8 bytes per number; a string's bytes plus an 8-byte offset) and,
//! with a seed column, a 4-byte seed: 16 bytes per set for two float parameters
//! ([`Sweep::heap_bytes`]). `param_id`s are not stored (32 bytes per set, twice the values):
//! the dataflow computes a batch's ids when it needs them (≈ 1 µs per set: BLAKE2b of the
//! canonical JSON).

use crate::identity::{self, NonFiniteParameter, ParamId};
pub use crate::value::{ParamValue, ParamValueRef, ParameterSet};
use space::SpacePoints;

pub mod file;
pub mod space;

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

/// The values of a string parameter, one per parameter set: the strings concatenated, with
/// the end of each (two allocations for the column rather than one per value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrColumn {
    /// Every value, concatenated.
    data: String,
    /// `ends[i]` = byte offset in `data` where value `i` ends; it starts where value `i - 1`
    /// ends (at 0 for value 0).
    ends: Vec<usize>,
}

impl StrColumn {
    /// An empty column.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `value`.
    pub fn push(&mut self, value: &str) {
        self.data.push_str(value);
        self.ends.push(self.data.len());
    }

    /// Value `i`, if there are more than `i` values.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.data[start..end])
    }

    fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StrColumn {
    fn from_iter<T: IntoIterator<Item = S>>(iter: T) -> Self {
        let mut column = StrColumn::new();
        for value in iter {
            column.push(value.as_ref());
        }
        column
    }
}

/// One parameter's values, one per parameter set, in sweep order.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamColumn {
    /// A [`ParamKind::Float`] parameter.
    Float(Vec<f64>),
    /// A [`ParamKind::Int`] parameter.
    Int(Vec<i64>),
    /// A [`ParamKind::Str`] parameter.
    Str(StrColumn),
}

impl ParamColumn {
    /// An empty column of kind `kind`.
    pub fn new(kind: ParamKind) -> Self {
        match kind {
            ParamKind::Float => ParamColumn::Float(Vec::new()),
            ParamKind::Int => ParamColumn::Int(Vec::new()),
            ParamKind::Str => ParamColumn::Str(StrColumn::new()),
        }
    }

    /// The kind of the values.
    pub fn kind(&self) -> ParamKind {
        match self {
            ParamColumn::Float(_) => ParamKind::Float,
            ParamColumn::Int(_) => ParamKind::Int,
            ParamColumn::Str(_) => ParamKind::Str,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            ParamColumn::Float(v) => v.len(),
            ParamColumn::Int(v) => v.len(),
            ParamColumn::Str(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`, if there are more than `i` values.
    pub fn get(&self, i: usize) -> Option<ParamValueRef<'_>> {
        match self {
            ParamColumn::Float(v) => v.get(i).map(|x| ParamValueRef::Float(*x)),
            ParamColumn::Int(v) => v.get(i).map(|x| ParamValueRef::Int(*x)),
            ParamColumn::Str(v) => v.get(i).map(ParamValueRef::Str),
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            ParamColumn::Float(v) => v.shrink_to_fit(),
            ParamColumn::Int(v) => v.shrink_to_fit(),
            ParamColumn::Str(v) => v.shrink_to_fit(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ParamColumn::Float(v) => v.capacity() * std::mem::size_of::<f64>(),
            ParamColumn::Int(v) => v.capacity() * std::mem::size_of::<i64>(),
            ParamColumn::Str(v) => v.heap_bytes(),
        }
    }
}

/// A parameter set of a would-be [`Sweep`] that has no `param_id` (a NaN or infinite value).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter set {index} has no param_id")]
pub struct NonFiniteParameterSet {
    /// 0-based position of the set in the sweep.
    pub index: usize,
    /// The offending parameter.
    #[source]
    pub source: NonFiniteParameter,
}

/// Every parameter set of a job, in sweep order, stored by column.
///
/// Parameter set `i` (its position; batches are contiguous ranges of positions) is value `i` of
/// every column, has `param_id` [`Sweep::param_id`]`(i)` and, when the parameter file has a
/// `seed` column, the one seed [`Sweep::fixed_seed`]`(i)` to run instead of `replicates`
/// replicates with derived seeds. See the [module documentation](self) for its memory.
///
/// Invariants, kept by the constructors: column names sorted and unique; every column and the
/// seeds have one entry per set; every value is finite (so every set has a `param_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Parameter names, sorted, with the kind of each.
    columns: Vec<(String, ParamKind)>,
    /// The values.
    values: Values,
    /// Number of sets.
    len: usize,
    /// One seed per set, only when the sets came from a parameter file with a `seed` column.
    fixed_seeds: Option<Vec<u32>>,
}

/// Where a sweep's values come from.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    /// Stored, `columns[j]` of parameter `Sweep::columns[j]`.
    Stored(Vec<ParamColumn>),
    /// Computed from a space, one `Float` per parameter in name order.
    Space(SpacePoints),
}

impl Sweep {
    /// The sweep of a space's sets, computed on demand. `names`: the space's parameters,
    /// sorted (one `Float` column each, in the order of `points`' values).
    pub(crate) fn from_space(names: Vec<String>, points: SpacePoints) -> Sweep {
        debug_assert!(names.windows(2).all(|w| w[0] < w[1]), "names sorted and unique");
        let len = usize::try_from(points.len()).expect("a space's sets fit in usize");
        Sweep {
            columns: names.into_iter().map(|n| (n, ParamKind::Float)).collect(),
            values: Values::Space(points),
            len,
            fixed_seeds: None,
        }
    }

    /// The sweep of the parameters `columns` (name and values; any order, sorted here) and, for
    /// a parameter file with a `seed` column, one fixed seed per set. Checks that every set has
    /// a `param_id` (finite values).
    ///
    /// The number of sets is the columns' common length (without columns: the number of seeds,
    /// or 0).
    ///
    /// # Errors
    /// [`NonFiniteParameterSet`] for the first set (in sweep order) with a NaN or infinite
    /// value, naming the first such parameter of it (in name order).
    ///
    /// # Panics
    /// When a name appears twice, or the columns (and seeds) differ in length.
    pub fn from_columns(
        mut columns: Vec<(String, ParamColumn)>,
        mut fixed_seeds: Option<Vec<u32>>,
    ) -> Result<Sweep, NonFiniteParameterSet> {
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in columns.windows(2) {
            assert!(pair[0].0 != pair[1].0, "parameter `{}` is given twice", pair[0].0);
        }
        let len = match (columns.first(), &fixed_seeds) {
            (Some((_, column)), _) => column.len(),
            (None, Some(seeds)) => seeds.len(),
            (None, None) => 0,
        };
        for (name, column) in &columns {
            assert_eq!(column.len(), len, "column `{name}` has another length than the others");
        }
        if let Some(seeds) = &mut fixed_seeds {
            assert_eq!(seeds.len(), len, "one fixed seed per parameter set");
            seeds.shrink_to_fit();
        }
        let (columns, values): (Vec<(String, ParamKind)>, Vec<ParamColumn>) = columns
            .into_iter()
            .map(|(name, mut column)| {
                column.shrink_to_fit();
                ((name, column.kind()), column)
            })
            .unzip();
        let values: Vec<ParamColumn> = values;
        // The first non-finite value in sweep order, then name order.
        let non_finite = values.iter().enumerate().filter_map(|(j, column)| match column {
            ParamColumn::Float(xs) => xs.iter().position(|x| !x.is_finite()).map(|i| (i, j)),
            _ => None,
        });
        if let Some((index, j)) = non_finite.min() {
            let ParamColumn::Float(xs) = &values[j] else { unreachable!("a float column") };
            let source = NonFiniteParameter { name: columns[j].0.clone(), value: xs[index] };
            return Err(NonFiniteParameterSet { index, source });
        }
        Ok(Sweep { columns, values: Values::Stored(values), len, fixed_seeds })
    }

    /// The sweep of the parameter sets `sets`, in order, with their fixed seeds if any: a
    /// convenience for tests and small embedded sweeps (a large sweep should be built by
    /// column, [`Sweep::from_columns`]).
    ///
    /// # Errors
    /// As [`Sweep::from_columns`].
    ///
    /// # Panics
    /// When the sets do not all have the same names with the same kinds of values, a set has
    /// no parameters, or there is not one seed per set.
    pub fn from_sets(
        sets: &[ParameterSet],
        fixed_seeds: Option<Vec<u32>>,
    ) -> Result<Sweep, NonFiniteParameterSet> {
        let mut columns: Vec<(String, ParamColumn)> = match sets.first() {
            Some(first) => first
                .iter()
                .map(|(name, value)| {
                    let kind = match value {
                        ParamValue::Float(_) => ParamKind::Float,
                        ParamValue::Int(_) => ParamKind::Int,
                        ParamValue::Str(_) => ParamKind::Str,
                    };
                    (name.to_string(), ParamColumn::new(kind))
                })
                .collect(),
            None => Vec::new(),
        };
        for (i, set) in sets.iter().enumerate() {
            assert!(!set.is_empty(), "parameter set {i} has no parameters");
            assert_eq!(set.len(), columns.len(), "parameter set {i} has other names than set 0");
            for ((name, column), (n, value)) in columns.iter_mut().zip(set.iter()) {
                assert_eq!(name, n, "parameter set {i} has other names than set 0");
                match (column, value) {
                    (ParamColumn::Float(c), ParamValue::Float(x)) => c.push(*x),
                    (ParamColumn::Int(c), ParamValue::Int(x)) => c.push(*x),
                    (ParamColumn::Str(c), ParamValue::Str(x)) => c.push(x),
                    _ => panic!("parameter `{name}` of set {i} is of another kind than in set 0"),
                }
            }
        }
        if let Some(seeds) = &fixed_seeds {
            assert_eq!(seeds.len(), sets.len(), "one fixed seed per parameter set");
        }
        Sweep::from_columns(columns, fixed_seeds)
    }

    /// Number of parameter sets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the sweep has no parameter sets.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parameter names, sorted, with the kind of each: the parameter columns of the output.
    pub fn columns(&self) -> &[(String, ParamKind)] {
        &self.columns
    }

    /// The values of the sets `range`, one column per parameter in [`Sweep::columns`] order
    /// (computed for a space's sweep: O(range), whatever the sweep's length).
    ///
    /// # Panics
    /// When `range.end > len()`.
    pub fn columns_of(&self, range: std::ops::Range<usize>) -> Vec<ParamColumn> {
        assert!(range.end <= self.len, "sets {range:?} of a sweep of {} sets", self.len);
        match &self.values {
            Values::Stored(columns) => columns
                .iter()
                .map(|column| match column {
                    ParamColumn::Float(v) => ParamColumn::Float(v[range.clone()].to_vec()),
                    ParamColumn::Int(v) => ParamColumn::Int(v[range.clone()].to_vec()),
                    ParamColumn::Str(v) => {
                        ParamColumn::Str(range.clone().filter_map(|i| v.get(i)).collect())
                    }
                })
                .collect(),
            Values::Space(points) => {
                let mut columns = vec![Vec::with_capacity(range.len()); self.columns.len()];
                let mut point = Vec::with_capacity(self.columns.len());
                for i in range {
                    points.point_into(i as u64, &mut point);
                    for (column, &v) in columns.iter_mut().zip(&point) {
                        column.push(v);
                    }
                }
                columns.into_iter().map(ParamColumn::Float).collect()
            }
        }
    }

    /// The space a sweep's sets are computed from; `None` for stored sets (a parameter file).
    pub fn space_points(&self) -> Option<&SpacePoints> {
        match &self.values {
            Values::Space(points) => Some(points),
            Values::Stored(_) => None,
        }
    }

    /// The `param_id` of set `i`, computed (≈ 1 µs; for many sets use [`Sweep::param_ids`]).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn param_id(&self, i: usize) -> ParamId {
        self.param_id_with(i, &mut Vec::new())
    }

    /// The `param_id`s of the sets `range`, in order.
    ///
    /// # Panics
    /// When `range.end > len()`.
    pub fn param_ids(&self, range: std::ops::Range<usize>) -> Vec<ParamId> {
        let mut json = Vec::new();
        range.map(|i| self.param_id_with(i, &mut json)).collect()
    }

    fn param_id_with(&self, i: usize, json: &mut Vec<u8>) -> ParamId {
        match identity::param_id_of(self.row(i), json) {
            Ok(id) => id,
            // `from_columns` refused non-finite values.
            Err(e) => unreachable!("a sweep holds finite values only: {e}"),
        }
    }

    /// Set `i`'s fixed seed: from a parameter file's `seed` column, run exactly one replicate
    /// with this seed instead of `replicates` replicates with derived seeds. `None` for every
    /// set when the sets have no seed column.
    ///
    /// # Panics
    /// When `i >= len()` and the sweep has fixed seeds.
    pub fn fixed_seed(&self, i: usize) -> Option<u32> {
        self.fixed_seeds.as_ref().map(|seeds| seeds[i])
    }

    /// True when every set has a fixed seed (the sets came with a `seed` column).
    pub fn has_fixed_seeds(&self) -> bool {
        self.fixed_seeds.is_some()
    }

    /// Set `i`'s names and values, in name order, borrowed from the columns.
    ///
    /// # Panics
    /// When `i >= len()` (on the first value).
    pub fn row(&self, i: usize) -> impl Iterator<Item = (&str, ParamValueRef<'_>)> + '_ {
        assert!(i < self.len, "parameter set {i} of a sweep of {} sets", self.len);
        let values: Vec<ParamValueRef<'_>> = match &self.values {
            Values::Stored(columns) => {
                columns.iter().map(|c| c.get(i).expect("a set of the sweep")).collect()
            }
            Values::Space(points) => {
                let mut point = Vec::with_capacity(self.columns.len());
                points.point_into(i as u64, &mut point);
                point.into_iter().map(ParamValueRef::Float).collect()
            }
        };
        self.columns.iter().map(|(name, _)| name.as_str()).zip(values)
    }

    /// Set `i` as a [`ParameterSet`] (allocated on each call: callers that use a set many times
    /// keep it).
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn params(&self, i: usize) -> ParameterSet {
        assert!(i < self.len(), "parameter set {i} of a sweep of {} sets", self.len());
        // Names are sorted and unique: the columns' order is the set's.
        ParameterSet {
            values: self.row(i).map(|(name, v)| (name.to_string(), v.to_owned_value())).collect(),
        }
    }

    /// Bytes the sweep holds on the heap (capacities, not lengths), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let names: usize = self.columns.iter().map(|(n, _)| n.capacity()).sum();
        let values = match &self.values {
            Values::Stored(columns) => {
                columns.capacity() * std::mem::size_of::<ParamColumn>()
                    + columns.iter().map(ParamColumn::heap_bytes).sum::<usize>()
            }
            Values::Space(points) => points.heap_bytes(),
        };
        names
            + self.columns.capacity() * std::mem::size_of::<(String, ParamKind)>()
            + values
            + self.fixed_seeds.as_ref().map_or(0, |s| s.capacity() * std::mem::size_of::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, ParamValue)]) -> ParameterSet {
        pairs.iter().cloned().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Three sets of a Float, an Int and a Str parameter, given out of name order.
    fn mixed() -> (Vec<(String, ParamColumn)>, Vec<ParameterSet>) {
        let columns = vec![
            ("scenario".to_string(), ParamColumn::Str(["a", "", "é\"n\""].iter().collect())),
            ("beta".to_string(), ParamColumn::Float(vec![1.7, 2.0, -0.5])),
            ("k".to_string(), ParamColumn::Int(vec![3, -4, i64::MAX])),
        ];
        let sets = vec![
            set(&[
                ("beta", ParamValue::Float(1.7)),
                ("k", ParamValue::Int(3)),
                ("scenario", ParamValue::Str("a".into())),
            ]),
            set(&[
                ("beta", ParamValue::Float(2.0)),
                ("k", ParamValue::Int(-4)),
                ("scenario", ParamValue::Str(String::new())),
            ]),
            set(&[
                ("beta", ParamValue::Float(-0.5)),
                ("k", ParamValue::Int(i64::MAX)),
                ("scenario", ParamValue::Str("é\"n\"".into())),
            ]),
        ];
        (columns, sets)
    }

    #[test]
    fn columns_round_trip_with_param_ids() {
        let (columns, sets) = mixed();
        let sweep = Sweep::from_columns(columns, None).unwrap();
        assert_eq!(sweep.len(), 3);
        assert!(!sweep.is_empty());
        assert_eq!(
            sweep.columns(),
            [
                ("beta".to_string(), ParamKind::Float),
                ("k".to_string(), ParamKind::Int),
                ("scenario".to_string(), ParamKind::Str),
            ]
        );
        for (i, expected) in sets.iter().enumerate() {
            assert_eq!(&sweep.params(i), expected, "set {i}");
            assert_eq!(sweep.param_id(i), identity::param_id(expected).unwrap(), "set {i}");
            assert_eq!(sweep.fixed_seed(i), None);
        }
        assert_eq!(sweep.param_ids(0..3), (0..3).map(|i| sweep.param_id(i)).collect::<Vec<_>>());
        assert!(!sweep.has_fixed_seeds());
        let columns = sweep.columns_of(0..3);
        assert_eq!(columns[0], ParamColumn::Float(vec![1.7, 2.0, -0.5]));
        assert_eq!(columns[1], ParamColumn::Int(vec![3, -4, i64::MAX]));
        let ParamColumn::Str(s) = &columns[2] else { panic!("{:?}", columns[2]) };
        assert_eq!(s.iter().collect::<Vec<_>>(), ["a", "", "é\"n\""]);
        assert_eq!((s.get(1), s.get(2), s.get(3)), (Some(""), Some("é\"n\""), None));
        let tail = sweep.columns_of(1..3);
        assert_eq!(tail[1], ParamColumn::Int(vec![-4, i64::MAX]));
        let ParamColumn::Str(s) = &tail[2] else { panic!("{:?}", tail[2]) };
        assert_eq!(s.iter().collect::<Vec<_>>(), ["", "é\"n\""]);
        assert!(sweep.space_points().is_none());
        assert_eq!(Sweep::from_sets(&sets, None).unwrap(), sweep);
    }

    #[test]
    fn fixed_seeds_per_set() {
        let (columns, sets) = mixed();
        let sweep = Sweep::from_columns(columns, Some(vec![7, 0, u32::MAX])).unwrap();
        assert!(sweep.has_fixed_seeds());
        let seeds: Vec<_> = (0..3).map(|i| sweep.fixed_seed(i)).collect();
        assert_eq!(seeds, [Some(7), Some(0), Some(u32::MAX)]);
        assert_eq!(sweep, Sweep::from_sets(&sets, Some(vec![7, 0, u32::MAX])).unwrap());
    }

    #[test]
    fn non_finite_value_names_set_and_parameter() {
        let columns = vec![
            ("b".to_string(), ParamColumn::Float(vec![1.0, f64::NAN, f64::INFINITY])),
            ("a".to_string(), ParamColumn::Float(vec![1.0, 2.0, f64::NEG_INFINITY])),
        ];
        let e = Sweep::from_columns(columns.clone(), None).unwrap_err();
        assert_eq!((e.index, e.source.name.as_str()), (1, "b"));
        let mut columns = columns;
        columns[1].1 = ParamColumn::Float(vec![1.0, f64::NEG_INFINITY, 3.0]);
        let e = Sweep::from_columns(columns, None).unwrap_err();
        assert_eq!((e.index, e.source.name.as_str()), (1, "a"));
    }

    #[test]
    #[should_panic(expected = "another length")]
    fn ragged_columns_panic() {
        let _ = Sweep::from_columns(
            vec![
                ("a".to_string(), ParamColumn::Float(vec![1.0])),
                ("b".to_string(), ParamColumn::Int(vec![1, 2])),
            ],
            None,
        );
    }

    #[test]
    fn sixteen_bytes_per_set_of_two_floats() {
        let n = 100_000;
        let column = |k: f64| ParamColumn::Float((0..n).map(|i| i as f64 * k).collect());
        let sweep = Sweep::from_columns(
            vec![("a".to_string(), column(1.0)), ("b".to_string(), column(0.5))],
            None,
        )
        .unwrap();
        let per_set = sweep.heap_bytes() as f64 / n as f64;
        assert!((16.0..17.0).contains(&per_set), "{per_set} bytes per set");
    }

    #[test]
    fn empty_sweep() {
        let sweep = Sweep::from_columns(vec![("a".into(), ParamColumn::Float(vec![]))], None);
        let sweep = sweep.unwrap();
        assert!(sweep.is_empty());
        assert_eq!(Sweep::from_sets(&[], None).unwrap().len(), 0);
    }
}
