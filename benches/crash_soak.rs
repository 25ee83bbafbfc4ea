//! Crash soak: SIGKILLs `simsweep run` on the flu example at seeded pseudo-random moments,
//! resumes after each kill (sometimes with another `--batch-size`), and compares each finished
//! output with an uninterrupted run, dataset by dataset, row by row.
//!
//! `cargo bench --bench crash_soak -- [KILLS] [SEED]` (defaults 50 and 1978), or
//! `benches/crash_soak.sh`. When a run finishes before all kills are spent, its output is
//! compared and a new round starts in a fresh directory. Prints kills survived, resumes and
//! rows compared; exits non-zero on any difference.

#[path = "../tests/crash_common/mod.rs"]
mod crash_common;

use std::path::Path;
use std::time::Instant;

use crash_common::*;

const JOB: &str = "examples/flu-boarding-school/job.toml";
/// Batch sizes used by the resumes (the reference uses the job's 200).
const BATCH_SIZES: [&str; 4] = ["200", "200", "137", "250"];

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let kills: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1978);
    let bin = Path::new(env!("CARGO_BIN_EXE_simsweep"));
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join(JOB);
    let tmp = tempfile::tempdir().expect("temporary directory");

    let started = Instant::now();
    let reference_dir = tmp.path().join("reference");
    match kill_after(
        spawn_run(bin, &job, &reference_dir, &[]),
        std::time::Duration::from_secs(3600),
    ) {
        Attempt::Exited(status, _) if status.success() => {}
        Attempt::Exited(status, stderr) => panic!("reference run failed: {status}\n{stderr}"),
        Attempt::Killed => unreachable!(),
    }
    let reference_secs = started.elapsed().as_secs_f64();
    let reference = read_output(&reference_dir);
    println!("reference run: {reference_secs:.1} s");

    let mut rng = SplitMix(seed);
    let (mut survived, mut resumes, mut rounds, mut rows_compared) = (0u32, 0u32, 0u32, 0u64);
    while survived < kills {
        rounds += 1;
        let out = tmp.path().join(format!("round-{rounds}"));
        loop {
            let batch_size = rng.pick(&BATCH_SIZES);
            let extra = vec!["--batch-size".to_string(), batch_size.to_string()];
            let delay = if survived < kills {
                rng.millis(200, 1500)
            } else {
                std::time::Duration::from_secs(3600)
            };
            match kill_after(spawn_run(bin, &job, &out, &extra), delay) {
                Attempt::Killed => {
                    survived += 1;
                    resumes += 1;
                }
                Attempt::Exited(status, _) if status.success() => break,
                Attempt::Exited(status, stderr) => {
                    panic!(
                        "round {rounds}: resume after {survived} kills failed: {status}\n{stderr}"
                    )
                }
            }
        }
        let got = read_output(&out);
        rows_compared += assert_same_output(&reference, &got, &format!("round {rounds}"));
        println!("round {rounds}: identical to the uninterrupted run ({survived} kills so far)");
        std::fs::remove_dir_all(&out).expect("remove round output");
    }
    println!(
        "crash soak: {survived} SIGKILLs survived, {resumes} resumes, {rounds} round(s), \
         {rows_compared} rows compared, all identical; seed {seed}; {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
