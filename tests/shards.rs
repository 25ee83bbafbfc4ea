//! Sharded runs (`--shards K --shard I`): each shard writes `OUT/shard=I-of-K/`, the shards'
//! rows together are exactly the unsharded run's, a killed shard resumes alone, the index comes
//! from a scheduler's variable when `--shard` is not given, and `merge` checks every shard and
//! refuses naming what is missing. See docs/shards.md.

mod common;
mod crash_common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use crash_common::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simsweep"))
}

/// `simsweep ARGS` in `dir` with extra environment variables; exit code, stdout, stderr.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(dir).env_remove("SIMSWEEP_BATCH_SIZE").env_remove("RUST_LOG");
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
        "HQ_TASK_ID",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn summary(dir: &Path) -> Vec<serde_json::Value> {
    let mut s: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(dir.join("summary.json")).unwrap()).unwrap();
    s.sort_by_key(|t| t["target"].as_str().unwrap().to_string());
    s
}

#[test]
fn shards_give_the_unsharded_rows_and_merge_gives_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let (code, _, err) =
        run_in(dir.path(), &["run", "job.toml", "--out", "whole", "--batch-size", "3"], &[]);
    assert_eq!(code, 0, "{err}");
    let reference = read_output(&dir.path().join("whole"));

    // 23 sets in batches of 3 = 8 batches over 3 shards: 2, 3, 3 batches. Shard 1 takes its
    // index from HyperQueue's variable, shard 2 from a Slurm array starting at 1.
    let cases: [(&[&str], &[(&str, &str)], &str); 3] = [
        (&["--shard", "0"], &[], "from --shard 0"),
        (&[], &[("HQ_TASK_ID", "1")], "from HQ_TASK_ID=1"),
        (
            &[],
            &[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1")],
            "from SLURM_ARRAY_TASK_ID=3 - SLURM_ARRAY_TASK_MIN=1",
        ),
    ];
    for (flags, env, source) in cases {
        let mut args =
            vec!["run", "job.toml", "--out", "sharded", "--batch-size", "3", "--shards", "3"];
        args.extend_from_slice(flags);
        let (code, _, err) = run_in(dir.path(), &args, env);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(source), "says where the index came from: {err}");
    }
    let out = dir.path().join("sharded");
    let names: Vec<String> =
        tree(&out).into_iter().filter(|f| f.ends_with("manifest.json")).collect();
    assert_eq!(
        names,
        ["shard=0-of-3/manifest.json", "shard=1-of-3/manifest.json", "shard=2-of-3/manifest.json"]
    );
    // Files keep the unsharded run's batch names: shard 1 holds batches 2, 3, 4.
    assert_eq!(
        batch_files(&out.join("shard=1-of-3/targets/prevalence")),
        ["batch-00002.parquet", "batch-00003.parquet", "batch-00004.parquet"]
    );
    let rows = assert_same_output(&reference, &read_sharded(&out, 3), "3 shards");
    assert!(rows > 23 * 3 * 15, "{rows} rows compared");

    let (code, stdout, err) = run_in(dir.path(), &["merge", "sharded"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("merged 3 shards of `small`: 23 parameter sets, 69 simulations (0 failed)"),
        "{stdout}"
    );
    assert_eq!(summary(&out), summary(&dir.path().join("whole")));
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let slices: Vec<(u64, u64)> = index["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["first_point"].as_u64().unwrap(), s["end_point"].as_u64().unwrap()))
        .collect();
    assert_eq!(slices, [(0, 6), (6, 15), (15, 23)]);

    let (code, stdout, _) = run_in(dir.path(), &["status", "sharded"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout
            .contains("shard   1 of 3   3 of 3 batches, 27 of 27 simulations, 0 failed, finished"),
        "{stdout}"
    );
    assert!(stdout.contains("all shards finished"), "{stdout}");
}

#[test]
fn merge_refuses_missing_and_unfinished_shards_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let (code, _, err) = run_in(
        dir.path(),
        &["run", "job.toml", "--out", "s", "--batch-size", "3", "--shards", "4", "--shard", "2"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let before = tree(&dir.path().join("s"));
    let (code, _, err) = run_in(dir.path(), &["merge", "s"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing shard(s) 0, 1, 3 of 4"), "{err}");
    assert_eq!(tree(&dir.path().join("s")), before, "nothing written");
    let (code, stdout, _) = run_in(dir.path(), &["status", "s"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("not ready to merge") && stdout.contains("missing shard(s) 0, 1, 3"),
        "{stdout}"
    );

    // Bad shard arguments: exit 2, a message naming the flag, nothing written.
    for (args, needle) in [
        (&["--shards", "4", "--shard", "4"][..], "shard 4 does not exist among 4 shards"),
        (&["--shards", "4"][..], "--shard I (0 to 3)"),
        (&["--shard", "1"][..], "--shards K"),
    ] {
        let mut all = vec!["run", "job.toml", "--out", "bad"];
        all.extend_from_slice(args);
        let (code, _, err) = run_in(dir.path(), &all, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!dir.path().join("bad").exists());
    }
    let (code, _, err) = run_in(dir.path(), &["merge", "job.toml"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_killed_shard_resumes_alone_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let job = SmallJob { count: 20000, ..SmallJob::default() }.write(dir.path());
    let whole = dir.path().join("whole");
    let (code, _, err) =
        run_in(dir.path(), &["run", "job.toml", "--out", "whole", "--batch-size", "100"], &[]);
    assert_eq!(code, 0, "{err}");
    let reference = read_output(&whole);

    let out = dir.path().join("sharded");
    let args = |i: &str| -> Vec<String> {
        ["--batch-size", "100", "--shards", "2", "--shard", i]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    // Shard 0 is killed once it has committed a batch, then resumed with another batch size
    // (its slice was fixed at its first run).
    let child = spawn_run(bin(), &job, &out, &args("0"));
    let shard0 = out.join("shard=0-of-2");
    let committed = || {
        simsweep::engine::output::Manifest::load(&shard0.join("manifest.json"))
            .ok()
            .flatten()
            .is_some_and(|m| !m.batches.is_empty())
    };
    let killed = kill_when(child, committed, Duration::from_secs(60));
    let mut resume = args("0");
    resume[1] = "70".to_string();
    for a in [resume, args("1")] {
        let status = spawn_run(bin(), &job, &out, &a).wait().unwrap();
        assert!(status.success());
    }
    let rows = assert_same_output(&reference, &read_sharded(&out, 2), "shard 0 killed and resumed");
    assert!(rows > 20000 * 3 * 15);
    assert!(killed, "shard 0 finished before its first commit was seen; make the job longer");
}

/// Kills `child` (SIGKILL) as soon as `ready()` holds; false when it ended first.
fn kill_when(mut child: std::process::Child, ready: impl Fn() -> bool, bound: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(start.elapsed() < bound, "no batch committed within {bound:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_external_models_program_files_are_fingerprinted_for_the_merge() {
    // The spec hash covers the command line; the manifest also records the files it runs, so
    // that shards run with different model code are told apart by `merge`.
    // A copy laid out as in the repository (model.py finds ../../python/simsweep_worker.py).
    let root = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = |from: &Path, to: &Path| {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    };
    copy(&repo.join("python"), &root.path().join("python"));
    let dir = root.path().join("examples/python-sir");
    copy(&repo.join("examples/python-sir"), &dir);
    let parts = |dir: &Path| {
        let job = simsweep::load_job(&dir.join("job.toml")).unwrap();
        simsweep::engine::output::SpecIdentity::of_job(&job).parts
    };
    let before = parts(&dir);
    let files = before.get("model files").expect("model.py is fingerprinted").clone();
    assert!(files.starts_with("model.py "), "{files}");
    let mut code = fs::read_to_string(dir.join("model.py")).unwrap();
    code.push_str("\n# an edit\n");
    fs::write(dir.join("model.py"), code).unwrap();
    let after = parts(&dir);
    assert_ne!(after.get("model files"), Some(&files), "an edited model.py changes the record");
    assert_eq!(
        simsweep::engine::output::changed_parts(&before, &after),
        vec!["model files".to_string()]
    );
}
