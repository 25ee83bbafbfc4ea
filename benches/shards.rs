//! Shards on one machine: the flu example (200,000 `sir_bed` simulations) as K = 1, 2 and 4
//! shards, each a separate `simsweep run --shards K --shard I --workers 1` process, all started
//! at once (what a scheduler's array does on one node); wall time until the last ends,
//! simulations per second, the speed-up over K = 1, and the merge's time. Then the merge of a
//! 100,000-set sweep (no-op model, 4 shards). Repetitions (`SIMSWEEP_SHARDS_REPEAT`, default 3)
//! are the outer loop; medians are printed.
//!
//! ```sh
//! cargo bench --bench shards
//! ```

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{median, write_noop_job};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simsweep"))
}

fn spawn(job: &Path, out: &Path, shards: u32, shard: u32) -> Child {
    Command::new(bin())
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .args(["--shards", &shards.to_string(), "--shard", &shard.to_string(), "--workers", "1"])
        .env_remove("RUST_LOG")
        .env_remove("SIMSWEEP_BATCH_SIZE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

/// Runs the K shards of `job` at once into a fresh `out`; returns (wall seconds, merge seconds).
fn sharded(job: &Path, out: &Path, k: u32) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(out);
    let start = Instant::now();
    let children: Vec<Child> = (0..k).map(|i| spawn(job, out, k, i)).collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a shard failed");
    }
    let wall = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let merged = Command::new(bin()).arg("merge").arg(out).stdout(Stdio::null()).status().unwrap();
    assert!(merged.success(), "merge failed");
    (wall, start.elapsed().as_secs_f64())
}

fn main() {
    let repeat: usize =
        std::env::var("SIMSWEEP_SHARDS_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let flu = repo.join("examples/flu-boarding-school/job.toml");
    let tmp = tempfile::tempdir().expect("temporary directory");
    let noop = write_noop_job(tmp.path(), 100_000, 10, 100, 200);
    let ks = [1u32, 2, 4];
    let mut walls = vec![Vec::new(); ks.len()];
    let mut merges = vec![Vec::new(); ks.len()];
    let mut big_merge = Vec::new();
    for _ in 0..repeat {
        for (j, &k) in ks.iter().enumerate() {
            let (wall, merge) = sharded(&flu, &tmp.path().join(format!("flu-{k}")), k);
            walls[j].push(wall);
            merges[j].push(merge);
        }
        let out = tmp.path().join("noop-100k");
        if !out.join("shard=3-of-4").exists() {
            sharded(&noop, &out, 4);
        }
        let start = Instant::now();
        let merged = Command::new(bin()).arg("merge").arg(&out).stdout(Stdio::null()).status();
        assert!(merged.unwrap().success());
        big_merge.push(start.elapsed().as_secs_f64());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("flu example, 200,000 simulations, K shard processes of 1 worker each ({cores} cores), medians of {repeat}");
    println!("| shards K | wall s | simulations/s | speed-up vs K=1 | merge s |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let base = median(&mut walls[0].clone());
    for (j, &k) in ks.iter().enumerate() {
        let wall = median(&mut walls[j]);
        println!(
            "| {k} | {wall:.2} | {:.0} | {:.2} | {:.3} |",
            200_000.0 / wall,
            base / wall,
            median(&mut merges[j])
        );
    }
    println!(
        "merge of a 100,000-set output (no-op model, 4 shards, 500 batches): {:.3} s",
        median(&mut big_merge)
    );
}
