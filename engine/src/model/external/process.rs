//! One worker process: spawning (with its limits), the reader threads, request/reply with a
//! deadline, and turning how it ended into a [`SimError`].
//!
//! stdout is read by a thread of its own that parses frames and hands them over a channel of
//! capacity 1, so the caller can wait with a deadline (`recv_timeout`) and kill the process
//! when it passes; killing closes stdout, which ends the thread. stderr is read by another
//! thread into a ring buffer of [`STDERR_TAIL_BYTES`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::frame::{read_frame, write_frame, Frame, FrameError, JSON};
use super::ExternalSettings;
use crate::model::SimError;

/// Bytes of a worker's stderr kept for failure records (the last ones written).
pub const STDERR_TAIL_BYTES: usize = 4096;
/// How long a worker that closed its stdout gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the stderr reader gets to drain what a dead worker wrote.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// How long dropping a worker waits for its reader threads to end.
const READERS_JOIN: Duration = Duration::from_secs(1);
/// Exit status of a process killed by SIGKILL as reported by shells and container runtimes.
const EXIT_CODE_KILLED: i32 = 137;
const SIGKILL: i32 = 9;
/// What a process writes to stderr when an allocation fails, by language: Python, Rust, C++,
/// C (`strerror(ENOMEM)`), and the JVM/R/Julia wording. With a `memory_limit_mb` set, a worker
/// that dies having written one of these ran out of memory.
const ALLOCATION_FAILURE_MESSAGES: &[&str] = &[
    "MemoryError",
    "memory allocation of",
    "std::bad_alloc",
    "Cannot allocate memory",
    "OutOfMemoryError",
    "cannot allocate vector of size",
];

/// The worker processes of one model that are alive (idle or running a task), by pid, so that a
/// hard stop can kill them from another thread. A pid leaves the set under the same lock as it
/// is reaped, so a pid signalled here is never one the system has reused.
#[derive(Debug, Default)]
pub(crate) struct LiveWorkers {
    /// pid → whether [`kill_all`](Self::kill_all) signalled it.
    pids: Mutex<HashMap<u32, bool>>,
}

impl LiveWorkers {
    /// SIGKILLs every live worker's process group (the worker and what it started); returns
    /// how many.
    pub(crate) fn kill_all(&self) -> usize {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        for (pid, signalled) in pids.iter_mut() {
            limits::kill_pid_group(*pid);
            *signalled = true;
        }
        pids.len()
    }

    /// Workers alive.
    pub(crate) fn len(&self) -> usize {
        self.pids.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// What the stdout reader hands over.
enum Read_ {
    Frame(Frame),
    /// stdout ended (the worker exited or closed it), also inside a frame.
    End,
    /// Not a frame: garbage, a frame too large, ...
    Bad(FrameError),
}

/// Why an exchange with the worker stopped.
#[derive(Debug)]
pub(crate) enum Fault {
    /// stdout ended or stdin broke: the worker is gone.
    Died,
    /// The deadline passed.
    TimedOut(Duration),
    /// The worker broke the protocol.
    Protocol(String),
    /// The worker reported running out of memory.
    Oom(String),
}

/// Ring buffer of the last [`STDERR_TAIL_BYTES`] bytes.
#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(STDERR_TAIL_BYTES);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// A running worker.
pub(crate) struct WorkerProcess {
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    frames: Receiver<Read_>,
    stderr: Arc<Mutex<Tail>>,
    stderr_closed: Receiver<()>,
    /// Set once the child has been waited for: its pid must not be signalled after that.
    status: Option<ExitStatus>,
    /// simsweep killed it (a timeout, a protocol violation, a drop).
    killed: bool,
    /// A hard stop killed it ([`LiveWorkers::kill_all`]).
    aborted: bool,
    live: Arc<LiveWorkers>,
    /// The memory cgroup's OOM-kill count when the worker started (Linux, cgroup v2).
    oom_kills_at_start: Option<u64>,
    memory_limited: bool,
    readers: Vec<JoinHandle<()>>,
}

impl WorkerProcess {
    /// Starts the worker with its environment, working directory and memory limit.
    ///
    /// # Errors
    /// The error of `spawn` (command not found, not executable, bad working directory, ...).
    pub(crate) fn spawn(settings: &ExternalSettings, live: &Arc<LiveWorkers>) -> io::Result<Self> {
        let (program, args) = settings
            .command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(&settings.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &settings.working_dir {
            command.current_dir(dir);
        }
        limits::apply(&mut command, settings.memory_limit_mb);
        let oom_kills_at_start = limits::oom_kills();
        let mut child = {
            let mut pids = live.pids.lock().unwrap_or_else(|e| e.into_inner());
            let child = command.spawn()?;
            pids.insert(child.id(), false);
            child
        };
        let missing = || io::Error::other("child without a pipe");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let mut stderr = child.stderr.take().ok_or_else(missing)?;

        let (frames_tx, frames) = mpsc::sync_channel(1);
        let stdout_reader =
            thread::Builder::new().name("simsweep-worker-stdout".into()).spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let read = match read_frame(&mut reader) {
                        Ok(Some(frame)) => Read_::Frame(frame),
                        Ok(None) | Err(FrameError::Io(_)) => Read_::End,
                        Err(e) => Read_::Bad(e),
                    };
                    let last = !matches!(read, Read_::Frame(_));
                    if frames_tx.send(read).is_err() || last {
                        return;
                    }
                }
            })?;

        let tail = Arc::new(Mutex::new(Tail::default()));
        let (closed_tx, stderr_closed) = mpsc::sync_channel(1);
        let sink = Arc::clone(&tail);
        let stderr_reader =
            thread::Builder::new().name("simsweep-worker-stderr".into()).spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    if let Ok(mut t) = sink.lock() {
                        t.push(&buf[..n]);
                    }
                }
                let _ = closed_tx.send(());
            })?;

        Ok(WorkerProcess {
            child,
            stdin: Some(BufWriter::new(stdin)),
            frames,
            stderr: tail,
            stderr_closed,
            status: None,
            killed: false,
            aborted: false,
            live: Arc::clone(live),
            oom_kills_at_start,
            memory_limited: settings.memory_limit_mb.is_some(),
            readers: vec![stdout_reader, stderr_reader],
        })
    }

    /// Sends a control message.
    pub(crate) fn send(&mut self, message: &serde_json::Value) -> Result<(), Fault> {
        let body = serde_json::to_vec(message).map_err(|e| Fault::Protocol(e.to_string()))?;
        let stdin = self.stdin.as_mut().ok_or(Fault::Died)?;
        write_frame(stdin, Some(JSON), &body).and_then(|()| stdin.flush()).map_err(|_| Fault::Died)
    }

    /// Waits for the next frame until `deadline` (`None`: no limit).
    pub(crate) fn recv(&mut self, deadline: Option<(Instant, Duration)>) -> Result<Frame, Fault> {
        let read = match deadline {
            None => self.frames.recv().map_err(|_| Fault::Died)?,
            Some((at, limit)) => {
                let left = at.saturating_duration_since(Instant::now());
                match self.frames.recv_timeout(left) {
                    Ok(read) => read,
                    Err(RecvTimeoutError::Timeout) => return Err(Fault::TimedOut(limit)),
                    Err(RecvTimeoutError::Disconnected) => return Err(Fault::Died),
                }
            }
        };
        match read {
            Read_::Frame(frame) => Ok(frame),
            Read_::End => Err(Fault::Died),
            Read_::Bad(e) => Err(Fault::Protocol(format!("unreadable output on stdout: {e}"))),
        }
    }

    /// Asks the worker to exit, and kills it when it has not within `grace`.
    pub(crate) fn shutdown(mut self, grace: Duration) {
        let _ = self.send(&serde_json::json!({"method": "shutdown"}));
        self.stdin = None;
        let deadline = Instant::now() + grace;
        loop {
            match self.frames.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Read_::Frame(_)) => continue,
                _ => break,
            }
        }
        // Drop kills it if it is still running, and reaps it.
    }

    /// Ends the worker after `fault` and describes what happened to the task.
    pub(crate) fn into_error(mut self, fault: Fault) -> SimError {
        let exit = match &fault {
            Fault::Died => Some(self.wait_for_exit(EXIT_GRACE)),
            _ => {
                self.kill();
                None
            }
        };
        let stderr_tail = self.stderr_tail();
        match fault {
            Fault::TimedOut(limit) => {
                SimError::Timeout { timeout_seconds: limit.as_secs_f64(), stderr_tail }
            }
            Fault::Protocol(message) => SimError::Protocol { message, stderr_tail },
            Fault::Oom(message) => {
                SimError::Oom { exit_code: None, signal: None, message, stderr_tail }
            }
            Fault::Died => {
                let evidence = Evidence {
                    killed_by_us: self.killed,
                    aborted: self.aborted,
                    memory_limited: self.memory_limited,
                    oom_kills: self.oom_kills_at_start.zip(limits::oom_kills()),
                };
                classify_exit(exit.flatten(), &evidence, stderr_tail)
            }
        }
    }

    /// Kills the worker's process group (the worker and what it started) and reaps it.
    fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.killed = true;
        let mut pids = self.live.pids.lock().unwrap_or_else(|e| e.into_inner());
        limits::kill_group(&mut self.child);
        self.status = self.child.wait().ok();
        self.aborted |= pids.remove(&self.child.id()).unwrap_or(false);
    }

    /// Reaps the worker if it has exited (under the live set's lock, see [`LiveWorkers`]).
    fn try_reap(&mut self) -> Result<Option<ExitStatus>, ()> {
        let mut pids = self.live.pids.lock().unwrap_or_else(|e| e.into_inner());
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                self.aborted |= pids.remove(&self.child.id()).unwrap_or(false);
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Waits up to `grace` for the worker to exit, then kills it.
    fn wait_for_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        while self.status.is_none() && Instant::now() < deadline {
            match self.try_reap() {
                Ok(Some(_)) => {}
                Ok(None) => thread::sleep(Duration::from_millis(2)),
                Err(()) => break,
            }
        }
        self.kill();
        self.status
    }

    /// The last [`STDERR_TAIL_BYTES`] of stderr, after letting the reader drain a dead worker.
    fn stderr_tail(&self) -> String {
        if self.status.is_some() {
            let _ = self.stderr_closed.recv_timeout(STDERR_DRAIN);
        }
        self.stderr.lock().map(|t| t.text()).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    /// Kills the worker if it still runs, reaps it, and waits up to [`READERS_JOIN`] for its
    /// reader threads (they end when its pipes close), so that no thread or pipe of a worker
    /// outlives it.
    fn drop(&mut self) {
        self.stdin = None;
        if self.status.is_none() && !matches!(self.try_reap(), Ok(Some(_))) {
            self.kill();
        }
        // The stdout reader may wait to hand over a frame: let it go.
        let (_, closed) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.frames, closed));
        let deadline = Instant::now() + READERS_JOIN;
        for reader in self.readers.drain(..) {
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

/// What is known about how a worker died besides its exit status.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    /// simsweep killed it (after a timeout or a protocol violation).
    killed_by_us: bool,
    /// A hard stop killed it.
    aborted: bool,
    /// It ran under a `memory_limit_mb`.
    memory_limited: bool,
    /// The memory cgroup's OOM-kill count when it started and now (cgroup v2 `memory.events`).
    oom_kills: Option<(u64, u64)>,
}

/// A dead worker's failure kind. The rules (also in docs/worker-protocol.md, "Failures"):
///
/// - `oom` only on evidence of memory: the memory cgroup counted an OOM kill while the worker
///   ran and it died by SIGKILL or exited 137; or it ran under `memory_limit_mb` and its stderr
///   shows an allocation failure ([`ALLOCATION_FAILURE_MESSAGES`]). (A model that reports it
///   itself, `kind: "oom"`, is handled before this.)
/// - Otherwise `crash`, with the exit code or the signal: a SIGKILL from another source (an
///   administrator, a scheduler's kill, a hard stop) is a crash with signal 9.
fn classify_exit(status: Option<ExitStatus>, evidence: &Evidence, stderr_tail: String) -> SimError {
    let (exit_code, signal) = match status {
        Some(s) => (s.code(), limits::signal_of(&s)),
        None => (None, None),
    };
    if evidence.killed_by_us && !evidence.aborted {
        return SimError::Protocol {
            message: "closed its stdout without exiting; killed".to_string(),
            stderr_tail,
        };
    }
    let sigkilled = signal == Some(SIGKILL) || exit_code == Some(EXIT_CODE_KILLED);
    let oom_killed = evidence.oom_kills.is_some_and(|(before, after)| after > before);
    if sigkilled && oom_killed && !evidence.aborted {
        let how = match signal {
            Some(_) => "killed by SIGKILL while the memory cgroup counted an OOM kill",
            None => "exited with 137 while the memory cgroup counted an OOM kill",
        };
        return SimError::Oom { exit_code, signal, message: how.to_string(), stderr_tail };
    }
    if evidence.memory_limited {
        if let Some(seen) = ALLOCATION_FAILURE_MESSAGES.iter().find(|m| stderr_tail.contains(**m)) {
            return SimError::Oom {
                exit_code,
                signal,
                message: format!("an allocation failed under memory_limit_mb (stderr: `{seen}`)"),
                stderr_tail,
            };
        }
    }
    SimError::Crash { exit_code, signal, stderr_tail }
}

/// Platform-specific parts: the memory limit, process groups and signals.
#[cfg(unix)]
mod limits {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, ExitStatus};

    /// Puts the worker in a process group of its own, caps its address space, and (Linux) has
    /// the kernel kill it when simsweep dies, so no worker outlives the run.
    pub(super) fn apply(command: &mut Command, memory_limit_mb: Option<u64>) {
        command.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: only prctl runs between fork and exec, which is async-signal-safe and
        // touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(mb) = memory_limit_mb {
            let bytes = mb.saturating_mul(1024 * 1024) as libc::rlim_t;
            // SAFETY: only setrlimit runs between fork and exec, which is async-signal-safe
            // and touches no memory shared with the parent.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }

    /// SIGKILL to the process group `pid` leads. The caller makes sure the leader is not reaped.
    pub(super) fn kill_pid_group(pid: u32) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: plain syscall; see `LiveWorkers` for why the group is still the worker's.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }

    /// The OOM kills counted by the memory cgroup simsweep runs in (which its workers inherit):
    /// `oom_kill` of cgroup v2's `memory.events`. `None` where that is not available.
    pub(super) fn oom_kills() -> Option<u64> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        let events =
            std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim_end()))
                .ok()?;
        events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
    }

    /// SIGKILL to the worker's process group, and to the worker itself.
    pub(super) fn kill_group(child: &mut Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: plain syscall; the group is the worker's own (process_group(0)) and the
            // worker has not been reaped yet, so its pid cannot have been reused.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.kill();
    }

    pub(super) fn signal_of(status: &ExitStatus) -> Option<i32> {
        status.signal()
    }
}

#[cfg(not(unix))]
mod limits {
    use std::process::{Child, Command, ExitStatus};

    pub(super) fn apply(_command: &mut Command, _memory_limit_mb: Option<u64>) {}

    pub(super) fn kill_group(child: &mut Child) {
        let _ = child.kill();
    }

    pub(super) fn kill_pid_group(_pid: u32) {}

    pub(super) fn oom_kills() -> Option<u64> {
        None
    }

    pub(super) fn signal_of(_status: &ExitStatus) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn kind_of(raw_wait_status: i32, evidence: Evidence, stderr: &str) -> (&'static str, String) {
        use std::os::unix::process::ExitStatusExt;
        let e = classify_exit(
            Some(ExitStatus::from_raw(raw_wait_status)),
            &evidence,
            stderr.to_string(),
        );
        (e.kind(), e.to_string())
    }

    #[cfg(unix)]
    #[test]
    fn oom_only_on_evidence_of_memory() {
        let none = Evidence {
            killed_by_us: false,
            aborted: false,
            memory_limited: false,
            oom_kills: Some((3, 3)),
        };
        let sigkill = SIGKILL; // raw wait status of a death by signal 9
        let exit137 = 137 << 8;
        // A SIGKILL or exit 137 alone: a crash with its signal or code.
        assert_eq!(kind_of(sigkill, none, "").0, "crash");
        assert_eq!(kind_of(sigkill, none, "").1, "worker crashed: killed by signal 9 (SIGKILL)");
        assert_eq!(kind_of(exit137, none, "").0, "crash");
        assert_eq!(kind_of(exit137, Evidence { oom_kills: None, ..none }, "").0, "crash");
        // The cgroup counted an OOM kill meanwhile: oom.
        let counted = Evidence { oom_kills: Some((3, 4)), ..none };
        assert_eq!(kind_of(sigkill, counted, "").0, "oom");
        assert_eq!(kind_of(exit137, counted, "").0, "oom");
        // ... but not for another death, nor for a hard stop's SIGKILL.
        assert_eq!(kind_of(11, counted, "").0, "crash");
        assert_eq!(kind_of(sigkill, Evidence { aborted: true, ..counted }, "").0, "crash");
        // An allocation failure on stderr counts only under a memory limit.
        let limited = Evidence { memory_limited: true, ..none };
        let rust = "thread 'main' panicked\nmemory allocation of 4096 bytes failed\n";
        assert_eq!(kind_of(6, limited, rust).0, "oom");
        assert_eq!(kind_of(1 << 8, limited, "MemoryError\n").0, "oom");
        assert_eq!(kind_of(6, none, rust).0, "crash");
        assert_eq!(kind_of(1 << 8, limited, "ValueError: x\n").0, "crash");
        // simsweep's own kill after a closed stdout is a protocol violation.
        assert_eq!(kind_of(sigkill, Evidence { killed_by_us: true, ..none }, "").0, "protocol");
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.text(), "hello world");
        t.push(&vec![b'a'; STDERR_TAIL_BYTES - 3]);
        let text = t.text();
        assert_eq!(text.len(), STDERR_TAIL_BYTES);
        assert!(text.starts_with("rld"), "{}", &text[..10]);
        t.push(&vec![b'b'; STDERR_TAIL_BYTES * 2]);
        assert_eq!(t.text(), "b".repeat(STDERR_TAIL_BYTES));
    }
}
