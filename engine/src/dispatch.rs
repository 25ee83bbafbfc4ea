//! The dispatch and stop state machine of a run: which batch and tasks go out next and in what
//! chunks, what is in flight, which batches a stop still waits for, and when the run may end.
//!
//! Plain data with synchronous methods and no runtime, in the manner of HyperQueue's `tako`
//! scheduler (a reactor over state): the Batcher actor is an adapter that sends the chunks
//! [`Dispatch::next_chunk`] returns to the workers and feeds back what happened
//! ([`Dispatch::chunk_returned`], [`Dispatch::committed`], the stops). Its unit tests drive it
//! through orderings the runtime rarely produces: commits out of order, a worker skipping the rest
//! of a chunk (a stop, or a worker that died), a stop while a commit runs, a hard stop whose
//! chunks never come back.
//!
//! ```text
//!            next_chunk ──► chunks out (in_flight ≤ bound) ──► chunk_returned
//!   running ─┤                                                      │
//!            └ committed(batch) ◄── writer ◄── returns ◄────────────┘
//!   stop_gracefully: no new chunk; wait for chunks out and for the commits of batches all of
//!                    whose tasks went out (not those a worker skipped)
//!   stop_hard:       no new chunk; wait for no commit; chunks out abandoned after HARD_STOP_WAIT
//!   fail:            as a graceful stop, but no commit is waited for
//!   may_end: nothing out (or abandoned), no commit running, and finished or nothing due
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::collect::{tasks_of, SimTask};
use crate::params::Sweep;
use crate::plan::{chunk_len, PlanError, Planner};

/// After a hard stop, how long the chunks out are waited for (an aborted external simulation
/// returns in milliseconds; a built-in one cannot be killed) before the run ends without them.
/// Part of [`crate::progress::HARD_STOP_SECONDS`].
pub const HARD_STOP_WAIT: Duration = Duration::from_millis(1000);

/// The bounds a run's dispatch keeps (from `RunOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchLimits {
    /// Simulation workers.
    pub workers: usize,
    /// Most tasks out (handed to workers, return not yet reported).
    pub max_in_flight: usize,
    /// Most tasks in one chunk.
    pub chunk_cap: usize,
    /// The memory budget for model outputs held, in bytes (`RunOptions::max_buffer_bytes`).
    pub max_buffer_bytes: u64,
}

/// What the dataflow has measured so far; the Batcher reads it from the run's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    /// Mean time a worker spent per task (`None` until a chunk has returned).
    pub mean_task: Option<Duration>,
    /// Bytes of model outputs the writer holds.
    pub bytes_buffered: u64,
    /// Mean bytes of a replicate's outputs (`None` until a return reached the writer).
    pub mean_output_bytes: Option<u64>,
}

/// How the run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Graceful,
    Hard { since: Instant },
}

/// The state machine (see the [module docs](self)).
#[derive(Debug)]
pub struct Dispatch {
    sweep: Arc<Sweep>,
    replicates: u32,
    planner: Planner,
    limits: DispatchLimits,
    /// Tasks of released batches not yet handed out.
    pending: VecDeque<SimTask>,
    /// Tasks of each released batch still in `pending`.
    unreleased: BTreeMap<u32, usize>,
    /// Batches all of whose tasks went out, not committed: a graceful stop waits for them.
    awaiting_commit: BTreeSet<u32>,
    /// Tasks out.
    in_flight: usize,
    /// Tasks of the batch released last (for the chunk length).
    batch_tasks: usize,
    stop: Option<Stop>,
    failed: bool,
    /// Replicate number of each set's first replicate (0 but for a refine step).
    first_replicate: u32,
}

impl Dispatch {
    /// The dispatch of the batches `planner` plans over `sweep` (each point `replicates`
    /// replicates, or its fixed seed), within `limits`.
    pub fn new(
        sweep: Arc<Sweep>,
        replicates: u32,
        planner: Planner,
        limits: DispatchLimits,
    ) -> Self {
        Dispatch {
            sweep,
            replicates,
            planner,
            limits,
            pending: VecDeque::new(),
            unreleased: BTreeMap::new(),
            awaiting_commit: BTreeSet::new(),
            in_flight: 0,
            batch_tasks: 0,
            stop: None,
            failed: false,
            first_replicate: 0,
        }
    }

    /// Numbers each set's replicates from `first` (a refine step's job, see
    /// [`crate::spec::Job::first_replicate`]) instead of 0.
    pub fn with_first_replicate(mut self, first: u32) -> Self {
        self.first_replicate = first;
        self
    }

    /// The next chunk to hand to a worker, or `None` when nothing may go out now: stopping, the
    /// in-flight bound reached, or no batch may be released (all released, `max_open_batches`
    /// open, or the memory budget full).
    ///
    /// The policy: until a task has been timed, one task per worker (a probe: slow tasks must
    /// not queue up on one worker); then up to `max_in_flight` tasks, in chunks of
    /// [`chunk_len`]; while tasks are out, a chunk waits for a whole chunk's room (refilling
    /// each freed slot with a chunk of one would keep chunks at one task for the rest of the
    /// run).
    pub fn next_chunk(&mut self, measured: &Measured) -> Option<Vec<SimTask>> {
        if self.is_winding_down() {
            return None;
        }
        let max = self.limits.max_in_flight.max(1);
        let limit = match measured.mean_task {
            Some(_) => max,
            None => self.limits.workers.clamp(1, max),
        };
        if self.in_flight >= limit {
            return None;
        }
        let room = limit - self.in_flight;
        if room < self.chunk_len(measured) && self.in_flight > 0 {
            return None;
        }
        // The first task first: it may release a batch, which the chunk length depends on.
        let first = self.next_task(measured)?;
        let room = room.min(self.chunk_len(measured));
        let mut chunk = Vec::with_capacity(room);
        chunk.push(first);
        while chunk.len() < room {
            match self.next_task(measured) {
                Some(task) => chunk.push(task),
                None => break,
            }
        }
        self.in_flight += chunk.len();
        Some(chunk)
    }

    /// A chunk of `tasks` tasks came back; `skipped` lists the batches of tasks its worker did
    /// not run (it was stopping, or died): those batches cannot complete, so nothing waits for
    /// their commit.
    pub fn chunk_returned(&mut self, tasks: usize, skipped: &[u32]) {
        self.in_flight = self.in_flight.saturating_sub(tasks);
        for index in skipped {
            self.awaiting_commit.remove(index);
        }
    }

    /// Batch `index` is committed.
    ///
    /// # Errors
    /// [`PlanError::NotOpen`] when it was never released or is already committed; the state is
    /// unchanged then.
    pub fn committed(&mut self, index: u32) -> Result<(), PlanError> {
        self.planner.on_committed(index)?;
        self.awaiting_commit.remove(&index);
        Ok(())
    }

    /// The graceful stop (see the [module docs](self)); a hard stop already asked stays.
    pub fn stop_gracefully(&mut self) {
        self.stop.get_or_insert(Stop::Graceful);
    }

    /// The hard stop, asked at `now`; asking again keeps the first time.
    pub fn stop_hard(&mut self, now: Instant) {
        if !matches!(self.stop, Some(Stop::Hard { .. })) {
            self.stop = Some(Stop::Hard { since: now });
        }
    }

    /// The run failed (a commit, a stage): no new chunk, no commit waited for.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Stopping or failed: no new chunk goes out.
    pub fn is_winding_down(&self) -> bool {
        self.failed || self.stop.is_some()
    }

    /// Whether a hard stop was asked.
    pub fn is_stopping_hard(&self) -> bool {
        matches!(self.stop, Some(Stop::Hard { .. }))
    }

    /// Tasks out.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the run may end now (at `now`), with `commits_running` commits still writing:
    /// never while a commit writes (its files would outlive the run and its lock); never while
    /// chunks are out, unless a hard stop has waited [`HARD_STOP_WAIT`] for them; and then only
    /// when every batch is committed, or, stopping, when no batch that can still complete is
    /// waited for (a failed or hard-stopped run waits for none).
    pub fn may_end(&self, commits_running: u64, now: Instant) -> bool {
        let finished = self.planner.is_finished() && self.pending.is_empty();
        let hard_since = match self.stop {
            Some(Stop::Hard { since }) => Some(since),
            _ => None,
        };
        let commits_due = !self.failed && hard_since.is_none() && !self.awaiting_commit.is_empty();
        let abandon =
            hard_since.is_some_and(|t| now.saturating_duration_since(t) >= HARD_STOP_WAIT);
        let quiet = (self.in_flight == 0 || abandon) && commits_running == 0;
        quiet && (finished || (self.is_winding_down() && !commits_due))
    }

    /// Every batch is committed and nothing failed.
    pub fn is_complete(&self) -> bool {
        self.planner.is_finished() && !self.failed
    }

    /// The plan (for progress).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Tasks in the next chunk (see [`chunk_len`]).
    fn chunk_len(&self, measured: &Measured) -> usize {
        chunk_len(self.batch_tasks, self.limits.workers, self.limits.chunk_cap, measured.mean_task)
    }

    /// The next task to hand out, releasing a batch when the bounds allow.
    fn next_task(&mut self, measured: &Measured) -> Option<SimTask> {
        if self.pending.is_empty() {
            if !self.fits_memory_budget(measured) {
                return None;
            }
            let batch = self.planner.next_batch()?;
            tracing::debug!(batch = batch.index, points = ?batch.points, "batch released");
            self.pending.extend(tasks_of(
                &self.sweep,
                &batch,
                self.replicates,
                self.first_replicate,
            ));
            self.batch_tasks = self.pending.len();
            self.unreleased.insert(batch.index, self.pending.len());
        }
        let task = self.pending.pop_front()?;
        let index = task.batch.index;
        if let Some(left) = self.unreleased.get_mut(&index) {
            *left -= 1;
            if *left == 0 {
                self.unreleased.remove(&index);
                self.awaiting_commit.insert(index);
            }
        }
        Some(task)
    }

    /// The memory budget: another batch when none is open (the run always goes on), or when
    /// what the writer holds plus the next batch's expected outputs (its tasks × the mean
    /// bytes of a replicate's outputs) fits. Without an estimate yet: one batch at a time.
    fn fits_memory_budget(&self, measured: &Measured) -> bool {
        if self.planner.open() == 0 {
            return true;
        }
        let Some(mean) = measured.mean_output_bytes else { return false };
        let next = mean.saturating_mul(self.batch_tasks.max(1) as u64);
        measured.bytes_buffered.saturating_add(next) <= self.limits.max_buffer_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::params::{ParamValue, ParameterSet};

    /// A sweep of `points` sets, each `replicates` replicates, batches of `batch_size`.
    fn dispatch(
        points: usize,
        replicates: u32,
        batch_size: usize,
        limits: DispatchLimits,
    ) -> Dispatch {
        let sets: Vec<ParameterSet> = (0..points)
            .map(|i| {
                let mut p = ParameterSet::new();
                p.insert("a", ParamValue::Float(i as f64));
                p
            })
            .collect();
        let sweep = Arc::new(Sweep::from_sets(&sets, None).expect("finite"));
        let planner = Planner::new(
            points as u64,
            NonZeroUsize::new(batch_size).unwrap(),
            &[],
            0,
            NonZeroUsize::new(2).unwrap(),
        )
        .expect("plans");
        Dispatch::new(sweep, replicates, planner, limits)
    }

    fn limits(workers: usize, max_in_flight: usize, chunk_cap: usize) -> DispatchLimits {
        DispatchLimits { workers, max_in_flight, chunk_cap, max_buffer_bytes: u64::MAX }
    }

    /// Fast tasks, measured: chunks as large as the policy allows.
    fn fast() -> Measured {
        Measured {
            mean_task: Some(Duration::from_micros(10)),
            bytes_buffered: 0,
            mean_output_bytes: Some(1),
        }
    }

    /// Hands out every chunk the state allows; returns them.
    fn drain(d: &mut Dispatch, m: &Measured) -> Vec<Vec<SimTask>> {
        std::iter::from_fn(|| d.next_chunk(m)).collect()
    }

    fn batches_of(chunk: &[SimTask]) -> Vec<u32> {
        let mut b: Vec<u32> = chunk.iter().map(|t| t.batch.index).collect();
        b.dedup();
        b
    }

    /// The batches of `chunks`, in order, each once.
    fn batches(chunks: &[Vec<SimTask>]) -> Vec<u32> {
        let mut b: Vec<u32> = chunks.iter().flatten().map(|t| t.batch.index).collect();
        b.dedup();
        b
    }

    #[test]
    fn one_probe_task_per_worker_until_a_task_is_timed() {
        let mut d = dispatch(10, 4, 5, limits(3, 24, 8));
        let chunks = drain(&mut d, &Measured::default());
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(d.in_flight(), 3);
        // Timed: up to the bound, in chunks of spread = 20 tasks / (3 workers × 4) = 1 .. cap.
        let more = drain(&mut d, &fast());
        assert_eq!(d.in_flight(), 24, "filled to the bound: {:?}", more.len());
        assert!(d.next_chunk(&fast()).is_none(), "nothing beyond the bound");
    }

    #[test]
    fn a_chunk_waits_for_a_whole_chunks_room() {
        // 2 workers, bound 8, cap 4; batches of 10 sets × 4 = 40 tasks: chunks of
        // min(40 / 8, 4) = 4.
        let mut d = dispatch(20, 4, 10, limits(2, 8, 4));
        let chunks = drain(&mut d, &fast());
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4]);
        // One task back: room for 1, not a chunk: nothing goes out (no chunk of one).
        d.chunk_returned(1, &[]);
        assert!(d.next_chunk(&fast()).is_none());
        d.chunk_returned(3, &[]);
        assert_eq!(d.next_chunk(&fast()).map(|c| c.len()), Some(4));
    }

    #[test]
    fn never_more_than_max_open_batches_and_commits_in_any_order() {
        // 4 batches of 2 sets × 1 replicate; at most 2 open.
        let mut d = dispatch(8, 1, 2, limits(1, 100, 100));
        let out = batches(&drain(&mut d, &fast()));
        assert_eq!(out, [0, 1], "two batches open, no third");
        d.chunk_returned(4, &[]);
        // Batch 1 commits before batch 0: batch 2 may go out, still not batch 3.
        d.committed(1).unwrap();
        let out = batches(&drain(&mut d, &fast()));
        assert_eq!(out, [2]);
        assert_eq!(d.committed(1), Err(PlanError::NotOpen { index: 1 }), "not twice");
        d.committed(0).unwrap();
        d.chunk_returned(2, &[]);
        assert!(!d.may_end(0, Instant::now()), "batches 2 and 3 remain");
        let out = batches(&drain(&mut d, &fast()));
        assert_eq!(out, [3]);
        d.chunk_returned(2, &[]);
        d.committed(3).unwrap();
        d.committed(2).unwrap();
        assert!(d.may_end(0, Instant::now()) && d.is_complete());
    }

    #[test]
    fn a_graceful_stop_waits_for_the_batches_that_can_still_complete() {
        let mut d = dispatch(8, 1, 2, limits(1, 100, 100));
        // Batches of 2 tasks on 1 worker: chunks of one task (2 / (1 × 4) rounds up to 1).
        let chunks = drain(&mut d, &fast());
        assert_eq!(chunks.len(), 4, "batches 0 and 1, a task a chunk");
        d.stop_gracefully();
        assert!(d.next_chunk(&fast()).is_none(), "no new chunk once stopping");
        for _ in 0..3 {
            d.chunk_returned(1, &[]);
        }
        assert!(!d.may_end(0, Instant::now()), "a chunk is still out");
        d.chunk_returned(1, &[]);
        // Batches 0 and 1 ran whole: their commits are waited for.
        assert!(!d.may_end(0, Instant::now()));
        d.committed(0).unwrap();
        assert!(!d.may_end(0, Instant::now()));
        // A stop during a commit: not while it writes.
        d.committed(1).unwrap();
        assert!(!d.may_end(1, Instant::now()));
        assert!(d.may_end(0, Instant::now()));
        assert!(!d.is_complete());
    }

    #[test]
    fn a_worker_skipping_its_chunk_is_not_waited_for() {
        // The worker stopped (or died) before running its chunk: its batches cannot complete.
        let mut d = dispatch(8, 1, 2, limits(1, 100, 100));
        drain(&mut d, &fast());
        d.stop_gracefully();
        d.chunk_returned(4, &[0, 1]);
        assert!(d.may_end(0, Instant::now()));
    }

    #[test]
    fn a_hard_stop_waits_for_no_commit_and_abandons_chunks_after_the_wait() {
        let mut d = dispatch(8, 1, 2, limits(1, 100, 100));
        drain(&mut d, &fast());
        let t0 = Instant::now();
        d.stop_hard(t0);
        d.stop_gracefully(); // a graceful stop after a hard one changes nothing
        assert!(d.is_stopping_hard());
        assert!(!d.may_end(0, t0), "the chunk is out, the wait not over");
        assert!(!d.may_end(0, t0 + HARD_STOP_WAIT / 2));
        assert!(d.may_end(0, t0 + HARD_STOP_WAIT), "abandoned after the wait");
        assert!(!d.may_end(1, t0 + HARD_STOP_WAIT), "never while a commit writes");
        // Had the chunk come back, the end would not wait for batches 0 and 1 to commit.
        d.chunk_returned(4, &[]);
        assert!(d.may_end(0, t0));
    }

    #[test]
    fn a_failure_waits_for_chunks_out_but_no_commit() {
        let mut d = dispatch(8, 1, 2, limits(1, 100, 100));
        drain(&mut d, &fast());
        d.fail();
        assert!(d.next_chunk(&fast()).is_none());
        assert!(!d.may_end(0, Instant::now()));
        d.chunk_returned(4, &[]);
        assert!(d.may_end(0, Instant::now()));
        assert!(!d.is_complete());
    }

    #[test]
    fn the_memory_budget_holds_batches_back_until_there_is_room() {
        // Batches of 2 sets × 1 replicate, each replicate's outputs 100 bytes, budget 250.
        let mut l = limits(1, 100, 1);
        l.max_buffer_bytes = 250;
        let mut d = dispatch(8, 1, 2, l);
        let mut m = Measured { mean_task: Some(Duration::from_micros(10)), ..Measured::default() };
        // No estimate yet: one batch.
        let out = batches(&drain(&mut d, &m));
        assert_eq!(out, [0]);
        // 100 bytes each, 200 held: 200 + 2 × 100 > 250, no second batch.
        m.mean_output_bytes = Some(100);
        m.bytes_buffered = 200;
        assert!(d.next_chunk(&m).is_none());
        // 50 held (the writer freed some): 50 + 200 fits.
        m.bytes_buffered = 50;
        assert_eq!(d.next_chunk(&m).map(|c| batches_of(&c)), Some(vec![1]));
    }
}
