//! The data behind the report's plots, built from streamed rows in memory bounded by the
//! plots' resolution, never by the number of parameter sets.

/// Bins of a loss profile (lower envelope) along one parameter.
pub const PROFILE_BINS: usize = 40;

/// Cells per axis of a pairwise loss map.
pub const MAP_CELLS: usize = 24;

/// Parameter sets drawn in a loss scatter, about (the best are drawn besides).
pub const SCATTER_SETS: u64 = 4_000;

/// The smallest finite loss in each of `bins` equal-width bins of a parameter's range
/// `[min, max]`: the lower envelope of the loss scatter, a profile of the loss along the
/// parameter (the best loss reachable with that value, over the other parameters as sampled).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Smallest value of the parameter.
    pub min: f64,
    /// Largest value of the parameter.
    pub max: f64,
    /// Per bin, the smallest finite loss seen in it (`None`: no set there).
    pub lowest: Vec<Option<f64>>,
}

/// The bin of `x` among `bins` equal-width bins of `[min, max]` (`max` in the last bin; a
/// range of one value has one bin in use, bin 0).
pub fn bin_of(x: f64, min: f64, max: f64, bins: usize) -> usize {
    if max <= min {
        return 0;
    }
    let at = ((x - min) / (max - min) * bins as f64).floor();
    (at.max(0.0) as usize).min(bins - 1)
}

impl Profile {
    /// An empty profile of `bins` bins over `[min, max]`.
    pub fn new(min: f64, max: f64, bins: usize) -> Self {
        Profile { min, max, lowest: vec![None; bins] }
    }

    /// Counts the set with parameter value `x` and loss `loss` (non-finite losses are not
    /// part of a profile).
    pub fn add(&mut self, x: f64, loss: f64) {
        if !loss.is_finite() || !x.is_finite() {
            return;
        }
        let bin = bin_of(x, self.min, self.max, self.lowest.len());
        let slot = &mut self.lowest[bin];
        if slot.is_none_or(|l| loss < l) {
            *slot = Some(loss);
        }
    }

    /// `(bin centre, lowest loss)` of the bins that have a set, in order.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let width = (self.max - self.min) / self.lowest.len() as f64;
        self.lowest
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|l| (self.min + width * (i as f64 + 0.5), l)))
            .collect()
    }
}

/// The smallest finite loss in each cell of a `cells × cells` grid over two parameters'
/// ranges: a pairwise loss map (its cells with no set are `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct LossMap {
    /// Range of the first parameter (x).
    pub x: (f64, f64),
    /// Range of the second parameter (y).
    pub y: (f64, f64),
    /// Cells per axis.
    pub cells: usize,
    /// Row-major by y then x: `lowest[iy * cells + ix]`.
    pub lowest: Vec<Option<f64>>,
}

impl LossMap {
    /// An empty map over the ranges `x` and `y`.
    pub fn new(x: (f64, f64), y: (f64, f64), cells: usize) -> Self {
        LossMap { x, y, cells, lowest: vec![None; cells * cells] }
    }

    /// Counts a set at `(x, y)` with `loss` (non-finite losses are left out).
    pub fn add(&mut self, x: f64, y: f64, loss: f64) {
        if !loss.is_finite() || !x.is_finite() || !y.is_finite() {
            return;
        }
        let ix = bin_of(x, self.x.0, self.x.1, self.cells);
        let iy = bin_of(y, self.y.0, self.y.1, self.cells);
        let slot = &mut self.lowest[iy * self.cells + ix];
        if slot.is_none_or(|l| loss < l) {
            *slot = Some(loss);
        }
    }

    /// The smallest and largest loss of the cells that have one.
    pub fn loss_range(&self) -> Option<(f64, f64)> {
        let mut it = self.lowest.iter().flatten().copied();
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), l| (lo.min(l), hi.max(l))))
    }
}

/// The subsampling rule of the loss scatters: a set is drawn when the number formed by the
/// first 8 hex digits of its `param_id` is below `threshold` ([`scatter_threshold`]). The
/// `param_id` is a cryptographic hash of the parameters, so this keeps a uniform random
/// subset, the same in every report of the output and independent of file order.
pub fn keep_in_scatter(param_id: &str, threshold: u64) -> bool {
    param_id.get(..8).and_then(|h| u64::from_str_radix(h, 16).ok()).is_some_and(|v| v < threshold)
}

/// The threshold that keeps about `target` of `total` sets ([`keep_in_scatter`]): every set
/// when `total ≤ target`, else `⌊2³² · target / total⌋`.
pub fn scatter_threshold(total: u64, target: u64) -> u64 {
    const ALL: u64 = 1 << 32;
    if total <= target {
        ALL
    } else {
        ((ALL as u128 * target as u128) / total as u128) as u64
    }
}

/// The `q`-quantile of `sorted` (ascending, non-empty) by linear interpolation between order
/// statistics: Hyndman & Fan (1996) type 7, R's default `quantile()`.
///
/// # Panics
/// When `sorted` is empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no values");
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The replicates of one parameter set summarised per time: median and the central 50% and
/// 95% envelopes (quantiles 0.25/0.75 and 0.025/0.975, [`quantile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Times, ascending.
    pub times: Vec<f64>,
    /// Per time: (2.5%, 25%, 50%, 75%, 97.5%) quantiles over replicates.
    pub quantiles: Vec<[f64; 5]>,
    /// Replicates summarised (the most at any time).
    pub replicates: usize,
}

impl Band {
    /// The band of `values`: `(time, value)` pairs of every replicate, in any order.
    /// Non-finite values are left out; a time with no finite value is left out.
    pub fn of(values: &[(f64, f64)]) -> Band {
        let mut by_time: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        for &(t, v) in values {
            if t.is_finite() && v.is_finite() {
                // Ordered keys for f64 times (all finite): the IEEE bits of t + 0.0 with the
                // sign folded, so that the order is numeric.
                by_time.entry(order_key(t)).or_default().push(v);
            }
        }
        let mut band = Band { times: Vec::new(), quantiles: Vec::new(), replicates: 0 };
        for (key, mut vs) in by_time {
            vs.sort_by(f64::total_cmp);
            band.replicates = band.replicates.max(vs.len());
            band.times.push(from_order_key(key));
            band.quantiles.push([0.025, 0.25, 0.5, 0.75, 0.975].map(|q| quantile(&vs, q)));
        }
        band
    }
}

fn order_key(t: f64) -> u64 {
    let bits = (t + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_order_key(key: u64) -> f64 {
    let bits = if key >> 63 == 1 { key & !(1 << 63) } else { !key };
    f64::from_bits(bits)
}

/// The `k` smallest finite losses seen, with their payload, ties broken by `order`
/// (sweep position): a bounded running best list.
#[derive(Debug, Clone)]
pub struct BestK<T> {
    k: usize,
    /// Sorted by (loss, order).
    pub items: Vec<(f64, u64, T)>,
}

impl<T> BestK<T> {
    /// An empty list keeping `k`.
    pub fn new(k: usize) -> Self {
        BestK { k, items: Vec::with_capacity(k + 1) }
    }

    /// True when a set with `loss` at `order` would enter the list.
    pub fn would_keep(&self, loss: f64, order: u64) -> bool {
        loss.is_finite()
            && self.k > 0
            && (self.items.len() < self.k
                || self.items.last().is_some_and(|(l, o, _)| (loss, order) < (*l, *o)))
    }

    /// Offers a set; kept when among the `k` best.
    pub fn offer(&mut self, loss: f64, order: u64, item: T) {
        if !self.would_keep(loss, order) {
            return;
        }
        let at = self.items.partition_point(|(l, o, _)| (*l, *o) < (loss, order));
        self.items.insert(at, (loss, order, item));
        self.items.truncate(self.k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_keeps_the_lowest_loss_per_bin() {
        let mut p = Profile::new(0.0, 4.0, 4);
        for (x, loss) in [(0.5, 3.0), (0.9, 2.0), (1.5, 7.0), (4.0, 1.0), (3.2, f64::INFINITY)] {
            p.add(x, loss);
        }
        p.add(2.5, f64::NAN);
        assert_eq!(p.lowest, vec![Some(2.0), Some(7.0), None, Some(1.0)]);
        assert_eq!(p.points(), vec![(0.5, 2.0), (1.5, 7.0), (3.5, 1.0)]);
        // A fixed parameter: one bin in use.
        let mut fixed = Profile::new(2.0, 2.0, 4);
        fixed.add(2.0, 5.0);
        assert_eq!(fixed.lowest, vec![Some(5.0), None, None, None]);
    }

    #[test]
    fn loss_map_cells_and_range() {
        let mut m = LossMap::new((0.0, 1.0), (10.0, 20.0), 2);
        m.add(0.1, 11.0, 5.0);
        m.add(0.2, 12.0, 4.0);
        m.add(0.9, 19.0, 8.0);
        m.add(1.0, 10.0, 6.0);
        m.add(0.6, 16.0, f64::INFINITY);
        assert_eq!(m.lowest, vec![Some(4.0), Some(6.0), None, Some(8.0)]);
        assert_eq!(m.loss_range(), Some((4.0, 8.0)));
        assert_eq!(LossMap::new((0.0, 1.0), (0.0, 1.0), 3).loss_range(), None);
    }

    #[test]
    fn scatter_subsample_is_a_hash_threshold() {
        assert_eq!(scatter_threshold(100, 4_000), 1 << 32);
        assert_eq!(scatter_threshold(8_000, 4_000), 1 << 31);
        assert_eq!(scatter_threshold(1_000_000, 4_000), 17_179_869);
        assert!(keep_in_scatter("7fffffff00", 1 << 31));
        assert!(!keep_in_scatter("80000000ff", 1 << 31));
        assert!(keep_in_scatter("ffffffff", 1 << 32));
        assert!(!keep_in_scatter("zz", 1 << 32), "not hex: not drawn");
        // About the target share of uniformly spread ids is kept: ids i·2^32/10,000 for
        // i < 10,000 with the threshold of 4,000 of 10,000 keep exactly 4,000.
        let t = scatter_threshold(10_000, 4_000);
        let kept = (0..10_000u64)
            .filter(|i| keep_in_scatter(&format!("{:08x}", i * (1 << 32) / 10_000), t))
            .count();
        assert_eq!(kept, 4_000);
    }

    #[test]
    fn quantiles_are_rs_type_7() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert!((quantile(&v, 0.975) - 9.4).abs() < 1e-12); // h = 3.9: 4 + 0.9 · 6
        assert!((quantile(&v, 0.025) - 1.1).abs() < 1e-12); // h = 0.1: 1 + 0.1 · 1
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn band_per_time_over_replicates() {
        // Three replicates at days 0 and 1 (given out of order), one NaN left out.
        let values = [(1.0, 30.0), (0.0, 1.0), (1.0, 10.0), (0.0, 3.0), (1.0, 20.0), (0.0, 2.0)];
        let mut with_nan = values.to_vec();
        with_nan.push((1.0, f64::NAN));
        let b = Band::of(&with_nan);
        assert_eq!(b.times, vec![0.0, 1.0]);
        assert_eq!(b.replicates, 3);
        assert_eq!(b.quantiles[0], [1.05, 1.5, 2.0, 2.5, 2.95]);
        assert_eq!(b.quantiles[1], [10.5, 15.0, 20.0, 25.0, 29.5]);
        // Negative and fractional times keep their numeric order.
        let b = Band::of(&[(-2.5, 1.0), (3.0, 1.0), (-0.0, 1.0), (0.5, 1.0)]);
        assert_eq!(b.times, vec![-2.5, 0.0, 0.5, 3.0]);
    }

    #[test]
    fn best_k_keeps_the_smallest_ties_by_order() {
        let mut b = BestK::new(3);
        for (loss, order) in [(5.0, 0), (1.0, 1), (f64::INFINITY, 2), (3.0, 3), (1.0, 4), (2.0, 5)]
        {
            b.offer(loss, order, order);
        }
        let got: Vec<(f64, u64)> = b.items.iter().map(|(l, o, _)| (*l, *o)).collect();
        assert_eq!(got, vec![(1.0, 1), (1.0, 4), (2.0, 5)]);
        assert!(!b.would_keep(2.0, 6) && b.would_keep(2.0, 0) && !b.would_keep(f64::NAN, 0));
    }
}
