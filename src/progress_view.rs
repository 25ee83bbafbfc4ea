//! What the progress display shows, computed from the run's events: plain state, no terminal,
//! tested alone. The bar (or the plain lines) only draws [`ProgressView::line`].
//!
//! - Position: simulations committed, or, within open batches, those the workers finished in
//!   this run on top of those committed before it — so a long batch does not look frozen.
//! - Rate and ETA: from this run's simulations only (a resumed run's earlier simulations do not
//!   count), an exponentially weighted mean of the rate between the 0.5 s samples
//!   (weight [`RATE_SMOOTHING`]); none is shown before the first simulations finish.

use std::time::Duration;

use simsweep::Progress;

/// Weight of the newest sample in the smoothed rate.
pub const RATE_SMOOTHING: f64 = 0.3;

/// The display's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressView {
    planned: u64,
    committed_at_start: u64,
    committed: u64,
    failed: u64,
    batches_committed: u32,
    batches_planned: u32,
    finished_this_run: u64,
    last_sample: Option<(Duration, u64)>,
    rate_per_s: Option<f64>,
}

impl ProgressView {
    /// The run started with `p` (committed by earlier runs included).
    pub fn started(&mut self, p: &Progress) {
        *self = ProgressView { committed_at_start: p.simulations_committed, ..Default::default() };
        self.committed(p);
    }

    /// A batch was committed; `p` is the progress after it.
    pub fn committed(&mut self, p: &Progress) {
        self.planned = p.simulations_planned;
        self.committed = p.simulations_committed;
        self.failed = p.failed;
        self.batches_committed = p.batches_committed;
        self.batches_planned = p.batches_planned;
    }

    /// A sample: `finished` simulations finished by this run's workers `elapsed` after it started.
    pub fn sample(&mut self, elapsed: Duration, finished: u64) {
        self.finished_this_run = self.finished_this_run.max(finished);
        let instant = match self.last_sample {
            None if elapsed > Duration::ZERO && finished > 0 => {
                Some(finished as f64 / elapsed.as_secs_f64())
            }
            Some((t, n)) if elapsed > t && finished >= n => {
                Some((finished - n) as f64 / (elapsed - t).as_secs_f64())
            }
            _ => None,
        };
        if let Some(r) = instant {
            self.rate_per_s = Some(match self.rate_per_s {
                None => r,
                Some(old) => RATE_SMOOTHING * r + (1.0 - RATE_SMOOTHING) * old,
            });
        }
        if finished > 0 {
            self.last_sample = Some((elapsed, finished));
        }
    }

    /// Simulations done, for the bar's position: never beyond the plan, never backwards.
    pub fn position(&self) -> u64 {
        self.committed.max(self.committed_at_start + self.finished_this_run).min(self.planned)
    }

    /// Simulations planned (the bar's length).
    pub fn planned(&self) -> u64 {
        self.planned
    }

    /// The smoothed rate of this run, simulations per second.
    pub fn rate_per_s(&self) -> Option<f64> {
        self.rate_per_s.filter(|r| *r > 0.0)
    }

    /// Time left at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.planned.saturating_sub(self.position());
        self.rate_per_s().map(|r| Duration::from_secs_f64(left as f64 / r))
    }

    /// One line: `12,000/200,000 simulations (6.0%) · 41,000/s · ETA 4 s · batches 3/50`.
    pub fn line(&self) -> String {
        let pct = if self.planned == 0 {
            100.0
        } else {
            100.0 * self.position() as f64 / self.planned as f64
        };
        let mut line = format!(
            "{}/{} simulations ({pct:.1}%)",
            thousands(self.position()),
            thousands(self.planned)
        );
        match (self.rate_per_s(), self.eta()) {
            (Some(r), Some(eta)) => {
                line.push_str(&format!(" · {}/s · ETA {}", rate(r), duration(eta)))
            }
            _ => line.push_str(" · rate —"),
        }
        line.push_str(&format!(" · batches {}/{}", self.batches_committed, self.batches_planned));
        if self.failed > 0 {
            line.push_str(&format!(" · {} failed", thousands(self.failed)));
        }
        line
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with sensible precision: whole numbers from 100 up, one decimal below.
fn rate(r: f64) -> String {
    if r >= 100.0 {
        thousands(r.round() as u64)
    } else {
        format!("{r:.1}")
    }
}

/// `4 s`, `3m 05s`, `2h 07m`.
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(committed: u64, planned: u64, batches: u32) -> Progress {
        Progress {
            batches_committed: batches,
            batches_planned: 10,
            simulations_committed: committed,
            simulations_planned: planned,
            failed: 0,
        }
    }

    #[test]
    fn no_rate_before_the_first_simulations_and_progress_within_a_batch() {
        let mut v = ProgressView::default();
        v.started(&progress(0, 1000, 0));
        assert_eq!(v.line(), "0/1,000 simulations (0.0%) · rate — · batches 0/10");
        v.sample(Duration::from_millis(500), 0);
        assert_eq!(v.rate_per_s(), None);
        // 250 finished within the first batch, nothing committed yet: the bar moves.
        v.sample(Duration::from_secs(1), 250);
        assert_eq!(v.position(), 250);
        assert_eq!(v.rate_per_s(), Some(250.0));
        assert_eq!(v.eta(), Some(Duration::from_secs(3)));
        assert_eq!(v.line(), "250/1,000 simulations (25.0%) · 250/s · ETA 3 s · batches 0/10");
    }

    #[test]
    fn a_resumed_run_counts_only_its_own_rate() {
        let mut v = ProgressView::default();
        v.started(&progress(600_000, 1_000_000, 6)); // 600k done by an earlier run
        v.sample(Duration::from_secs(2), 20_000);
        assert_eq!(v.position(), 620_000);
        assert_eq!(v.rate_per_s(), Some(10_000.0), "not 620,000 / 2 s");
        assert_eq!(v.eta(), Some(Duration::from_secs(38)));
        // Smoothed: 30% of the new 30,000/s, 70% of the old 10,000/s.
        v.sample(Duration::from_secs(3), 50_000);
        assert_eq!(v.rate_per_s(), Some(16_000.0));
        assert!(
            v.line().contains("650,000/1,000,000 simulations (65.0%) · 16,000/s · ETA 22 s"),
            "{}",
            v.line()
        );
        // A commit behind the workers never moves the bar back.
        v.committed(&progress(640_000, 1_000_000, 7));
        assert_eq!(v.position(), 650_000);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(12.345), "12.3");
        assert_eq!(rate(98_765.4321), "98,765");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(7_620)), "2h 07m");
    }
}
