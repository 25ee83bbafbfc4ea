//! One worker process: spawning (with its limits), the reader threads, request/reply with a
//! deadline, and turning how it ended into a [`SimError`].
//!
//! stdout is read by a thread of its own that parses frames and hands them over a channel of
//! capacity 1, so the caller can wait with a deadline (`recv_timeout`) and kill the process
//! when it passes; killing closes stdout, which ends the thread. stderr is read by another
//! thread into a ring buffer of [`STDERR_TAIL_BYTES`].

use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
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
/// Exit status of a process killed by SIGKILL as reported by shells and container runtimes.
const EXIT_CODE_KILLED: i32 = 137;
const SIGKILL: i32 = 9;

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
    killed: bool,
}

impl WorkerProcess {
    /// Starts the worker with its environment, working directory and memory limit.
    ///
    /// # Errors
    /// The error of `spawn` (command not found, not executable, bad working directory, ...).
    pub(crate) fn spawn(settings: &ExternalSettings) -> io::Result<Self> {
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
        let mut child = command.spawn()?;
        let missing = || io::Error::other("child without a pipe");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let mut stderr = child.stderr.take().ok_or_else(missing)?;

        let (frames_tx, frames) = mpsc::sync_channel(1);
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
            Fault::Died => classify_exit(exit.flatten(), self.killed, stderr_tail),
        }
    }

    /// Kills the worker's process group (the worker and what it started) and reaps it.
    fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.killed = true;
        limits::kill_group(&mut self.child);
        self.status = self.child.wait().ok();
    }

    /// Waits up to `grace` for the worker to exit, then kills it.
    fn wait_for_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        while self.status.is_none() && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(2)),
                Err(_) => break,
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
    fn drop(&mut self) {
        self.stdin = None;
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            } else {
                self.kill();
            }
        }
    }
}

/// A dead worker's failure: `oom` for a SIGKILL simsweep did not send or exit code 137,
/// else `crash`.
fn classify_exit(status: Option<ExitStatus>, killed_by_us: bool, stderr_tail: String) -> SimError {
    let (exit_code, signal) = match status {
        Some(s) => (s.code(), limits::signal_of(&s)),
        None => (None, None),
    };
    if killed_by_us {
        return SimError::Protocol {
            message: "closed its stdout without exiting; killed".to_string(),
            stderr_tail,
        };
    }
    if signal == Some(SIGKILL) || exit_code == Some(EXIT_CODE_KILLED) {
        let how = match signal {
            Some(_) => "killed by SIGKILL (likely the kernel's OOM killer)",
            None => "exited with 137 (killed by SIGKILL, likely for memory)",
        };
        return SimError::Oom { exit_code, signal, message: how.to_string(), stderr_tail };
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

    pub(super) fn signal_of(_status: &ExitStatus) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
