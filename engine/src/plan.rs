//! Batch planning as a synchronous state machine: which batch is next, which are open, when the
//! sweep is finished.
//!
//! A sweep has `n_points` parameter sets, indices `0..n_points`. A batch is a contiguous range
//! of at most `batch_size` of them and is the unit of commit and of resume. A resumed run has
//! some ranges committed already, possibly with another batch size; the [`Planner`] plans new
//! batches over the gaps only, in point order, numbering them from `next_index` (one past the
//! highest committed batch index) upward.
//!
//! The planner holds no points and no batches it has not released: its memory is the committed
//! ranges, the gaps between them and the open batches (at most `max_open`), whatever
//! `n_points` is. It owns no thread and no I/O; the Batcher actor drives it:
//!
//! ```
//! use std::num::NonZeroUsize;
//! use simsweep_engine::plan::Planner;
//!
//! let size = NonZeroUsize::new(4).unwrap();
//! let max_open = NonZeroUsize::new(2).unwrap();
//! // 10 points; a previous run committed 0..4 as batch 0.
//! let mut planner = Planner::new(10, size, &[0..4], 1, max_open).unwrap();
//! let a = planner.next_batch().unwrap();
//! assert_eq!((a.index, a.points.clone()), (1, 4..8));
//! let b = planner.next_batch().unwrap();
//! assert_eq!((b.index, b.points.clone()), (2, 8..10));
//! assert!(planner.next_batch().is_none()); // nothing left to release
//! planner.on_committed(2).unwrap(); // any order
//! let progress = planner.on_committed(1).unwrap();
//! assert_eq!(progress.points_committed, 10);
//! assert!(planner.is_finished());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroUsize;
use std::ops::Range;

/// A batch released by the [`Planner`]: its index and the points it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRange {
    /// Batch index; names its files (`batch-NNNNN.parquet`) and its manifest entry.
    pub index: u32,
    /// The parameter-set indices of the batch, never empty, at most `batch_size` long.
    pub points: Range<u64>,
}

/// How far the sweep is, counting only committed batches: it never goes backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Batches committed, including those committed by earlier runs.
    pub batches_committed: u32,
    /// Batches of the whole sweep: committed by earlier runs plus planned by this one.
    pub batches_planned: u32,
    /// Parameter sets in committed batches.
    pub points_committed: u64,
    /// Parameter sets of the whole sweep (`n_points`).
    pub points_planned: u64,
}

/// Why the planner refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `on_committed` for a batch that is not open: never released, or committed twice.
    #[error("batch {index} is not open (never released, or already committed)")]
    NotOpen {
        /// The batch index given.
        index: u32,
    },
    /// A committed range reaches past the end of the sweep.
    #[error(
        "committed range {}..{} reaches past the sweep's {n_points} parameter sets",
        range.start, range.end
    )]
    CommittedOutOfRange {
        /// The offending range.
        range: Range<u64>,
        /// Number of parameter sets of the sweep.
        n_points: u64,
    },
    /// Two committed ranges share points.
    #[error("committed ranges {}..{} and {}..{} overlap", first.start, first.end, second.start, second.end)]
    CommittedOverlap {
        /// The range that starts first.
        first: Range<u64>,
        /// The range that starts inside `first`.
        second: Range<u64>,
    },
    /// The batches would need indices up to `u32::MAX` or past it.
    #[error(
        "{batches} more batches from index {next_index} do not fit batch indices (u32); \
         raise batch_size"
    )]
    TooManyBatches {
        /// Batches still to plan.
        batches: u64,
        /// The first index they would take.
        next_index: u32,
    },
}

/// How long a chunk of tasks handed to a worker should take, once the time per task is known:
/// long enough that the per-message cost (a thread hand-off, ~10–50 µs) is negligible, short
/// enough that the last chunks of a batch do not leave workers idle.
pub const TARGET_CHUNK_DURATION: std::time::Duration = std::time::Duration::from_millis(50);

/// Tasks in the next chunk handed to a worker (the dispatch policy; the Batcher applies it).
///
/// - `batch_tasks`: tasks of the batch being released; about four chunks per worker per batch
///   at most, so every worker gets work even in a small batch;
/// - `mean_task`: the measured time per task so far (`None` before the first chunk returns):
///   a chunk lasts about [`TARGET_CHUNK_DURATION`]; before anything is measured, one task per
///   chunk, so that slow tasks (seconds) spread over every worker from the start;
/// - `cap`: never more (`RunOptions::chunk_len`).
///
/// Fast tasks (10 µs) get `cap`-sized chunks after the first measurement; slow tasks (≥ 50 ms)
/// one task per chunk, so no worker waits while another holds a queue of them.
pub fn chunk_len(
    batch_tasks: usize,
    workers: usize,
    cap: usize,
    mean_task: Option<std::time::Duration>,
) -> usize {
    let spread = (batch_tasks / (workers.max(1) * 4)).max(1);
    let by_time = match mean_task {
        Some(t) if !t.is_zero() => {
            (TARGET_CHUNK_DURATION.as_nanos() / t.as_nanos()).clamp(1, usize::MAX as u128) as usize
        }
        Some(_) => usize::MAX,
        None => 1,
    };
    spread.min(by_time).clamp(1, cap.max(1))
}

/// One of `count` shards of a sweep: a contiguous slice of whole batches that one process runs
/// into its own folder (`shard=I-of-K`), for a scheduler's array of jobs (Slurm, Kubernetes
/// Indexed Jobs, HyperQueue). Rows are the same as an unsharded run's; the shard only decides
/// which process computes them and where they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u32,
    /// Shards of the sweep, ≥ 1.
    pub count: u32,
}

/// Why a shard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// `count` is 0.
    #[error("the number of shards must be at least 1")]
    NoShards,
    /// `index` is not below `count`.
    #[error("shard {index} does not exist among {count} shards (indices 0 to {})", count - 1)]
    IndexOutOfRange {
        /// The index given.
        index: u32,
        /// The number of shards.
        count: u32,
    },
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`ShardError`] when `count` is 0 or `index ≥ count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The points of this shard in a sweep of `n_points` cut into batches of `batch_size`: the
    /// sweep's `B = ⌈n_points / batch_size⌉` batches are dealt out in contiguous runs, shard
    /// `i` taking batches `⌊i·B/K⌋ .. ⌊(i+1)·B/K⌋` (so shard sizes differ by at most one
    /// batch). Every shard's batches are whole, the sweep's last excepted; shards are disjoint,
    /// in order, and cover `0..n_points`. A shard may be empty when `K > B`.
    pub fn points(&self, n_points: u64, batch_size: NonZeroUsize) -> Range<u64> {
        let bs = batch_size.get() as u64;
        let batches = n_points.div_ceil(bs);
        let cut = |i: u32| -> u64 {
            let b = (u128::from(batches) * u128::from(i) / u128::from(self.count)) as u64;
            b.saturating_mul(bs).min(n_points)
        };
        cut(self.index)..cut(self.index + 1)
    }

    /// The index of the first batch of this shard (its global batch number in the unsharded
    /// plan at the same batch size), so that a shard's files carry the unsharded run's names.
    pub fn first_batch(&self, n_points: u64, batch_size: NonZeroUsize) -> u64 {
        self.points(n_points, batch_size).start / batch_size.get() as u64
    }

    /// The shard's folder name, `shard=I-of-K` (hive-style: readers that understand
    /// partitioned datasets get a `shard` column).
    pub fn dir_name(&self) -> String {
        format!("shard={}-of-{}", self.index, self.count)
    }

    /// The shard a folder name `shard=I-of-K` names, if it is one.
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (i, k) = name.strip_prefix("shard=")?.split_once("-of-")?;
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !plain(i) || !plain(k) {
            return None;
        }
        Shard::new(i.parse().ok()?, k.parse().ok()?).ok()
    }
}

/// Plans the batches of a sweep over the points not yet committed and tracks which are open.
///
/// A batch is *open* from [`Planner::next_batch`] until [`Planner::on_committed`]. At most
/// `max_open` are open at once, which is what bounds the memory of the whole pipeline.
#[derive(Debug, Clone)]
pub struct Planner {
    batch_size: u64,
    max_open: usize,
    /// Uncommitted ranges not yet released, in point order; the front one is being cut.
    gaps: VecDeque<Range<u64>>,
    next_index: u32,
    open: BTreeMap<u32, Range<u64>>,
    progress: Progress,
}

impl Planner {
    /// A planner over `0..n_points` that skips the `committed` ranges.
    ///
    /// `committed` holds one range per batch committed by earlier runs (as
    /// [`crate::output::Manifest::committed_ranges`] gives them), in any order; empty ranges
    /// are ignored. New batches are numbered from `next_index` upward in point order.
    ///
    /// # Errors
    /// [`PlanError::CommittedOutOfRange`] or [`PlanError::CommittedOverlap`] when the committed
    /// ranges do not fit this sweep (a manifest from another spec), and
    /// [`PlanError::TooManyBatches`] when the batch indices would reach `u32::MAX`.
    pub fn new(
        n_points: u64,
        batch_size: NonZeroUsize,
        committed: &[Range<u64>],
        next_index: u32,
        max_open: NonZeroUsize,
    ) -> Result<Self, PlanError> {
        Planner::new_in(0..n_points, batch_size, committed, next_index, max_open)
    }

    /// A planner over the points `points` only (a shard's slice, see [`Shard::points`]), that
    /// skips the `committed` ranges; otherwise as [`Planner::new`]. Progress counts the slice.
    ///
    /// # Errors
    /// As [`Planner::new`]; a committed range outside `points` is
    /// [`PlanError::CommittedOutOfRange`].
    pub fn new_in(
        points: Range<u64>,
        batch_size: NonZeroUsize,
        committed: &[Range<u64>],
        next_index: u32,
        max_open: NonZeroUsize,
    ) -> Result<Self, PlanError> {
        let n_points = points.end;
        let batch_size = batch_size.get() as u64;
        let mut done: Vec<Range<u64>> =
            committed.iter().filter(|r| !r.is_empty()).cloned().collect();
        done.sort_by_key(|r| r.start);

        let mut gaps = VecDeque::new();
        let mut cursor = points.start;
        let mut points_committed = 0u64;
        let mut previous: Option<&Range<u64>> = None;
        for range in &done {
            if range.end > n_points || range.start < points.start {
                return Err(PlanError::CommittedOutOfRange { range: range.clone(), n_points });
            }
            if let Some(prev) = previous.filter(|p| range.start < p.end) {
                return Err(PlanError::CommittedOverlap {
                    first: prev.clone(),
                    second: range.clone(),
                });
            }
            if range.start > cursor {
                gaps.push_back(cursor..range.start);
            }
            cursor = range.end;
            points_committed += range.end - range.start;
            previous = Some(range);
        }
        if cursor < n_points {
            gaps.push_back(cursor..n_points);
        }

        let new_batches: u64 = gaps.iter().map(|g| (g.end - g.start).div_ceil(batch_size)).sum();
        let too_many = || PlanError::TooManyBatches { batches: new_batches, next_index };
        // Every new index and the index after the last must fit (so `u32::MAX` is never used),
        // and so must the totals reported in `Progress`.
        let after_last = u64::from(next_index) + new_batches;
        if after_last > u64::from(u32::MAX) {
            return Err(too_many());
        }
        let batches_committed = u32::try_from(done.len()).map_err(|_| too_many())?;
        let batches_planned =
            u32::try_from(done.len() as u64 + new_batches).map_err(|_| too_many())?;

        Ok(Planner {
            batch_size,
            max_open: max_open.get(),
            gaps,
            next_index,
            open: BTreeMap::new(),
            progress: Progress {
                batches_committed,
                batches_planned,
                points_committed,
                points_planned: points.end.saturating_sub(points.start),
            },
        })
    }

    /// Releases the next batch, or `None` while `max_open` batches are open or when none are
    /// left to release (see [`Planner::is_finished`] to tell which).
    pub fn next_batch(&mut self) -> Option<BatchRange> {
        if self.open.len() >= self.max_open {
            return None;
        }
        let gap = self.gaps.front_mut()?;
        let start = gap.start;
        let end = gap.end.min(start.saturating_add(self.batch_size));
        gap.start = end;
        if gap.is_empty() {
            self.gaps.pop_front();
        }
        let index = self.next_index;
        // `new` checked that the index after the last planned one fits in u32.
        self.next_index += 1;
        self.open.insert(index, start..end);
        Some(BatchRange { index, points: start..end })
    }

    /// Records that batch `index` is committed (files renamed and synced, manifest replaced)
    /// and returns the progress. Batches may be committed in any order.
    ///
    /// # Errors
    /// [`PlanError::NotOpen`] when `index` was never released or is already committed; the
    /// planner is unchanged.
    pub fn on_committed(&mut self, index: u32) -> Result<Progress, PlanError> {
        let points = self.open.remove(&index).ok_or(PlanError::NotOpen { index })?;
        self.progress.batches_committed += 1;
        self.progress.points_committed += points.end - points.start;
        Ok(self.progress)
    }

    /// True when every batch has been released and committed.
    pub fn is_finished(&self) -> bool {
        self.gaps.is_empty() && self.open.is_empty()
    }

    /// Number of batches released and not yet committed.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The open batches, by index.
    pub fn open_batches(&self) -> impl Iterator<Item = BatchRange> + '_ {
        self.open.iter().map(|(&index, points)| BatchRange { index, points: points.clone() })
    }

    /// Batches of the whole sweep, including those committed by earlier runs.
    pub fn batches_planned(&self) -> u32 {
        self.progress.batches_planned
    }

    /// The progress so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // `&[a..b]` is a list of one committed range
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn chunks_are_one_task_until_timed_then_sized_to_the_target_duration() {
        use std::time::Duration;
        // Nothing measured yet: one task per chunk, whatever the batch.
        assert_eq!(chunk_len(4000, 2, 64, None), 1);
        // 10 µs tasks: 5,000 would fit in 50 ms; capped at 64.
        assert_eq!(chunk_len(4000, 2, 64, Some(Duration::from_micros(10))), 64);
        // 2 ms tasks: 25 per chunk.
        assert_eq!(chunk_len(4000, 2, 64, Some(Duration::from_millis(2))), 25);
        // 2 s tasks: one per chunk.
        assert_eq!(chunk_len(4000, 2, 64, Some(Duration::from_secs(2))), 1);
        // A small batch spreads over the workers: 40 tasks, 2 workers → at most 5 per chunk.
        assert_eq!(chunk_len(40, 2, 64, Some(Duration::from_micros(10))), 5);
        assert_eq!(chunk_len(3, 8, 64, Some(Duration::ZERO)), 1);
    }

    #[test]
    fn shards_of_the_flu_example() {
        // 10,000 sets at batch 200 = 50 batches over 4 shards: 12, 13, 12, 13 batches.
        let points: Vec<Range<u64>> =
            (0..4).map(|i| Shard::new(i, 4).unwrap().points(10_000, nz(200))).collect();
        assert_eq!(points, vec![0..2400, 2400..5000, 5000..7400, 7400..10_000]);
        assert_eq!(Shard::new(1, 4).unwrap().first_batch(10_000, nz(200)), 12);
        // A last partial batch stays in the last shard; more shards than batches: empty ones.
        assert_eq!(Shard::new(1, 2).unwrap().points(23, nz(5)), 10..23);
        let tiny: Vec<Range<u64>> =
            (0..4).map(|i| Shard::new(i, 4).unwrap().points(7, nz(5))).collect();
        assert_eq!(tiny, vec![0..0, 0..5, 5..5, 5..7]);
    }

    #[test]
    fn shard_names_and_refusals() {
        let s = Shard::new(3, 8).unwrap();
        assert_eq!(s.dir_name(), "shard=3-of-8");
        assert_eq!(Shard::from_dir_name("shard=3-of-8"), Some(s));
        for bad in [
            "shard=8-of-8",
            "shard=-1-of-8",
            "shard=1-of-",
            "shard=1of8",
            "x=1-of-2",
            "shard=+1-of-2",
        ] {
            assert_eq!(Shard::from_dir_name(bad), None, "{bad}");
        }
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(
            Shard::new(4, 4).unwrap_err().to_string(),
            "shard 4 does not exist among 4 shards (indices 0 to 3)"
        );
    }

    #[test]
    fn a_shard_planner_releases_only_its_slice_numbered_as_unsharded() {
        let shard = Shard::new(1, 3).unwrap();
        let slice = shard.points(23, nz(3)); // 8 batches: shard 1 has batches 2..5
        assert_eq!(slice, 6..15);
        let first = shard.first_batch(23, nz(3)) as u32;
        let mut p = Planner::new_in(slice.clone(), nz(3), &[9..12], first, nz(8)).unwrap();
        let mut got = Vec::new();
        while let Some(b) = p.next_batch() {
            got.push((b.index, b.points));
        }
        assert_eq!(got, vec![(2, 6..9), (3, 12..15)]);
        assert_eq!(p.progress().points_planned, 9);
        assert_eq!(p.progress().points_committed, 3);
        assert!(matches!(
            Planner::new_in(slice, nz(3), &[3..6], first, nz(8)),
            Err(PlanError::CommittedOutOfRange { .. })
        ));
    }

    proptest! {
        #[test]
        fn shards_are_disjoint_in_order_whole_batches_and_cover_the_sweep(
            n in 0u64..5_000, bs in 1usize..300, k in 1u32..40,
        ) {
            let mut cursor = 0;
            for i in 0..k {
                let r = Shard::new(i, k).unwrap().points(n, nz(bs));
                prop_assert_eq!(r.start, cursor);
                prop_assert!(r.start <= r.end);
                prop_assert_eq!(r.start % bs as u64, 0);
                if r.end != n {
                    prop_assert_eq!(r.end % bs as u64, 0);
                }
                cursor = r.end;
            }
            prop_assert_eq!(cursor, n);
            // Sizes differ by at most one batch.
            let sizes: Vec<u64> = (0..k)
                .map(|i| Shard::new(i, k).unwrap().points(n, nz(bs)))
                .map(|r| r.end.div_ceil(bs as u64) - r.start / bs as u64)
                .collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", sizes);
        }
    }

    #[test]
    fn plans_fresh_sweep_in_point_order() {
        let mut p = Planner::new(10, nz(3), &[], 0, nz(10)).unwrap();
        let released: Vec<_> = std::iter::from_fn(|| p.next_batch()).collect();
        let expect = [(0, 0..3), (1, 3..6), (2, 6..9), (3, 9..10)];
        assert_eq!(released.len(), expect.len());
        for (b, (i, r)) in released.iter().zip(expect) {
            assert_eq!((b.index, b.points.clone()), (i, r));
        }
        assert_eq!(p.batches_planned(), 4);
        assert!(!p.is_finished());
    }

    #[test]
    fn empty_sweep_is_finished_at_once() {
        let mut p = Planner::new(0, nz(3), &[], 0, nz(1)).unwrap();
        assert!(p.next_batch().is_none());
        assert!(p.is_finished());
        assert_eq!(p.progress(), Progress::default());
    }

    #[test]
    fn max_open_blocks_release_until_commit() {
        let mut p = Planner::new(10, nz(2), &[], 0, nz(2)).unwrap();
        let a = p.next_batch().unwrap();
        let _b = p.next_batch().unwrap();
        assert!(p.next_batch().is_none());
        assert!(!p.is_finished());
        p.on_committed(a.index).unwrap();
        assert_eq!(p.next_batch().unwrap().index, 2);
    }

    #[test]
    fn resume_plans_gaps_with_other_batch_size() {
        // An earlier run with batch size 4 committed batches 0 (0..4) and 2 (8..12).
        let mut p = Planner::new(14, nz(3), &[8..12, 0..4], 3, nz(8)).unwrap();
        let released: Vec<_> = std::iter::from_fn(|| p.next_batch()).collect();
        let got: Vec<_> = released.iter().map(|b| (b.index, b.points.clone())).collect();
        assert_eq!(got, vec![(3, 4..7), (4, 7..8), (5, 12..14)]);
        assert_eq!(p.progress().batches_committed, 2);
        assert_eq!(p.progress().points_committed, 8);
        assert_eq!(p.batches_planned(), 5);
    }

    #[test]
    fn commit_of_unknown_or_repeated_batch_refused() {
        let mut p = Planner::new(4, nz(2), &[], 0, nz(2)).unwrap();
        assert_eq!(p.on_committed(0), Err(PlanError::NotOpen { index: 0 }));
        let a = p.next_batch().unwrap();
        p.on_committed(a.index).unwrap();
        let before = p.progress();
        assert_eq!(p.on_committed(a.index), Err(PlanError::NotOpen { index: a.index }));
        assert_eq!(p.progress(), before);
    }

    #[test]
    fn bad_committed_ranges_refused() {
        assert!(matches!(
            Planner::new(5, nz(2), &[3..6], 1, nz(1)),
            Err(PlanError::CommittedOutOfRange { .. })
        ));
        assert!(matches!(
            Planner::new(10, nz(2), &[0..4, 3..5], 2, nz(1)),
            Err(PlanError::CommittedOverlap { .. })
        ));
    }

    #[test]
    fn index_overflow_refused() {
        assert!(matches!(
            Planner::new(10, nz(1), &[], u32::MAX - 5, nz(1)),
            Err(PlanError::TooManyBatches { .. })
        ));
        // Exactly fitting: indices stay below u32::MAX, so the next index is representable.
        let mut p = Planner::new(2, nz(1), &[], u32::MAX - 2, nz(2)).unwrap();
        assert_eq!(p.next_batch().unwrap().index, u32::MAX - 2);
        assert_eq!(p.next_batch().unwrap().index, u32::MAX - 1);
        assert!(p.next_batch().is_none());
    }

    /// A sweep, committed ranges cut from it as earlier batches (with their own batch size),
    /// and the planner's parameters.
    fn scenario() -> impl Strategy<Value = (u64, usize, Vec<Range<u64>>, usize, u64)> {
        (0u64..200, 1usize..20, 1usize..20, 1usize..6, any::<u64>()).prop_flat_map(
            |(n, old_size, size, max_open, seed)| {
                let old_batches = n.div_ceil(old_size as u64) as usize;
                (
                    Just(n),
                    Just(size),
                    proptest::collection::vec(any::<bool>(), old_batches),
                    Just(old_size),
                    Just(max_open),
                    Just(seed),
                )
                    .prop_map(|(n, size, keep, old_size, max_open, seed)| {
                        let old = old_size as u64;
                        let committed = keep
                            .iter()
                            .enumerate()
                            .filter(|(_, &k)| k)
                            .map(|(i, _)| (i as u64 * old)..((i as u64 + 1) * old).min(n))
                            .collect();
                        (n, size, committed, max_open, seed)
                    })
            },
        )
    }

    proptest! {
        #[test]
        fn releases_partition_uncommitted_points(
            (n, size, committed, max_open, seed) in scenario(),
        ) {
            let next_index = committed.len() as u32 + 3;
            let mut p = Planner::new(n, nz(size), &committed, next_index, nz(max_open)).unwrap();
            let mut covered = vec![false; n as usize];
            for r in &committed {
                for i in r.clone() { covered[i as usize] = true; }
            }
            let mut released: Vec<BatchRange> = Vec::new();
            let mut open: Vec<u32> = Vec::new();
            let mut last = p.progress();
            let mut rng = seed;
            loop {
                // Commit or release, as a pseudo-random schedule decides.
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let commit = !open.is_empty() && (rng >> 33) % 3 == 0;
                if commit {
                    let k = ((rng >> 40) as usize) % open.len();
                    let index = open.swap_remove(k);
                    let progress = p.on_committed(index).unwrap();
                    prop_assert!(progress.batches_committed > last.batches_committed);
                    prop_assert!(progress.points_committed > last.points_committed);
                    prop_assert_eq!(progress.batches_planned, last.batches_planned);
                    last = progress;
                } else if let Some(b) = p.next_batch() {
                    prop_assert!(!b.points.is_empty());
                    prop_assert!(b.points.end - b.points.start <= size as u64);
                    if let Some(prev) = released.last() {
                        prop_assert!(b.index > prev.index);
                        prop_assert!(b.points.start >= prev.points.end);
                    } else {
                        prop_assert_eq!(b.index, next_index);
                    }
                    for i in b.points.clone() {
                        prop_assert!(!covered[i as usize], "point {} released twice or committed", i);
                        covered[i as usize] = true;
                    }
                    open.push(b.index);
                    released.push(b);
                    prop_assert!(p.open() <= max_open);
                    prop_assert_eq!(p.open(), open.len());
                } else if open.is_empty() {
                    break;
                } else {
                    prop_assert!(p.open() == max_open || p.open() == open.len());
                    let index = open.remove(0);
                    last = p.on_committed(index).unwrap();
                }
            }
            prop_assert!(covered.iter().all(|&c| c));
            prop_assert!(p.is_finished());
            let end = p.progress();
            prop_assert_eq!(end.points_committed, n);
            prop_assert_eq!(end.points_planned, n);
            prop_assert_eq!(end.batches_committed, end.batches_planned);
            prop_assert_eq!(end.batches_planned as usize, committed.len() + released.len());
        }
    }
}
