//! The cluster examples under `examples/cluster/`, run for real on this machine:
//!
//! - Slurm: the example's array script under a real one-node Slurm (started by
//!   `scripts/slurm-local.sh`, which `.ci/run` calls), one shard requeued mid-run, the merge
//!   script, rows compared with an unsharded run;
//! - HyperQueue: the example's Python submission on a local HyperQueue cluster (PyPI
//!   `hyperqueue`), merge, rows compared;
//! - Kubernetes: no cluster here, so the manifests are checked offline (Indexed Job, per-index
//!   backoff, FailJob on exit 2) and their command lines are run as the pods would run them.
//!
//! A scheduler that is not installed or not running fails these tests with what to run; they
//! never pass by skipping.

mod common;
mod crash_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use common::*;
use crash_common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_simsweep"))
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A job of `count` sets × 3 replicates in `dir`, and its uninterrupted output.
fn job_and_reference(dir: &Path, count: u32) -> (PathBuf, Vec<(String, RecordBatch)>) {
    let job = SmallJob { count, ..SmallJob::default() }.write(dir);
    let whole = dir.join("whole");
    let out = Command::new(bin())
        .args(["run".as_ref(), job.as_os_str(), "--out".as_ref(), whole.as_os_str()])
        .args(["--batch-size", "200"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    (job, read_output(&whole))
}

fn shard_has_a_commit(out: &Path, shard: &str) -> bool {
    simsweep::engine::output::Manifest::load(&out.join(shard).join("manifest.json"))
        .ok()
        .flatten()
        .is_some_and(|m| !m.batches.is_empty())
}

/// Waits until `done()` holds, polling, at most `bound`.
fn wait_until(what: &str, bound: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("RUST_LOG").env_remove("SIMSWEEP_BATCH_SIZE");
    cmd
}

fn slurm_ready() {
    let sinfo = command("sinfo").args(["-h", "-o", "%T"]).output();
    let state = sinfo.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert!(
        matches!(state.as_deref(), Ok(s) if s.contains("idle") || s.contains("mix") || s.contains("alloc")),
        "no running Slurm cluster here (sinfo: {state:?}); start one with \
         `scripts/slurm-local.sh install && scripts/slurm-local.sh start` (as root; .ci/run does)"
    );
}

#[test]
fn slurm_array_with_a_requeued_shard_gives_the_unsharded_rows() {
    slurm_ready();
    let dir = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(dir.path(), 40_000);
    let out = dir.path().join("sharded");
    let env = |cmd: &mut Command| {
        cmd.current_dir(dir.path()).env("SIMSWEEP", bin()).env("JOB", &job).env("OUT", &out);
    };
    let mut sbatch = command("sbatch");
    env(&mut sbatch);
    let submitted = sbatch
        .args(["--parsable", "--export=ALL"])
        .arg(repo().join("examples/cluster/slurm/sweep.sbatch"))
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", text(&submitted));
    let array = String::from_utf8_lossy(&submitted.stdout).trim().to_string();

    // Requeue shard 1 once it has committed a batch: Slurm stops it (SIGTERM) and runs it again;
    // it resumes after its committed batches.
    wait_until("shard 1 commits a batch", Duration::from_secs(120), || {
        shard_has_a_commit(&out, "shard=1-of-4")
    });
    let requeue = command("scontrol").args(["requeue", &format!("{array}_1")]).output().unwrap();
    assert!(requeue.status.success(), "shard 1 ended before the requeue: {}", text(&requeue));
    // A requeued job is held back (BeginTime, two minutes) once it is pending again; let it
    // start at once.
    wait_until("shard 1 pending again", Duration::from_secs(60), || {
        let q = command("squeue").args(["-h", "-j", &format!("{array}_1"), "-o", "%T"]).output();
        q.is_ok_and(|q| String::from_utf8_lossy(&q.stdout).trim() == "PENDING")
    });
    let now = command("scontrol")
        .args(["update", &format!("JobId={array}_1"), "StartTime=now"])
        .output()
        .unwrap();
    assert!(now.status.success(), "{}", text(&now));
    wait_until("the array ends", Duration::from_secs(300), || {
        let q = command("squeue").args(["-h", "-j", &array]).output().unwrap();
        q.status.success() && q.stdout.is_empty()
    });
    let logs = (0..4)
        .map(|i| dir.path().join(format!("simsweep-{array}_{i}.log")))
        .map(|log| fs::read_to_string(&log).unwrap_or_default())
        .collect::<Vec<_>>();
    let requeued_log = &logs[1];
    assert!(requeued_log.contains("shard 1 of 4"), "shard 1's log: {requeued_log}");

    let mut merge = command("sbatch");
    env(&mut merge);
    let merged = merge
        .args(["--wait", "--export=ALL"])
        .arg(repo().join("examples/cluster/slurm/merge.sbatch"))
        .output()
        .unwrap();
    assert!(merged.status.success(), "merge: {}\nlogs: {logs:?}", text(&merged));
    let rows =
        assert_same_output(&reference, &read_sharded(&out, 4), "Slurm, 4 shards, one requeued");
    assert!(rows > 40_000 * 3 * 15, "{rows}");
    assert!(out.join("summary.json").is_file() && out.join("index.json").is_file());
}

#[test]
fn hyperqueue_local_cluster_runs_the_shards_and_the_merge() {
    let probe = command("python3").args(["-c", "import hyperqueue"]).output().unwrap();
    assert!(
        probe.status.success(),
        "PyPI's hyperqueue is not installed for python3; run scripts/setup-test-env.sh (.ci/run \
         does): {}",
        text(&probe)
    );
    let dir = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(dir.path(), 3_000);
    let out = dir.path().join("sharded");
    let run = command("python3")
        .current_dir(dir.path())
        .arg(repo().join("examples/cluster/hyperqueue/submit.py"))
        .arg("--local")
        .args([bin().as_os_str(), job.as_os_str(), out.as_os_str(), "3".as_ref()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("merged 3 shards"), "{}", text(&run));
    assert_same_output(&reference, &read_sharded(&out, 3), "HyperQueue, 3 shards");
}

fn yaml(path: &Path) -> Yaml {
    let source = fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&source).unwrap().remove(0)
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .unwrap_or_else(|| panic!("a list: {node:?}"))
        .iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| panic!("a string: {v:?}")))
        .collect()
}

/// `simsweep ARGS` as a pod would run it, `/data` mapped to `data`.
fn run_pod_command(args: &[String], data: &Path, index: Option<u32>) -> Output {
    assert_eq!(args[0], "simsweep", "the container runs the simsweep binary: {args:?}");
    let args: Vec<String> =
        args[1..].iter().map(|a| a.replacen("/data", &data.display().to_string(), 1)).collect();
    let mut cmd = command(bin().to_str().unwrap());
    cmd.args(&args);
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "HQ_TASK_ID"] {
        cmd.env_remove(var);
    }
    if let Some(i) = index {
        cmd.env("JOB_COMPLETION_INDEX", i.to_string());
    }
    cmd.output().unwrap()
}

#[test]
fn kubernetes_manifests_are_indexed_jobs_whose_commands_run() {
    let dir = repo().join("examples/cluster/kubernetes");
    let sweep = yaml(&dir.join("sweep-job.yaml"));
    assert_eq!(sweep["kind"].as_str(), Some("Job"));
    let spec = &sweep["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let k = spec["completions"].as_i64().unwrap();
    assert_eq!(spec["parallelism"].as_i64(), Some(k));
    assert!(spec["backoffLimitPerIndex"].as_i64().is_some_and(|b| b >= 1));
    let rules = spec["podFailurePolicy"]["rules"].as_vec().unwrap();
    let fail_on_2 = rules.iter().any(|r| {
        r["action"].as_str() == Some("FailJob")
            && r["onExitCodes"]["operator"].as_str() == Some("In")
            && r["onExitCodes"]["values"].as_vec().is_some_and(|v| v.contains(&Yaml::Integer(2)))
    });
    assert!(fail_on_2, "exit 2 (bad spec) fails the whole Job: {rules:?}");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"), "podFailurePolicy needs Never");
    let container = &pod["containers"][0];
    assert_eq!(
        rules.iter().filter_map(|r| r["onExitCodes"]["containerName"].as_str()).next(),
        container["name"].as_str()
    );
    let mounts = container["volumeMounts"].as_vec().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"].as_str() == Some("/data")));
    let sweep_cmd = strings(&container["command"]);
    let shards_at = sweep_cmd.iter().position(|a| a == "--shards").unwrap();
    assert_eq!(sweep_cmd[shards_at + 1], k.to_string(), "--shards equals completions");
    assert!(!sweep_cmd.contains(&"--shard".to_string()), "the index comes from the Job");

    let merge = yaml(&dir.join("merge-job.yaml"));
    let merge_cmd = strings(&merge["spec"]["template"]["spec"]["containers"][0]["command"]);

    // Run the pods' commands here, on the flu example laid out as the volume holds it.
    let data = tempfile::tempdir().unwrap();
    let example = data.path().join("flu-boarding-school");
    fs::create_dir(&example).unwrap();
    for f in ["job.toml", "influenza_england_1978_school.csv"] {
        fs::copy(repo().join("examples/flu-boarding-school").join(f), example.join(f)).unwrap();
    }
    // A merge before the shards ran refuses, naming them (exit 2, as podFailurePolicy expects).
    let early = run_pod_command(&merge_cmd, data.path(), None);
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    for i in 0..k as u32 {
        let pod = run_pod_command(&sweep_cmd, data.path(), Some(i));
        assert!(pod.status.success(), "index {i}: {}", text(&pod));
        assert!(String::from_utf8_lossy(&pod.stderr).contains(&format!("JOB_COMPLETION_INDEX={i}")));
    }
    let merged = run_pod_command(&merge_cmd, data.path(), None);
    assert!(merged.status.success(), "{}", text(&merged));
    let stdout = String::from_utf8_lossy(&merged.stdout);
    assert!(
        stdout.contains(&format!(
            "merged {k} shards of `flu-boarding-school`: 10000 parameter sets, 200000 simulations"
        )),
        "{stdout}"
    );
}

#[test]
fn slurm_example_script_matches_the_cli() {
    // The array size and --shards agree, and the script names only flags the CLI has.
    let script = fs::read_to_string(repo().join("examples/cluster/slurm/sweep.sbatch")).unwrap();
    let array = script.lines().find_map(|l| l.strip_prefix("#SBATCH --array=")).unwrap();
    let (lo, hi) = array.split_once('-').unwrap();
    let tasks = hi.parse::<u32>().unwrap() - lo.parse::<u32>().unwrap() + 1;
    let run_line = script.lines().find(|l| l.contains("\"$SIMSWEEP\" run")).unwrap();
    assert!(run_line.contains(&format!("--shards {tasks}")), "{run_line}");
    let help = command(bin().to_str().unwrap()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in run_line.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "`{flag}` is not a flag of `simsweep run`");
    }
}
