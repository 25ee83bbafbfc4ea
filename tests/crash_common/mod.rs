//! Shared by the crash tests (`tests/crash.rs`) and the crash soak (`benches/crash_soak.rs`):
//! spawning the binary, killing it at seeded pseudo-random moments, and reading a whole output
//! directory back in sweep order to compare it with an uninterrupted run.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A small deterministic PRNG (SplitMix64) for the kill moments: the same seed, the same
/// delays, on every machine.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo).max(1))
    }
    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// `simsweep run JOB --out OUT [extra...]`, quiet, not waited for.
pub fn spawn_run(bin: &Path, job: &Path, out: &Path, extra: &[String]) -> Child {
    Command::new(bin)
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("SIMSWEEP_BATCH_SIZE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// How one attempt ended.
pub enum Attempt {
    /// Killed with SIGKILL while still running.
    Killed,
    /// Ended by itself before the kill moment.
    Exited(ExitStatus, String),
}

/// Lets `child` run for `delay`, then SIGKILLs it if it is still running.
pub fn kill_after(mut child: Child, delay: Duration) -> Attempt {
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            return Attempt::Exited(status, stderr);
        }
        let now = Instant::now();
        if now >= deadline {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            return Attempt::Killed;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
    }
}

/// Every dataset of an output directory (`model_outputs/*`, `targets/*`, `failures`), each as
/// one record batch: the files of the batches the manifest lists, in sweep order (by their
/// first parameter set), concatenated. The same for any batch size and any number of resumes.
/// Also checks that no file is there that the manifest does not list, and no temporary file.
pub fn read_output(out: &Path) -> Vec<(String, RecordBatch)> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    assert_eq!(manifest["finished"], true, "{}: run not finished", out.display());
    let mut batches: Vec<&serde_json::Value> =
        manifest["batches"].as_array().expect("batches").iter().collect();
    batches.sort_by_key(|b| b["first_point"].as_u64().unwrap());
    // A shard's output starts at its slice's first parameter set.
    let mut expected_end = manifest["shard"]["first_point"].as_u64().unwrap_or(0);
    for b in &batches {
        assert_eq!(
            b["first_point"].as_u64().unwrap(),
            expected_end,
            "gap or overlap in the manifest"
        );
        expected_end = b["end_point"].as_u64().unwrap();
    }
    let mut datasets: Vec<String> =
        batches[0]["rows"].as_object().unwrap().keys().cloned().collect();
    datasets.sort();
    let mut out_tables = Vec::new();
    for d in &datasets {
        let dir = out.join(d);
        let mut listed = Vec::new();
        let mut parts = Vec::new();
        let mut schema = None;
        for b in &batches {
            let file = dir.join(format!("batch-{:05}.parquet", b["index"].as_u64().unwrap()));
            listed.push(file.clone());
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                fs::File::open(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            )
            .unwrap()
            .build()
            .unwrap();
            schema.get_or_insert_with(|| arrow::record_batch::RecordBatchReader::schema(&reader));
            for rb in reader {
                parts.push(rb.unwrap());
            }
        }
        let mut present: Vec<PathBuf> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        present.sort();
        listed.sort();
        assert_eq!(present, listed, "{d}: files not listed in the manifest, or temporary files");
        out_tables.push((d.clone(), concat_batches(&schema.unwrap(), &parts).unwrap()));
    }
    out_tables
}

/// Asserts that two outputs read by [`read_output`] are identical; returns the rows compared.
pub fn assert_same_output(
    reference: &[(String, RecordBatch)],
    got: &[(String, RecordBatch)],
    what: &str,
) -> u64 {
    let names = |t: &[(String, RecordBatch)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(reference), names(got), "{what}: other datasets");
    let mut rows = 0;
    for ((name, a), (_, b)) in reference.iter().zip(got) {
        assert_eq!(a.num_rows(), b.num_rows(), "{what}: {name}: row count");
        assert!(a == b, "{what}: {name}: rows differ");
        rows += a.num_rows() as u64;
    }
    rows
}

/// The datasets of the `count` shards under `out` (`shard=I-of-K/`), each read by
/// [`read_output`] and concatenated per dataset in shard order: what an unsharded run of the
/// same spec holds.
pub fn read_sharded(out: &Path, count: u32) -> Vec<(String, RecordBatch)> {
    let parts: Vec<Vec<(String, RecordBatch)>> =
        (0..count).map(|i| read_output(&out.join(format!("shard={i}-of-{count}")))).collect();
    (0..parts[0].len())
        .map(|d| {
            let name = &parts[0][d].0;
            assert!(parts.iter().all(|p| &p[d].0 == name), "same datasets in every shard");
            let tables: Vec<RecordBatch> = parts.iter().map(|p| p[d].1.clone()).collect();
            (name.clone(), concat_batches(&tables[0].schema(), &tables).unwrap())
        })
        .collect()
}
