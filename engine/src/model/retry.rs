//! The retry policy: which failures of a replicate are tried again, and how often.
//!
//! ```toml
//! [model]
//! # ... the model ...
//! max_attempts = 3                      # default 3; 1 = never retry
//! retry = ["crash", "oom", "timeout"]   # default; kinds among error, panic, crash, oom,
//!                                       # timeout, protocol
//! ```
//!
//! Deterministic kinds (`error`, `panic`) fail the same way every time, so they are not retried
//! by default; `crash`, `oom` and `timeout` may be transient (a node under memory pressure, a
//! stuck file system) and are retried on a fresh worker process. Every failed attempt is a row
//! of `failures/` with its `attempt` number; a replicate counts as failed (`n_failed`) only when
//! its last attempt failed.

use serde::{Deserialize, Serialize};

use super::{FailureKind, SimError, SimOutput};

/// Default of [`RetryPolicy::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Default of [`RetryPolicy::retry`].
pub const DEFAULT_RETRY_KINDS: [FailureKind; 3] =
    [FailureKind::Crash, FailureKind::Oom, FailureKind::Timeout];

/// Which failures are retried and how many attempts a replicate gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per replicate, the first included (≥ 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Failure kinds that are retried.
    #[serde(default = "default_retry_kinds")]
    pub retry: Vec<FailureKind>,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn default_retry_kinds() -> Vec<FailureKind> {
    DEFAULT_RETRY_KINDS.to_vec()
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: DEFAULT_MAX_ATTEMPTS, retry: default_retry_kinds() }
    }
}

/// A replicate after all its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempts {
    /// The last attempt's result.
    pub result: Result<SimOutput, SimError>,
    /// The attempts that failed before the last one, in order (attempt 1 first).
    pub failed_attempts: Vec<SimError>,
}

impl RetryPolicy {
    /// True when a failure of `kind` is retried.
    pub fn retries(&self, kind: FailureKind) -> bool {
        self.retry.contains(&kind)
    }

    /// Runs `attempt` (called with the 1-based attempt number) until it succeeds, fails with a
    /// kind that is not retried, or `max_attempts` attempts have been made (at least one).
    pub fn run(&self, attempt: impl FnMut(u32) -> Result<SimOutput, SimError>) -> Attempts {
        self.run_while(|| true, attempt)
    }

    /// As [`RetryPolicy::run`], but makes no further attempt once `keep_going` says no (a run
    /// being stopped does not retry).
    pub fn run_while(
        &self,
        keep_going: impl Fn() -> bool,
        mut attempt: impl FnMut(u32) -> Result<SimOutput, SimError>,
    ) -> Attempts {
        let first = attempt(1);
        self.continue_while(first, keep_going, attempt)
    }

    /// As [`RetryPolicy::run_while`] when the first attempt has already been made (with result
    /// `first`, e.g. in a [`Simulator::simulate_many`](super::Simulator::simulate_many) call):
    /// `attempt` is called from attempt 2 on.
    pub fn continue_while(
        &self,
        first: Result<SimOutput, SimError>,
        keep_going: impl Fn() -> bool,
        mut attempt: impl FnMut(u32) -> Result<SimOutput, SimError>,
    ) -> Attempts {
        let mut failed_attempts = Vec::new();
        let mut number = 1;
        let mut result = first;
        loop {
            match result {
                Err(error)
                    if number < self.max_attempts
                        && self.retries(error.failure_kind())
                        && keep_going() =>
                {
                    failed_attempts.push(error);
                    number += 1;
                    result = attempt(number);
                }
                result => return Attempts { result, failed_attempts },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash() -> SimError {
        SimError::Crash { exit_code: Some(1), signal: None, stderr_tail: String::new() }
    }

    #[test]
    fn defaults_retry_crash_oom_timeout_three_times() {
        let policy = RetryPolicy::default();
        let mut calls = Vec::new();
        let out = policy.run(|n| {
            calls.push(n);
            Err(crash())
        });
        assert_eq!(calls, [1, 2, 3]);
        assert_eq!(out.failed_attempts, vec![crash(), crash()]);
        assert_eq!(out.result, Err(crash()));
    }

    #[test]
    fn deterministic_kinds_are_not_retried_and_success_stops() {
        let policy = RetryPolicy::default();
        let out = policy.run(|_| Err(SimError::Model("bad".into())));
        assert!(out.failed_attempts.is_empty());
        assert_eq!(out.result, Err(SimError::Model("bad".into())));
        let ok = SimOutput { tables: vec![] };
        let out = policy.run(|n| if n < 2 { Err(crash()) } else { Ok(ok.clone()) });
        assert_eq!(out.failed_attempts, vec![crash()]);
        assert_eq!(out.result, Ok(ok));
    }

    #[test]
    fn from_toml_defaults_and_kinds() {
        let p: RetryPolicy = toml::from_str("retry = [\"error\", \"protocol\"]").expect("parses");
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.retry, [FailureKind::Error, FailureKind::Protocol]);
        assert!(toml::from_str::<RetryPolicy>("retry = [\"segfault\"]").is_err());
        let once = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
        assert_eq!(once.run(|_| Err(crash())).failed_attempts.len(), 0);
    }
}
