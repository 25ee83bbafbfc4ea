//! The daemon's registry: jobs, their states and their events, in SQLite (WAL).
//!
//! Each job's output directory, with its manifest and commit log, stays the source of truth for
//! what is committed; the registry holds what the directory cannot: the submission, the queue
//! order, the state the daemon gave the job, and the events it sent. A write is one SQLite
//! transaction, so a daemon killed at any moment leaves either the old or the new row.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// States a job of the daemon goes through.
///
/// `queued` → `running` → `succeeded` | `failed` | `cancelled`; `running` → `stopping` (a cancel
/// asked) → `cancelled`; a daemon stopped or killed while a job runs puts it back to `queued`
/// at its next start (it resumes from its committed batches). `resume` puts a `cancelled` or
/// `failed` job back to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Running.
    Running,
    /// Asked to stop; stops at a batch boundary (or at once, forced).
    Stopping,
    /// Every batch committed.
    Succeeded,
    /// Ended by an error (see the job's `error`).
    Failed,
    /// Stopped by a cancel; resumable.
    Cancelled,
}

impl JobState {
    /// The state's name in the API and the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Stopping => "stopping",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Stopping,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// True when the job will not change state by itself.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

/// One job as the registry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    /// The job's id (`j000001`, …), in submission order.
    pub id: String,
    /// The job's name (from its spec).
    pub name: String,
    /// Current state.
    pub state: JobState,
    /// Higher runs first among queued jobs; then submission order.
    pub priority: i64,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// Times (RFC 3339 UTC).
    pub submitted_at: String,
    /// When it last started running.
    pub started_at: Option<String>,
    /// When it last reached a terminal state.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// An event of a job, in the order the daemon recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Position among the job's events, from 1: the SSE event id.
    pub seq: i64,
    /// `state`, `started`, `batch_committed`.
    pub kind: String,
    /// The event's JSON.
    pub data: String,
}

/// The registry (one SQLite connection behind a mutex: the daemon's writes are few and small).
pub struct Registry {
    conn: Mutex<Connection>,
}

type SqlResult<T> = rusqlite::Result<T>;

impl Registry {
    /// Opens (creating) the registry at `path`, in WAL mode.
    ///
    /// # Errors
    /// SQLite's, when the file cannot be opened or its tables created.
    pub fn open(path: &Path) -> SqlResult<Registry> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                 number INTEGER PRIMARY KEY AUTOINCREMENT,
                 id TEXT NOT NULL UNIQUE,
                 name TEXT NOT NULL,
                 state TEXT NOT NULL,
                 priority INTEGER NOT NULL DEFAULT 0,
                 idempotency_key TEXT UNIQUE,
                 submitted_at TEXT NOT NULL,
                 started_at TEXT,
                 finished_at TEXT,
                 error TEXT
             );
             CREATE TABLE IF NOT EXISTS events (
                 job_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 data TEXT NOT NULL,
                 PRIMARY KEY (job_id, seq)
             );",
        )?;
        Ok(Registry { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id the next job will get (`j` and its 6-digit number).
    pub fn next_id(&self) -> SqlResult<String> {
        let conn = self.conn();
        let last: Option<i64> =
            conn.query_row("SELECT MAX(number) FROM jobs", [], |r| r.get(0)).optional()?.flatten();
        Ok(format!("j{:06}", last.unwrap_or(0) + 1))
    }

    /// Records a new job, queued, with its first event.
    pub fn insert(&self, row: &JobRow, event: &str) -> SqlResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO jobs (id, name, state, priority, idempotency_key, submitted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.id,
                row.name,
                row.state.as_str(),
                row.priority,
                row.idempotency_key,
                row.submitted_at
            ],
        )?;
        tx.execute(
            "INSERT INTO events (job_id, seq, kind, data) VALUES (?1, 1, 'state', ?2)",
            params![row.id, event],
        )?;
        tx.commit()
    }

    /// The job with the client's `Idempotency-Key` `key`, if any.
    pub fn by_idempotency_key(&self, key: &str) -> SqlResult<Option<JobRow>> {
        self.select_one("WHERE idempotency_key = ?1", key)
    }

    /// The job `id`, if any.
    pub fn get(&self, id: &str) -> SqlResult<Option<JobRow>> {
        self.select_one("WHERE id = ?1", id)
    }

    fn select_one(&self, clause: &str, value: &str) -> SqlResult<Option<JobRow>> {
        let conn = self.conn();
        let sql = format!("{SELECT_JOB} {clause}");
        conn.query_row(&sql, [value], job_row).optional()
    }

    /// Jobs in submission order, optionally of one state, `limit` from `offset`.
    pub fn list(&self, state: Option<JobState>, limit: u32, offset: u32) -> SqlResult<Vec<JobRow>> {
        let conn = self.conn();
        let sql = format!(
            "{SELECT_JOB} WHERE (?1 IS NULL OR state = ?1) ORDER BY number LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![state.map(JobState::as_str), limit, offset], job_row)?;
        rows.collect()
    }

    /// The queued jobs, in the order they start: priority, then submission.
    pub fn queued(&self) -> SqlResult<Vec<JobRow>> {
        let conn = self.conn();
        let sql = format!("{SELECT_JOB} WHERE state = 'queued' ORDER BY priority DESC, number");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], job_row)?;
        rows.collect()
    }

    /// Jobs per state, for the metrics.
    pub fn count_by_state(&self) -> SqlResult<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Sets job `id`'s state (and the times and error that go with it) and records the `state`
    /// event `event`, in one transaction. Returns the event's seq.
    pub fn set_state(
        &self,
        id: &str,
        state: JobState,
        error: Option<&str>,
        now: &str,
        event: &str,
    ) -> SqlResult<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match state {
            JobState::Running => tx.execute(
                "UPDATE jobs SET state = ?2, started_at = ?3, finished_at = NULL, error = NULL
                 WHERE id = ?1",
                params![id, state.as_str(), now],
            )?,
            s if s.is_terminal() => tx.execute(
                "UPDATE jobs SET state = ?2, finished_at = ?3, error = ?4 WHERE id = ?1",
                params![id, state.as_str(), now, error],
            )?,
            _ => tx.execute(
                "UPDATE jobs SET state = ?2, error = NULL WHERE id = ?1",
                params![id, state.as_str()],
            )?,
        };
        let seq = append_event(&tx, id, "state", event)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Records an event of job `id`; returns its seq.
    pub fn append(&self, id: &str, kind: &str, data: &str) -> SqlResult<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let seq = append_event(&tx, id, kind, data)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Job `id`'s events after `after`, in order, at most `limit`.
    pub fn events_after(&self, id: &str, after: i64, limit: u32) -> SqlResult<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, kind, data FROM events WHERE job_id = ?1 AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, after, limit], |r| {
            Ok(EventRow { seq: r.get(0)?, kind: r.get(1)?, data: r.get(2)? })
        })?;
        rows.collect()
    }

    /// Removes job `id` and its events.
    pub fn delete(&self, id: &str) -> SqlResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM events WHERE job_id = ?1", [id])?;
        tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
        tx.commit()
    }
}

const SELECT_JOB: &str = "SELECT id, name, state, priority, idempotency_key, submitted_at, \
                          started_at, finished_at, error FROM jobs";

fn job_row(r: &rusqlite::Row<'_>) -> SqlResult<JobRow> {
    let state: String = r.get(2)?;
    Ok(JobRow {
        id: r.get(0)?,
        name: r.get(1)?,
        // Only this module writes states, always one of JobState's names.
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        priority: r.get(3)?,
        idempotency_key: r.get(4)?,
        submitted_at: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        error: r.get(8)?,
    })
}

fn append_event(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    kind: &str,
    data: &str,
) -> SqlResult<i64> {
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO events (job_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
        params![id, seq, kind, data],
    )?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: Option<&str>) -> JobRow {
        JobRow {
            id: id.into(),
            name: "flu".into(),
            state: JobState::Queued,
            priority: 0,
            idempotency_key: key.map(str::to_string),
            submitted_at: "2026-12-04T00:00:00Z".into(),
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn jobs_states_and_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        {
            let r = Registry::open(&path).unwrap();
            assert_eq!(r.next_id().unwrap(), "j000001");
            r.insert(&row("j000001", Some("k1")), "{\"state\":\"queued\"}").unwrap();
            r.insert(&row("j000002", None), "{}").unwrap();
            assert_eq!(r.next_id().unwrap(), "j000003");
            let seq = r.set_state("j000001", JobState::Running, None, "t1", "{\"r\":1}").unwrap();
            assert_eq!(seq, 2);
            assert_eq!(r.append("j000001", "batch_committed", "{\"b\":0}").unwrap(), 3);
            r.set_state("j000001", JobState::Failed, Some("boom"), "t2", "{}").unwrap();
        }
        let r = Registry::open(&path).unwrap();
        let j = r.get("j000001").unwrap().unwrap();
        assert_eq!(
            (j.state, j.started_at.as_deref(), j.finished_at.as_deref(), j.error.as_deref()),
            (JobState::Failed, Some("t1"), Some("t2"), Some("boom"))
        );
        assert_eq!(r.by_idempotency_key("k1").unwrap().unwrap().id, "j000001");
        assert_eq!(r.by_idempotency_key("k2").unwrap(), None);
        let events = r.events_after("j000001", 1, 10).unwrap();
        let kinds: Vec<(i64, &str)> = events.iter().map(|e| (e.seq, e.kind.as_str())).collect();
        assert_eq!(kinds, [(2, "state"), (3, "batch_committed"), (4, "state")]);
        assert_eq!(
            r.queued().unwrap().iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["j000002"]
        );
        let failed = r.list(Some(JobState::Failed), 10, 0).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(r.list(None, 1, 1).unwrap()[0].id, "j000002");
        r.delete("j000002").unwrap();
        assert_eq!(r.get("j000002").unwrap(), None);
        assert!(r.events_after("j000002", 0, 10).unwrap().is_empty());
        // A second job with the same key is refused by the table.
        assert!(r.insert(&row("j000009", Some("k1")), "{}").is_err());
        // The queue: higher priority first, then submission order.
        r.insert(&row("j000010", None), "{}").unwrap();
        r.insert(&JobRow { priority: 5, ..row("j000011", None) }, "{}").unwrap();
        r.insert(&row("j000012", None), "{}").unwrap();
        r.insert(&JobRow { priority: -1, ..row("j000013", None) }, "{}").unwrap();
        let order: Vec<String> = r.queued().unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(order, ["j000011", "j000010", "j000012", "j000013"]);
    }
}
