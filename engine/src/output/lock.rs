//! The lock of an output directory: one process at a time writes into it.
//!
//! `<out>/.lock` holds the pid of the process that holds it, as text. The lock itself is an
//! advisory `flock(LOCK_EX | LOCK_NB)` on that file (through `fs4`), not the file's existence:
//! the kernel drops it when the holder's file descriptor closes, which includes the process
//! dying by SIGKILL or a power loss, so a crashed run never leaves a stale lock. The file is
//! left in place on release (deleting it would let a second process lock a fresh file while a
//! third still holds the unlinked one).
//!
//! `flock` is per open file description and works on local file systems; on NFS it is emulated
//! with byte-range locks by Linux, which also die with the process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs4::{FileExt, TryLockError};

use super::layout::OutputLayout;
use super::{check_output_path, create_dir_durable};
use crate::error::{EngineError, Remedy, Result};

/// How many times taking the lock is tried before it is reported as held. A `simsweep status`
/// probing the lock holds it (shared) for a few microseconds; retrying covers that.
const LOCK_ATTEMPTS: u32 = 5;
/// Wait between two attempts.
const LOCK_RETRY_WAIT: Duration = Duration::from_millis(20);

/// The exclusive lock of an output directory, held until dropped.
///
/// ```
/// use simsweep_engine::output::{OutputLock, OutputLayout};
/// let dir = tempfile::tempdir()?;
/// let layout = OutputLayout::new(dir.path().join("out"));
/// let lock = OutputLock::acquire(&layout)?;
/// assert_eq!(OutputLock::holder(&layout)?, Some(Some(std::process::id())));
/// assert!(OutputLock::acquire(&layout).is_err());
/// drop(lock);
/// assert_eq!(OutputLock::holder(&layout)?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OutputLock {
    /// Holds the `flock`; closing it releases the lock.
    file: File,
    path: PathBuf,
    created: bool,
}

impl OutputLock {
    /// Takes the lock of `layout`'s directory, creating the directory (and its parents) and
    /// `.lock` if missing. A `.lock` it creates gets this process's pid at once; an existing
    /// one keeps its content until [`record_pid`](Self::record_pid).
    ///
    /// # Errors
    /// - [`EngineError::OutputConflict`] naming the directory and the holder's pid when another
    ///   process (or another [`OutputLock`] in this one) holds it; naming the path when the
    ///   directory or one of its ancestors is a file (see [`check_output_path`]), with nothing
    ///   created.
    /// - [`EngineError::Io`] when the directory or `.lock` cannot be created, opened or written.
    pub fn acquire(layout: &OutputLayout) -> Result<OutputLock> {
        let root = layout.root();
        check_output_path(root)?;
        // Nothing is written yet: a directory that cannot be made or written is the user's
        // choice of place to fix (exit 2), not a failure of a run (exit 3).
        let unwritable = |e: EngineError| match e {
            EngineError::Io { path, source } => EngineError::OutputConflict {
                dir: root.to_path_buf(),
                message: format!("cannot be created or written ({}: {source})", path.display()),
                remedy: Remedy::OtherOutput,
            },
            other => other,
        };
        create_dir_durable(root).map_err(unwritable)?;
        let path = layout.lock_path();
        let (mut file, created) = open_lock_file(&path).map_err(unwritable)?;
        let mut attempt = 1;
        loop {
            match FileExt::try_lock(&file) {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(LOCK_RETRY_WAIT);
                }
                Err(TryLockError::WouldBlock) => {
                    let pid = read_pid(&mut file);
                    return Err(EngineError::OutputConflict {
                        dir: root.to_path_buf(),
                        message: format!(
                            "is in use by another simsweep process ({}; lock file {})",
                            pid.map_or("pid unknown".to_string(), |p| format!("pid {p}")),
                            path.display()
                        ),
                        remedy: Remedy::WaitOrOtherOutput,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(EngineError::io(&path, e)),
            }
        }
        let mut lock = OutputLock { file, path, created };
        if created {
            lock.record_pid()?;
        }
        Ok(lock)
    }

    /// Writes this process's pid into `.lock`, for a refused second process and for
    /// `simsweep status` to name. [`acquire`](Self::acquire) does it when it creates the file;
    /// otherwise call it once the directory is accepted, so that a run refused for the
    /// directory's contents changes nothing in it (until then `.lock` names an earlier holder).
    ///
    /// # Errors
    /// [`EngineError::Io`] when `.lock` cannot be written.
    pub fn record_pid(&mut self) -> Result<()> {
        let file = &mut self.file;
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            file.flush()
        };
        write(file).map_err(|e| EngineError::io(&self.path, e))
    }

    /// Whether a process holds the lock of `layout`'s directory, without keeping it: `None`
    /// when nobody does (or there is no `.lock`), `Some(pid)` when one does, with its pid if
    /// `.lock` names one.
    ///
    /// Probes with a shared lock taken and released at once, so it writes nothing.
    ///
    /// # Errors
    /// [`EngineError::Io`] when `.lock` exists but cannot be opened or probed.
    pub fn holder(layout: &OutputLayout) -> Result<Option<Option<u32>>> {
        let path = layout.lock_path();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        match FileExt::try_lock_shared(&file) {
            Ok(()) => {
                FileExt::unlock(&file).map_err(|e| EngineError::io(&path, e))?;
                Ok(None)
            }
            Err(TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file))),
            Err(TryLockError::Error(e)) => Err(EngineError::io(&path, e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when [`acquire`](Self::acquire) created `.lock` (the directory held no lock file).
    pub fn created_file(&self) -> bool {
        self.created
    }
}

/// Opens `.lock` for writing without truncating it (a holder's pid must stay readable);
/// true when it was created.
fn open_lock_file(path: &Path) -> Result<(File, bool)> {
    let open = |create_new: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if create_new {
            o.create_new(true);
        }
        o.open(path)
    };
    match open(true) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            open(false).map(|f| (f, false)).map_err(|e| EngineError::io(path, e))
        }
        Err(e) => Err(EngineError::io(path, e)),
    }
}

/// The pid written in the lock file, if it holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_refused_naming_pid_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OutputLayout::new(tmp.path().join("out"));
        assert_eq!(OutputLock::holder(&layout).unwrap(), None);
        let lock = OutputLock::acquire(&layout).unwrap();
        assert!(lock.created_file());
        let err = OutputLock::acquire(&layout).unwrap_err();
        assert!(matches!(err, EngineError::OutputConflict { .. }));
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("out"), "{text}");
        drop(lock);
        assert_eq!(OutputLock::holder(&layout).unwrap(), None);
        let mut again = OutputLock::acquire(&layout).unwrap();
        assert!(!again.created_file());
        again.record_pid().unwrap();
        let text = OutputLock::acquire(&layout).unwrap_err().to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    }

    #[test]
    fn file_in_the_way_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out");
        std::fs::write(&path, b"x").unwrap();
        let err = OutputLock::acquire(&OutputLayout::new(&path)).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
