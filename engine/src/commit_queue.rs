//! The commit queue of a run: complete batches wait here and are committed one at a time, in
//! the order they completed; a failed commit ends the queue (nothing after it is committed, so
//! the commit log never has a record after a failed one). Plain data: the ParquetWriter actor
//! is its adapter (it runs the commit this hands out on a blocking thread and reports the end).
//!
//! ```text
//!   push(b) ──► idle?  yes ──► start b
//!                      no  ──► queued (completion order)
//!   done(ok)  ──► next queued starts, if any
//!   done(err) ──► broken: queued dropped, later pushes dropped
//! ```
//!
//! Why one at a time: a commit already writes its files in parallel, and two at once would hold
//! two batches' tables in memory for no gain on a machine whose cores the workers use.

use std::collections::VecDeque;

/// The queue (see the [module docs](self)); `B` is a complete batch.
#[derive(Debug)]
pub struct CommitQueue<B> {
    queued: VecDeque<B>,
    running: bool,
    broken: bool,
}

impl<B> Default for CommitQueue<B> {
    fn default() -> Self {
        CommitQueue { queued: VecDeque::new(), running: false, broken: false }
    }
}

impl<B> CommitQueue<B> {
    /// An empty, idle queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch completed: returns it to commit now when no commit is running, else queues it
    /// (returns `None`). After a failure it is dropped (`None`).
    pub fn push(&mut self, batch: B) -> Option<B> {
        if self.broken {
            return None;
        }
        if self.running {
            self.queued.push_back(batch);
            return None;
        }
        self.running = true;
        Some(batch)
    }

    /// The running commit ended, `ok` or not: returns the next batch to commit, if any. After a
    /// failure the queued batches are dropped and returned in the second place (their rows are
    /// no longer held by the caller once it drops them).
    pub fn done(&mut self, ok: bool) -> (Option<B>, Vec<B>) {
        debug_assert!(self.running, "a commit ended that was not running");
        self.running = false;
        if !ok {
            self.broken = true;
            return (None, self.queued.drain(..).collect());
        }
        match self.queued.pop_front() {
            Some(next) => {
                self.running = true;
                (Some(next), Vec::new())
            }
            None => (None, Vec::new()),
        }
    }

    /// The commit handed out by `push` or `done` could not start (the run is ending): the queue
    /// is idle again and keeps what it has queued.
    pub fn not_started(&mut self) {
        self.running = false;
    }

    /// The run failed elsewhere: nothing more is committed; returns the queued batches.
    pub fn break_off(&mut self) -> Vec<B> {
        self.broken = true;
        self.queued.drain(..).collect()
    }

    /// Whether a commit is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Whether a commit failed or the queue was broken off.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Batches waiting for the running commit.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_commit_at_a_time_in_completion_order() {
        let mut q = CommitQueue::new();
        assert_eq!(q.push(3), Some(3), "idle: starts at once");
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert!(q.is_running());
        assert_eq!(q.queued(), 2);
        // Batches complete in any order; they commit in the order they completed.
        assert_eq!(q.done(true), (Some(1), vec![]));
        assert_eq!(q.done(true), (Some(2), vec![]));
        assert_eq!(q.done(true), (None, vec![]));
        assert!(!q.is_running());
        assert_eq!(q.push(4), Some(4), "idle again");
    }

    #[test]
    fn a_failed_commit_ends_the_queue() {
        let mut q = CommitQueue::new();
        q.push(0);
        q.push(1);
        q.push(2);
        assert_eq!(q.done(false), (None, vec![1, 2]), "queued batches dropped");
        assert!(q.is_broken() && !q.is_running());
        assert_eq!(q.push(3), None, "nothing after a failure");
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn a_commit_that_could_not_start_leaves_the_queue_idle() {
        let mut q = CommitQueue::new();
        assert_eq!(q.push(0), Some(0));
        q.not_started();
        assert!(!q.is_running());
        assert_eq!(q.push(1), Some(1));
    }

    #[test]
    fn breaking_off_during_a_commit_drops_the_queue_and_the_running_one_ends() {
        let mut q = CommitQueue::new();
        q.push(0);
        q.push(1);
        assert_eq!(q.break_off(), vec![1]);
        assert_eq!(q.push(2), None);
        // The running commit still ends (the writer waits for it); nothing follows.
        assert_eq!(q.done(true), (None, vec![]));
        assert!(!q.is_running());
    }
}
