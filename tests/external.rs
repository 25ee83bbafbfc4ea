//! External models through the public API: a Python model that misbehaves on chosen parameter
//! sets (`tests/fault_model.py`), and the Python SIR example end to end. Needs `python3` with
//! `pyarrow` (`pip install pyarrow`).

mod common;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Float64Array, Int32Array, StringArray, UInt32Array};
use common::{read_dataset, simsweep, write_fault_job_with};
use simsweep::engine::identity::param_id;
use simsweep::engine::params::{ParamValue, ParameterSet};
use simsweep::{CancelToken, NoProgress, RunOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Log lines of every thread, for the OOM guidance.
fn logs() -> &'static Mutex<Vec<u8>> {
    common::captured_logs(tracing::Level::WARN)
}

const MODES: [(&str, f64); 9] = [
    ("ok", 1.0),
    ("error", 1.0),
    ("segfault", 1.0),
    ("ok", 2.0),
    ("hang", 1.0),
    ("exit137", 1.0),
    ("garbage", 1.0),
    ("crash_once", 1.5),
    ("oom", 1.0),
];

/// The fault model's job: a generous timeout (the `hang` mode needs one; the others must not
/// meet it on a loaded machine), a memory limit for the `oom` mode, two attempts.
fn write_job(dir: &Path, state: &Path, rows: &[(&str, f64)]) -> PathBuf {
    let model = "timeout_seconds = 3.0\nmemory_limit_mb = 1024\nmax_attempts = 2";
    write_fault_job_with(dir, state, rows, 1, model, "")
}

fn run(job: &Path, workers: usize) -> simsweep::Report {
    let job = simsweep::load_job(job)
        .unwrap_or_else(|e| panic!("needs python3 with pyarrow (pip install pyarrow): {e}"));
    let options = RunOptions {
        batch_size: NonZeroUsize::new(4).unwrap(),
        workers: NonZeroUsize::new(workers).unwrap(),
        ..RunOptions::default()
    };
    simsweep::run(&job, &options, Arc::new(NoProgress), CancelToken::new()).unwrap()
}

fn id_of(mode: &str, x: f64) -> String {
    let mut p = ParameterSet::new();
    p.insert("mode", ParamValue::Str(mode.into()));
    p.insert("x", ParamValue::Float(x));
    param_id(&p).unwrap().to_string()
}

#[test]
fn every_fault_costs_one_task_and_is_recorded_exactly() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let report = run(&write_job(dir.path(), state.path(), &MODES), 2);
    assert_eq!(report.progress.simulations_committed, 9);

    let f = read_dataset(&dir.path().join("output/failures"));
    let ids = f
        .column_by_name("param_id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    let kind =
        f.column_by_name("kind").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
    let attempt = f
        .column_by_name("attempt")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap()
        .clone();
    let exit = f
        .column_by_name("exit_code")
        .unwrap()
        .as_any()
        .downcast_ref::<Int32Array>()
        .unwrap()
        .clone();
    let signal =
        f.column_by_name("signal").unwrap().as_any().downcast_ref::<Int32Array>().unwrap().clone();
    let tail = f
        .column_by_name("stderr_tail")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    let mode_of =
        |id: &str| MODES.iter().find(|(m, x)| id_of(m, *x) == id).map(|(m, _)| *m).unwrap();
    let opt = |a: &Int32Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let rows: Vec<_> = (0..f.num_rows())
        .map(|i| {
            (mode_of(ids.value(i)), kind.value(i), attempt.value(i), opt(&exit, i), opt(&signal, i))
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("error", "error", 1, None, None),
            ("segfault", "crash", 1, None, Some(11)),
            ("segfault", "crash", 2, None, Some(11)),
            ("hang", "timeout", 1, None, None),
            ("hang", "timeout", 2, None, None),
            ("exit137", "crash", 1, Some(137), None),
            ("exit137", "crash", 2, Some(137), None),
            ("garbage", "protocol", 1, None, None),
            ("crash_once", "crash", 1, Some(3), None),
            ("oom", "oom", 1, None, None),
            ("oom", "oom", 2, None, None),
        ]
    );
    // stderr tails: null for a model error, the worker's last words otherwise.
    assert!(tail.is_null(0));
    assert!(tail.value(1).contains("fault_model: segfaulting now"), "{}", tail.value(1));
    assert!(tail.value(3).contains("fault_model: hanging"));
    assert!(tail.value(8).contains("crashing once for seed"));

    // The OOM guidance, once per batch with OOM kills (oom in batch 2; exit137 in batch 1 is a
    // crash: nothing says memory).
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let guidance: Vec<_> = logged.lines().filter(|l| l.contains("ran out of memory")).collect();
    assert_eq!(guidance.len(), 1, "{logged}");
    assert!(guidance[0].contains("2 task attempt(s) ran out of memory (memory limit 1024 MiB per worker process; 2 workers, batch size 4 × 1 replicates)"), "{}", guidance[0]);

    // Successful rows equal a clean run's (crash_once's marker now exists: no crash there).
    let outputs = read_dataset(&dir.path().join("output/model_outputs/values"));
    let clean_rows = [("ok", 1.0), ("ok", 2.0), ("crash_once", 1.5)];
    let clean_dir = tempfile::tempdir().unwrap();
    run(&write_job(clean_dir.path(), state.path(), &clean_rows), 1);
    let clean = read_dataset(&clean_dir.path().join("output/model_outputs/values"));
    assert_eq!(outputs, clean);
    assert_eq!(outputs.num_rows(), 9);
    let clean_failures = read_dataset(&clean_dir.path().join("output/failures"));
    assert_eq!(clean_failures.num_rows(), 0);
}

#[test]
fn python_sir_example_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join("examples/python-sir");
    for f in ["job.toml", "model.py", "influenza_england_1978_school.csv"] {
        std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
    }
    // model.py finds the helper relative to itself: point it at the repository's copy.
    let model = std::fs::read_to_string(dir.path().join("model.py")).unwrap().replace(
        "os.path.join(os.path.dirname(os.path.abspath(__file__)), \"..\", \"..\", \"python\")",
        &format!("{:?}", repo().join("python").display().to_string()),
    );
    std::fs::write(dir.path().join("model.py"), model).unwrap();
    let report = run(&dir.path().join("job.toml"), 2);
    assert_eq!(report.progress.simulations_committed, 250);
    let t = read_dataset(&dir.path().join("output/targets/in_bed"));
    assert_eq!(t.num_rows(), 50);
    let loss = t.column_by_name("loss").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(loss.null_count(), 0);
    // A parameter set whose replicates all died out early can have an infinite loss; most fit.
    let finite = loss.values().iter().filter(|l| l.is_finite()).count();
    assert!(finite >= 40, "{finite} finite losses of 50: {loss:?}");
    let prevalence = read_dataset(&dir.path().join("output/model_outputs/prevalence"));
    assert_eq!(prevalence.num_rows(), 250 * 15);
    assert_eq!(read_dataset(&dir.path().join("output/failures")).num_rows(), 0);
}

/// The Python SIR example copied into `dir`, with the worker helper beside the model.
fn copy_python_example(dir: &Path) {
    let example = repo().join("examples/python-sir");
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(repo().join("python/simsweep_worker.py"), dir.join("simsweep_worker.py"))
        .unwrap();
}

#[test]
fn a_job_file_named_without_a_folder_starts_its_model_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    copy_python_example(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(["validate", "job.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn observations_outside_an_external_models_days_are_reported_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    copy_python_example(dir.path());
    let job = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    assert!(job.contains("origin = \"1978-01-21\""));
    // Eleven days earlier: the last observations fall after the model's last day.
    std::fs::write(dir.path().join("job.toml"), job.replace("1978-01-21", "1978-01-10")).unwrap();
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("50 of 50 parameter sets have no loss"), "{stdout}");
    // Said once at WARN, not once per parameter set.
    assert_eq!(stderr.matches("observed time 15 is not among").count(), 1, "{stderr}");
}

#[test]
fn a_run_where_every_simulation_fails_exits_4_and_says_where_to_look() {
    let dir = tempfile::tempdir().unwrap();
    copy_python_example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("model.py")).unwrap();
    let broken = model.replace(
        "def simulate(params, seed):\n",
        "def simulate(params, seed):\n    raise RuntimeError(\"broken on purpose\")\n",
    );
    assert_ne!(broken, model);
    std::fs::write(dir.path().join("model.py"), broken).unwrap();
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("every simulation failed (250 of 250)"), "{stderr}");
    assert!(stderr.contains("failures"), "{stderr}");
    let failures = read_dataset(&dir.path().join("output/failures"));
    assert_eq!(failures.num_rows(), 250, "one row per failed attempt (errors are not retried)");
    // Why, on stderr: the count by kind and the first message, without opening failures/.
    let kinds = failures.column_by_name("kind").unwrap();
    let kind = arrow::util::display::array_value_to_string(kinds, 0).unwrap();
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("250 × {kind}")))
        .unwrap_or_else(|| panic!("no line `250 × {kind}` in:\n{stderr}"));
    assert!(line.contains("first:") && line.contains("broken on purpose"), "{line}");
}

#[test]
fn reserved_names_are_refused_as_parameters_and_output_columns() {
    // A parameter named `loss` would sit beside the `loss` column of the target files (the
    // summary ranked by it, Parquet with duplicate columns); an output column `seed` beside the
    // one simsweep adds. Both are refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    copy_python_example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("model.py")).unwrap();
    let job = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    std::fs::write(
        dir.path().join("model.py"),
        model.replace(
            "parameters=[\"beta\", \"gamma\"]",
            "parameters=[\"beta\", \"gamma\", \"loss\"]",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        job.replace(
            "gamma = { min = 0.3, max = 1.0 }",
            "gamma = { min = 0.3, max = 1.0 }\nloss = 1.0",
        ),
    )
    .unwrap();
    let out = simsweep(&["run", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("field `parameters.space.loss`") && stderr.contains("is taken by a column"),
        "{stderr}"
    );
    assert!(!dir.path().join("output").exists());

    std::fs::write(dir.path().join("job.toml"), &job).unwrap();
    std::fs::write(
        dir.path().join("model.py"),
        model.replace("\"infected\": \"int64\"}}", "\"seed\": \"int64\"}}"),
    )
    .unwrap();
    let out = simsweep(&["validate", "job.toml"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model output `prevalence` has a column `seed`"), "{stderr}");
}

#[test]
fn slow_tasks_spread_over_every_worker() {
    // Tasks of 0.2 s: the chunk handed to a worker is sized from the measured task time (one
    // task per chunk here), so both workers' processes run tasks (it used to be one chunk of
    // every task, on one worker).
    let dir = tempfile::tempdir().unwrap();
    copy_python_example(dir.path());
    let model = std::fs::read_to_string(dir.path().join("model.py")).unwrap();
    let slow = model.replace(
        "def simulate(params, seed):\n",
        "def simulate(params, seed):\n    import time\n    time.sleep(0.2)\n    \
         open(\"pids.txt\", \"a\").write(f\"{os.getpid()}\\n\")\n",
    );
    assert_ne!(slow, model);
    std::fs::write(dir.path().join("model.py"), slow).unwrap();
    let job = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    let job = job.replace("count = 50", "count = 6").replace("replicates = 5", "replicates = 2");
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = simsweep(&["run", "job.toml", "--workers", "2"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pids = std::fs::read_to_string(dir.path().join("pids.txt")).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for pid in pids.lines() {
        *counts.entry(pid.to_string()).or_insert(0) += 1;
    }
    assert_eq!(counts.values().sum::<u32>(), 12, "{counts:?}");
    assert_eq!(counts.len(), 2, "both workers ran tasks: {counts:?}");
    assert!(counts.values().all(|&n| n >= 3), "spread over both: {counts:?}");
}

#[test]
fn a_target_scores_the_successful_replicates_only_and_counts_the_failed() {
    // Set 0 fails its replicates with odd seeds, set 1 fails all four, set 2 none; the loss
    // (annealed MSE against 0.5 at k = 0, 1, 2) is the mean over the successful replicates
    // only, and null where none succeeded.
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("observed.csv"), "k,obs\n0,0.5\n1,0.5\n2,0.5\n").unwrap();
    let target = r#"
[[targets]]
name = "fit"
output = "values"
column = "value"
time_column = "k"
data = "observed.csv"
data_column = "obs"
data_time_column = "k"
aggregation = "annealed"
loss = "mse"
"#;
    let rows = [("fail_odd_seed", 1.0), ("error", 1.0), ("ok", 2.0)];
    let job = write_fault_job_with(dir.path(), state.path(), &rows, 4, "max_attempts = 1", target);
    let report = run(&job, 2);
    assert_eq!(report.progress.simulations_committed, 12);

    // Each successful replicate's rows as written: (param_id, replicate) → values at k = 0..2.
    let out = read_dataset(&dir.path().join("output/model_outputs/values"));
    let ids = out.column_by_name("param_id").unwrap();
    let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
    let reps = out.column_by_name("replicate").unwrap();
    let reps = reps.as_any().downcast_ref::<UInt32Array>().unwrap();
    let values = out.column_by_name("value").unwrap();
    let values = values.as_any().downcast_ref::<Float64Array>().unwrap();
    let mut written: std::collections::BTreeMap<(String, u32), Vec<f64>> = Default::default();
    for i in 0..out.num_rows() {
        written.entry((ids.value(i).to_string(), reps.value(i))).or_default().push(values.value(i));
    }

    let t = read_dataset(&dir.path().join("output/targets/fit"));
    let col = |name: &str| t.column_by_name(name).unwrap().clone();
    let (loss, n_failed, tid) = (col("loss"), col("n_failed"), col("param_id"));
    let loss = loss.as_any().downcast_ref::<Float64Array>().unwrap();
    let n_failed = n_failed.as_any().downcast_ref::<UInt32Array>().unwrap();
    let tid = tid.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(t.num_rows(), 3);
    for (row, (mode, x)) in rows.iter().enumerate() {
        let id = id_of(mode, *x);
        assert_eq!(tid.value(row), id);
        let seeds: Vec<u32> = (0..4)
            .map(|r| {
                let mut p = ParameterSet::new();
                p.insert("mode", ParamValue::Str(mode.to_string()));
                p.insert("x", ParamValue::Float(*x));
                simsweep::engine::identity::replicate_seed(&param_id(&p).unwrap(), r)
            })
            .collect();
        let ok: Vec<u32> = (0..4)
            .filter(|&r| match *mode {
                "fail_odd_seed" => seeds[r as usize] % 2 == 0,
                "error" => false,
                _ => true,
            })
            .collect();
        assert_eq!(n_failed.value(row), 4 - ok.len() as u32, "{mode}: seeds {seeds:?}");
        if ok.is_empty() {
            assert!(loss.is_null(row), "{mode}: no replicate succeeded, no loss");
            continue;
        }
        let expected = ok
            .iter()
            .map(|&r| {
                let v = &written[&(id.clone(), r)];
                assert_eq!(v.len(), 3);
                v.iter().map(|x| (x - 0.5) * (x - 0.5)).sum::<f64>() / 3.0
            })
            .sum::<f64>()
            / ok.len() as f64;
        assert!(
            (loss.value(row) - expected).abs() <= 1e-12,
            "{mode}: {} vs {expected}",
            loss.value(row)
        );
    }
    // The seeds chosen make set 0 a real mix (else this test would not test the mix).
    assert!((1..4).contains(&n_failed.value(0)), "set 0 failed {} of 4", n_failed.value(0));
}

/// Protocol version 2 (`execute_many`, chunks of 16 tasks here) and version 1 (one `execute` per
/// task) give the same output, rows and failure records alike.
#[test]
fn execute_many_and_one_task_per_message_give_the_same_output() {
    let rows = [("ok", 1.0), ("fail_odd_seed", 1.0), ("table", 2.0), ("error", 1.0)];
    let state = tempfile::tempdir().unwrap();
    let run_with = |protocol: &str| {
        let dir = tempfile::tempdir().unwrap();
        let job = write_fault_job_with(dir.path(), state.path(), &rows, 16, "", "");
        let text = std::fs::read_to_string(&job).unwrap().replace(
            "env = { ",
            &format!("env = {{ SIMSWEEP_WORKER_MAX_PROTOCOL = \"{protocol}\", "),
        );
        std::fs::write(&job, text).unwrap();
        let report = run(&job, 1);
        assert_eq!(report.progress.simulations_committed, 64);
        let out = dir.path().join("output");
        (read_dataset(&out.join("model_outputs/values")), read_dataset(&out.join("failures")), dir)
    };
    let (v2_rows, v2_failures, _d2) = run_with("2");
    let (v1_rows, v1_failures, _d1) = run_with("1");
    assert_eq!(v2_rows, v1_rows);
    assert_eq!(v2_failures, v1_failures);
    // `error`'s 16 replicates and fail_odd_seed's odd seeds fail (no retry of model errors);
    // every other replicate has its three rows.
    let errors = v2_failures.num_rows();
    assert!((16..=32).contains(&errors), "{errors}");
    assert_eq!(v2_rows.num_rows() / 3 + errors, 64);
}
