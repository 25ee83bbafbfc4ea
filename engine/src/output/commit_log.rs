//! The commit log: `<out>/commits.log`, one record appended per committed batch.
//!
//! Committing a batch costs one append and one `fdatasync` of this file, whatever the number of
//! batches already committed (the manifest used to be rewritten whole after every batch: at
//! 3,000,000 parameter sets that wrote 16× more manifest bytes than Parquet). `manifest.json`
//! holds the job, the plan and the batches *compacted* into it; the log holds the batches
//! committed since. A run compacts at its start and when it finishes (see
//! [`crate::output::Manifest::write_atomic`]); in between the log only grows.
//!
//! # Record format
//!
//! One line per record, UTF-8:
//!
//! ```text
//! <checksum: 16 lowercase hex digits> <space> <record: one line of compact JSON> <\n>
//! ```
//!
//! The checksum is BLAKE2b with an 8-byte digest of the JSON's bytes. A record counts only when
//! its line is complete (ends in `\n`) and its checksum matches. A crash while appending can
//! leave the *last* line incomplete or garbled: that torn record is not a committed batch and is
//! ignored (its files, if any were renamed, are deleted on resume like any batch the log does
//! not list). A bad line followed by a good one cannot come from a crash: the log is reported
//! damaged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EngineError, Result};

/// Bytes of a record's checksum (BLAKE2b digest size).
const CHECKSUM_BYTES: usize = 8;

/// Hex digits of a record's checksum.
const CHECKSUM_HEX: usize = 2 * CHECKSUM_BYTES;

/// What [`read_records`] found in a log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogContents<T> {
    /// The complete, valid records, in the order they were appended.
    pub records: Vec<T>,
    /// Bytes of the log up to the end of the last valid record.
    pub valid_bytes: u64,
    /// True when bytes after the last valid record were ignored (a torn last record).
    pub torn_tail: bool,
}

/// The checksum of `json` as 16 lowercase hex digits.
fn checksum_hex(json: &[u8]) -> String {
    let mut hasher = Blake2bVar::new(CHECKSUM_BYTES).expect("8 is a valid BLAKE2b output size");
    hasher.update(json);
    let mut digest = [0u8; CHECKSUM_BYTES];
    hasher.finalize_variable(&mut digest).expect("the buffer has the digest's size");
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `record` framed as one log line (checksum, space, compact JSON, newline).
///
/// # Errors
/// [`EngineError::Manifest`] (naming `path`) when `record` cannot be encoded as JSON.
pub fn encode_record<T: Serialize>(path: &Path, record: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(record)
        .map_err(|source| EngineError::Manifest { path: path.to_path_buf(), source })?;
    let mut line = Vec::with_capacity(CHECKSUM_HEX + 2 + json.len());
    line.extend_from_slice(checksum_hex(&json).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// Appends `record` to the log at `path` (created if missing) and makes it durable
/// (`fdatasync`; on creation the parent folder is fsynced too, so the file's name is durable).
/// The record is committed when this returns.
///
/// A short write (disk full) leaves a torn last record, which readers ignore; the next append
/// after a failure must not follow it, so a run stops committing after a failed append.
///
/// # Errors
/// [`EngineError::Io`] naming `path` when it cannot be opened, written or synced;
/// [`EngineError::Manifest`] when `record` cannot be encoded.
pub fn append_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let line = encode_record(path, record)?;
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| EngineError::io(path, e))?;
    file.write_all(&line).map_err(|e| EngineError::io(path, e))?;
    file.sync_data().map_err(|e| EngineError::io(path, e))?;
    if created {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::fsync_dir(dir)?;
        }
    }
    Ok(())
}

/// Appends the first half of `record`'s line and no newline: what a crash in the middle of
/// [`append_record`] leaves. Test support only.
#[doc(hidden)]
pub fn append_torn_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let line = encode_record(path, record)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| EngineError::io(path, e))?;
    file.write_all(&line[..line.len() / 2]).map_err(|e| EngineError::io(path, e))?;
    file.sync_data().map_err(|e| EngineError::io(path, e))
}

/// Reads every valid record of the log at `path`; an absent log has none.
///
/// # Errors
/// [`EngineError::Io`] when it cannot be read; [`EngineError::Damaged`] naming the line when a
/// record that is not the last one is garbled (bad checksum, not JSON of a record, not UTF-8).
pub fn read_records<T: DeserializeOwned>(path: &Path) -> Result<LogContents<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogContents { records: Vec::new(), valid_bytes: 0, torn_tail: false })
        }
        Err(e) => return Err(EngineError::io(path, e)),
    };
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            // No newline: the last record was being appended when the writer stopped.
            return Ok(torn(records, offset));
        };
        match decode_line(&rest[..end]) {
            Ok(record) => {
                records.push(record);
                offset += end + 1;
            }
            // Only the last line may be torn; anything after it means the file was altered.
            Err(_) if offset + end + 1 == bytes.len() => return Ok(torn(records, offset)),
            Err(why) => {
                return Err(EngineError::Damaged {
                    path: path.to_path_buf(),
                    what: format!("the commit log (line {line_no})"),
                    source: why.into(),
                })
            }
        }
    }
    Ok(LogContents { records, valid_bytes: offset as u64, torn_tail: false })
}

fn torn<T>(records: Vec<T>, offset: usize) -> LogContents<T> {
    LogContents { records, valid_bytes: offset as u64, torn_tail: true }
}

/// One line without its newline → its record, or why it is not one.
fn decode_line<T: DeserializeOwned>(line: &[u8]) -> std::result::Result<T, String> {
    if line.len() < CHECKSUM_HEX + 1 || line[CHECKSUM_HEX] != b' ' {
        return Err("not a `<checksum> <json>` record".to_string());
    }
    let (sum, json) = (&line[..CHECKSUM_HEX], &line[CHECKSUM_HEX + 1..]);
    if sum != checksum_hex(json).as_bytes() {
        return Err("checksum mismatch".to_string());
    }
    serde_json::from_slice(json).map_err(|e| format!("not a commit record: {e}"))
}

/// Empties the log at `path` durably (its records are compacted into the manifest); an absent
/// log is left absent.
///
/// # Errors
/// [`EngineError::Io`] naming `path` when it cannot be truncated or synced.
pub fn truncate(path: &Path) -> Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    file.set_len(0).map_err(|e| EngineError::io(path, e))?;
    File::sync_all(&file).map_err(|e| EngineError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        index: u32,
        note: String,
    }

    fn rec(index: u32) -> Rec {
        Rec { index, note: format!("batch {index} ünïcode \n newline inside") }
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commits.log");
        let none: LogContents<Rec> = read_records(&path).unwrap();
        assert_eq!(none, LogContents { records: vec![], valid_bytes: 0, torn_tail: false });
        for i in 0..5 {
            append_record(&path, &rec(i)).unwrap();
        }
        let log: LogContents<Rec> = read_records(&path).unwrap();
        assert_eq!(log.records, (0..5).map(rec).collect::<Vec<_>>());
        assert_eq!(log.valid_bytes, std::fs::metadata(&path).unwrap().len());
        assert!(!log.torn_tail);
        // One line per record, JSON escapes the newline inside a string.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let first = text.lines().next().unwrap();
        assert_eq!(first.find(' '), Some(16), "{first}");
        assert_eq!(&first[..16], checksum_hex(first[17..].as_bytes()));
    }

    #[test]
    fn torn_last_record_is_ignored_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commits.log");
        append_record(&path, &rec(0)).unwrap();
        append_record(&path, &rec(1)).unwrap();
        let good = std::fs::metadata(&path).unwrap().len();
        append_torn_record(&path, &rec(2)).unwrap();
        let log: LogContents<Rec> = read_records(&path).unwrap();
        assert_eq!(log.records, vec![rec(0), rec(1)]);
        assert_eq!(log.valid_bytes, good);
        assert!(log.torn_tail);

        // A complete last line with a wrong checksum (a garbled final write) is torn too.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(good as usize);
        let mut last = encode_record(&path, &rec(2)).unwrap();
        last[0] = if last[0] == b'0' { b'1' } else { b'0' };
        bytes.extend_from_slice(&last);
        std::fs::write(&path, &bytes).unwrap();
        let log: LogContents<Rec> = read_records(&path).unwrap();
        assert_eq!((log.records.len(), log.valid_bytes, log.torn_tail), (2, good, true));
    }

    #[test]
    fn a_bad_record_before_a_good_one_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commits.log");
        append_record(&path, &rec(0)).unwrap();
        append_record(&path, &rec(1)).unwrap();
        append_record(&path, &rec(2)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second + 20] ^= 0x01; // flip a bit inside record 1's JSON
        std::fs::write(&path, &bytes).unwrap();
        let err = read_records::<Rec>(&path).unwrap_err();
        assert!(err.is_damaged_output(), "{err}");
        let text = err.to_string();
        assert!(text.contains("commit log (line 2)") && text.contains("checksum"), "{text}");
    }

    #[test]
    fn truncate_empties_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commits.log");
        truncate(&path).unwrap();
        assert!(!path.exists());
        append_record(&path, &rec(0)).unwrap();
        truncate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let log: LogContents<Rec> = read_records(&path).unwrap();
        assert!(log.records.is_empty() && !log.torn_tail);
    }
}
