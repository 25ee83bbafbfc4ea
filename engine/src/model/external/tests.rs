//! ExternalModel against `tests/fault_model.py`: exact failure kinds, exit codes, signals,
//! stderr tails, the worker pool, and the retry loop. Needs `python3` with `pyarrow`.

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array};

use super::*;
use crate::model::{FailureKind, RetryPolicy};

fn fault_model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fault_model.py")
}

fn settings(state: &std::path::Path) -> ExternalSettings {
    let mut s =
        ExternalSettings::new(["python3".to_string(), fault_model_path().display().to_string()]);
    // Generous for the tasks that must succeed on a loaded machine; the `hang` mode meets it.
    s.timeout_seconds = Some(3.0);
    s.memory_limit_mb = Some(1024);
    s.env.insert("FAULT_STATE_DIR".into(), state.display().to_string());
    s
}

fn model(state: &std::path::Path) -> ExternalModel {
    ExternalModel::new(settings(state)).unwrap_or_else(|e| {
        panic!("the fault model needs python3 with pyarrow (pip install pyarrow): {e}")
    })
}

fn params(mode: &str, x: f64) -> ParameterSet {
    let mut p = ParameterSet::new();
    p.insert("mode", ParamValue::Str(mode.into()));
    p.insert("x", ParamValue::Float(x));
    p
}

fn values(out: &SimOutput) -> (Vec<i64>, Vec<f64>) {
    let t = &out.tables[0];
    let k = t.column(0).as_any().downcast_ref::<Int64Array>().expect("int64");
    let v = t.column(1).as_any().downcast_ref::<Float64Array>().expect("float64");
    (k.values().to_vec(), v.values().to_vec())
}

#[test]
fn handshake_gives_parameters_and_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    assert_eq!(m.name(), fault_model_path().display().to_string());
    assert_eq!(m.parameter_names(), ["mode", "x"]);
    let outputs = m.outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].name, "values");
    let fields: Vec<_> = outputs[0]
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(fields, [("k".into(), DataType::Int64), ("value".into(), DataType::Float64)]);
    // The handshake's worker is not kept: the threads that run tasks start their own.
    assert_eq!(m.idle_workers(), 0);
}

#[test]
fn same_seed_same_rows_and_the_worker_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    let a = m.simulate(&params("ok", 2.0), 7).expect("runs");
    let b = m.simulate(&params("ok", 2.0), 7).expect("runs");
    let c = m.simulate(&params("ok", 2.0), 8).expect("runs");
    assert_eq!(a.tables, b.tables);
    assert_ne!(a.tables, c.tables);
    assert_eq!(a.tables[0].schema(), m.outputs()[0].schema);
    let (k, v) = values(&a);
    assert_eq!(k, [0, 1, 2]);
    assert!(v.iter().all(|x| (0.0..2.0).contains(x)), "{v:?}");
    assert_eq!(m.idle_workers(), 1);
}

#[test]
fn each_failure_has_its_kind_exit_code_signal_and_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    let run = |mode: &str| m.simulate(&params(mode, 1.0), 1).expect_err(mode);

    let e = run("error");
    assert_eq!(e, SimError::Model("ValueError: mode error asks for an error".into()));
    assert_eq!(m.idle_workers(), 1, "a model error keeps the worker");

    let e = run("segfault");
    assert_eq!((e.kind(), e.exit_code(), e.signal()), ("crash", None, Some(11)), "{e}");
    assert!(e.stderr_tail().is_some_and(|t| t.contains("fault_model: segfaulting now")), "{e:?}");
    assert_eq!(e.to_string(), "worker crashed: killed by signal 11 (SIGSEGV)");
    assert_eq!(m.idle_workers(), 0, "a crashed worker is dropped");

    // Exit 137 or a SIGKILL is not evidence of memory by itself (the memory cgroup counted no
    // OOM kill): a crash with its code or signal.
    let e = run("exit137");
    assert_eq!((e.kind(), e.exit_code(), e.signal()), ("crash", Some(137), None), "{e}");
    let e = run("sigkill");
    assert_eq!((e.kind(), e.exit_code(), e.signal()), ("crash", None, Some(9)), "{e}");
    // An allocation failure on stderr under memory_limit_mb is.
    let e = run("alloc_abort");
    assert_eq!((e.kind(), e.exit_code(), e.signal()), ("oom", None, Some(6)), "{e}");
    assert!(e.to_string().contains("memory allocation of"), "{e}");

    let e = run("oom");
    assert_eq!((e.kind(), e.exit_code(), e.signal()), ("oom", None, None), "{e}");
    assert!(e.to_string().contains("MemoryError"), "{e}");

    let start = Instant::now();
    let e = run("hang");
    assert!(
        matches!(&e, SimError::Timeout { timeout_seconds, .. } if *timeout_seconds == 3.0),
        "{e:?}"
    );
    assert!(e.stderr_tail().is_some_and(|t| t.contains("fault_model: hanging")), "{e:?}");
    // Killed at the timeout, not after the hour the task sleeps (bound generous for a loaded
    // machine).
    assert!(start.elapsed().as_secs_f64() < 60.0, "{:?}", start.elapsed());

    let e = run("garbage");
    assert_eq!(e.kind(), "protocol");
    assert!(e.to_string().contains("this is not a frame"), "{e}");

    let e = run("too_large");
    assert_eq!(e.kind(), "protocol");
    assert!(e.to_string().contains("999999999999 bytes is larger than the limit"), "{e}");

    // A fresh worker takes over after all of that.
    assert!(m.simulate(&params("ok", 1.0), 1).is_ok());
    assert_eq!(m.idle_workers(), 1);
}

#[test]
fn retry_loop_reruns_crashes_on_a_fresh_worker_and_not_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    let policy = RetryPolicy::default();

    let once = policy.run(|_| m.simulate(&params("crash_once", 1.0), 5));
    assert_eq!(once.failed_attempts.len(), 1);
    let first = &once.failed_attempts[0];
    assert_eq!((first.kind(), first.exit_code(), first.signal()), ("crash", Some(3), None));
    assert!(first.stderr_tail().is_some_and(|t| t.contains("crashing once for seed 5")));
    let ok = once.result.expect("second attempt succeeds");
    assert_eq!(ok.tables, m.simulate(&params("ok", 1.0), 5).expect("runs").tables);

    let always = policy.run(|_| m.simulate(&params("segfault", 1.0), 5));
    let kinds: Vec<_> = always.failed_attempts.iter().map(SimError::failure_kind).collect();
    assert_eq!(kinds, [FailureKind::Crash, FailureKind::Crash]);
    assert_eq!(always.result.expect_err("fails").signal(), Some(11));

    let error = policy.run(|_| m.simulate(&params("error", 1.0), 5));
    assert!(error.failed_attempts.is_empty());
    assert_eq!(error.result.expect_err("fails").kind(), "error");
}

#[test]
fn concurrent_callers_get_one_worker_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    let reference: Vec<_> =
        (0..8).map(|s| m.simulate(&params("ok", 1.0), s).expect("runs").tables).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let tables = (0..8)
                        .map(|s| m.simulate(&params("ok", 1.0), s).expect("runs").tables)
                        .collect::<Vec<_>>();
                    // Each thread used its own worker, and gives it back as it ends.
                    m.release_thread();
                    tables
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("thread"), reference);
        }
    });
    // Only the main thread's worker is left, idle and alive.
    assert_eq!(m.idle_workers(), 1);
    assert_eq!(m.live_workers(), 1);
    m.release_thread();
    assert_eq!((m.idle_workers(), m.live_workers()), (0, 0));
}

#[test]
fn a_broken_command_is_refused_naming_it() {
    let err = ExternalModel::new(ExternalSettings::new([
        "python3",
        "-c",
        "import sys; print('no model here', file=sys.stderr); sys.exit(2)",
    ]))
    .expect_err("refused");
    assert_eq!(err.setting, "command");
    assert!(err.message.starts_with("`python3 -c import sys;"), "{}", err.message);
    assert!(err.message.contains("exited with code 2"), "{}", err.message);
    assert!(err.message.contains("no model here"), "{}", err.message);

    let err = ExternalModel::new(ExternalSettings::new(["/nonexistent/simsweep-model"]))
        .expect_err("refused");
    assert!(
        err.message.contains("could not start `/nonexistent/simsweep-model`"),
        "{}",
        err.message
    );

    let mut s = ExternalSettings::new(["true"]);
    s.timeout_seconds = Some(0.0);
    assert_eq!(ExternalModel::new(s).expect_err("refused").setting, "timeout_seconds");
}

#[test]
fn decode_checks_the_declared_columns() {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::ipc::writer::StreamWriter;
    let spec = OutputSpec {
        name: "values".into(),
        schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
    };
    let encode = |batch: &RecordBatch| {
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).expect("writer");
        w.write(batch).expect("write");
        w.finish().expect("finish");
        drop(w);
        buf
    };
    let good =
        RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
            .expect("batch");
    let decoded = decode_table(&encode(&good), &spec).expect("decodes");
    assert_eq!(decoded.schema(), spec.schema);
    assert_eq!(decoded.num_rows(), 2);
    let wrong =
        RecordBatch::try_from_iter([("k", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)])
            .expect("batch");
    assert!(decode_table(&encode(&wrong), &spec).expect_err("refused").contains("declared"));
    let nulls = RecordBatch::try_from_iter([(
        "k",
        Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
    )])
    .expect("batch");
    assert!(decode_table(&encode(&nulls), &spec).is_err());
    assert!(decode_table(b"not arrow", &spec).is_err());
}

#[test]
fn model_spec_dispatches_on_command_and_name() {
    use crate::model::{BuiltInModel, ModelKind, ModelSpec};
    let external: ModelSpec = toml::from_str(
        "command = [\"python3\", \"m.py\"]\ntimeout_seconds = 2.5\nmax_attempts = 2\n[settings]\na = 1",
    )
    .expect("parses");
    assert_eq!(external.retry.max_attempts, 2);
    let ModelKind::External(s) = &external.model else { panic!("external: {external:?}") };
    assert_eq!(s.command, ["python3", "m.py"]);
    assert_eq!(s.timeout_seconds, Some(2.5));
    assert_eq!(s.settings.get("a"), Some(&toml::Value::Integer(1)));

    let builtin: ModelSpec = toml::from_str(
        "name = \"sir\"\npopulation = 10\ninitial_infected = 1\ndays = 3\nretry = [\"error\"]",
    )
    .expect("parses");
    assert!(matches!(builtin.model, ModelKind::BuiltIn(BuiltInModel::Sir(_))));
    assert_eq!(builtin.retry.retry, [FailureKind::Error]);
    let json = serde_json::to_value(&builtin).expect("json");
    assert_eq!(json["name"], "sir");
    assert_eq!(json["max_attempts"], 3);

    let err = |t: &str| toml::from_str::<ModelSpec>(t).expect_err("refused").to_string();
    assert!(err("command = [\"x\"]\ntimeot_seconds = 1").contains("unknown field `timeot_seconds`"));
    assert!(err("population = 1").contains("give `name`"));
    assert!(err("name = \"sir\"\npopulation = 1\ninitial_infected = 1\ndays = 1\ncommand_x = 1")
        .contains("unknown field"));
}

#[test]
fn each_protocol_violation_is_named_and_costs_its_worker() {
    // A fresh model per case: its first request has id 1, which the forged replies echo (x).
    let cases = [
        ("wrong_id", "reply for id 999999 to request 1"),
        ("bad_json", "execute reply is not valid"),
        ("wrong_tables", "reply has tables [\"other\"]; the model declared [\"values\"]"),
        ("wrong_content_type", "table `values`: Content-Type Some(\"text/plain\"), expected"),
        ("byte_mismatch", "table `values`: 10 bytes announced, 4 sent"),
    ];
    for (mode, message) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = model(dir.path());
        let e = m.simulate(&params(mode, 1.0), 1).expect_err(mode);
        assert_eq!(e.kind(), "protocol", "{mode}: {e}");
        assert!(e.to_string().contains(message), "{mode}: {e}");
        assert_eq!((m.idle_workers(), m.live_workers()), (0, 0), "{mode}: the worker is killed");
        // The next task gets a fresh worker.
        assert!(m.simulate(&params("ok", 1.0), 1).is_ok(), "{mode}");
    }
}

#[test]
fn a_worker_answering_another_protocol_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("old_worker.py");
    std::fs::write(
        &script,
        r#"import json, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def read():
    headers = {}
    while True:
        line = inp.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return json.loads(inp.read(int(headers["content-length"])))
read()
body = json.dumps({"ok": True, "protocol_version": 99, "parameters": ["x"],
                   "outputs": []}).encode()
out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
out.flush()
read()
"#,
    )
    .expect("write");
    let err = ExternalModel::new(ExternalSettings::new([
        "python3".to_string(),
        script.display().to_string(),
    ]))
    .expect_err("refused");
    assert_eq!(err.setting, "command");
    assert!(
        err.message.contains("worker speaks protocol version Some(99), simsweep 1"),
        "{}",
        err.message
    );
}

#[test]
fn a_timeout_kills_the_workers_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hang"), "").expect("write");
    let m = model(dir.path());
    let e = m.simulate(&params("hang_with_child", 1.0), 7).expect_err("times out");
    assert_eq!(e.kind(), "timeout", "{e}");
    // The model's own child (same process group) was killed too.
    let pid: u32 = std::fs::read_to_string(dir.path().join("child-7"))
        .expect("the child's pid")
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let gone = stat.is_empty()
            || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "the model's child {pid} outlived the timeout");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn settings_v1(state: &std::path::Path) -> ExternalSettings {
    let mut s = settings(state);
    s.env.insert("SIMSWEEP_WORKER_MAX_PROTOCOL".into(), "1".into());
    s
}

/// Ten tasks (two pipelined `execute_many` messages): successes from dicts and from pyarrow
/// tables, model errors, a task whose columns differ in length.
fn mixed_tasks() -> Vec<(ParameterSet, u32)> {
    [
        ("ok", 1.0, 7),
        ("error", 1.0, 8),
        ("table", 2.0, 9),
        ("fail_odd_seed", 1.0, 11),
        ("fail_odd_seed", 1.0, 10),
        ("ragged", 1.0, 12),
        ("ok", 3.0, 14),
        ("table", 1.0, 15),
        ("ok", 1.0, 16),
        ("ok", 2.5, 17),
    ]
    .into_iter()
    .map(|(mode, x, seed)| (params(mode, x), seed))
    .collect()
}

#[test]
fn execute_many_gives_each_task_what_execute_gives_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    assert!(m.runs_many(), "the helper speaks version 2");
    let sets = mixed_tasks();
    let tasks: Vec<(&ParameterSet, u32)> = sets.iter().map(|(p, s)| (p, *s)).collect();
    let many = m.simulate_many(&tasks).expect("one call");
    let one: Vec<_> = tasks.iter().map(|(p, s)| m.simulate(p, *s)).collect();
    assert_eq!(many, one);
    let ok: Vec<bool> = many.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true, false, true, false, true, true, true, true]);
    assert_eq!(many[1], Err(SimError::Model("ValueError: mode error asks for an error".into())));
    assert_eq!(many[3], Err(SimError::Model("ValueError: odd seed 11".into())));
    assert!(matches!(&many[5], Err(SimError::Model(e)) if e.contains("length")), "{:?}", many[5]);
    // Rows: the seed's draws scaled by x, three per task.
    let (k, v) = values(many[2].as_ref().expect("ok"));
    assert_eq!(k, [0, 1, 2]);
    assert!(v.iter().all(|x| (0.0..2.0).contains(x)), "{v:?}");
    assert_eq!(many[0].as_ref().expect("ok").tables[0].schema(), m.outputs()[0].schema);
    assert_eq!(m.idle_workers(), 1, "one worker, reused");
}

#[test]
fn a_version_1_worker_gets_one_execute_per_task_with_the_same_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = ExternalModel::new(settings_v1(dir.path())).expect("starts");
    let v2 = model(dir.path());
    assert!(!v1.runs_many());
    let sets = mixed_tasks();
    let tasks: Vec<(&ParameterSet, u32)> = sets.iter().map(|(p, s)| (p, *s)).collect();
    assert_eq!(v1.simulate_many(&tasks).expect("runs"), v2.simulate_many(&tasks).expect("runs"));
}

#[test]
fn a_worker_dying_inside_execute_many_fails_the_call_as_a_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model(dir.path());
    let sets = [params("ok", 1.0), params("segfault", 1.0), params("ok", 2.0)];
    let tasks: Vec<(&ParameterSet, u32)> = sets.iter().map(|p| (p, 1)).collect();
    let e = m.simulate_many(&tasks).expect_err("the worker crashed");
    assert_eq!((e.kind(), e.signal()), ("crash", Some(11)), "{e}");
    assert_eq!(m.idle_workers(), 0, "a crashed worker is dropped");
    assert_eq!(m.live_workers(), 0);
    // The next call starts a fresh worker.
    let ok = [params("ok", 1.0), params("ok", 2.0)];
    let tasks: Vec<(&ParameterSet, u32)> = ok.iter().map(|p| (p, 3)).collect();
    assert!(m.simulate_many(&tasks).expect("runs").iter().all(Result::is_ok));
}

/// An Arrow IPC stream of `columns` (name, UInt32 or Int64 values).
fn ipc(columns: &[(&str, arrow::array::ArrayRef)]) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns.iter().map(|(n, a)| (*n, Arc::clone(a))))
        .expect("batch");
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).expect("w");
    w.write(&batch).expect("write");
    w.finish().expect("finish");
    drop(w);
    out
}

#[test]
fn execute_many_tables_are_split_by_task_and_checked() {
    use arrow::array::{ArrayRef, UInt32Array};
    let spec = OutputSpec {
        name: "values".into(),
        schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)])),
    };
    let ok = |ok: bool| TaskResult { ok, error: None };
    let table = |task: Vec<u32>, k: Vec<i64>| {
        ipc(&[
            ("task", Arc::new(UInt32Array::from(task)) as ArrayRef),
            ("k", Arc::new(Int64Array::from(k)) as ArrayRef),
        ])
    };
    // Tasks 0 and 2 have rows, task 1 failed, task 3 succeeded with none.
    let parts = decode_task_table(
        &table(vec![0, 0, 2], vec![5, 6, 7]),
        &spec,
        &[ok(true), ok(false), ok(true), ok(true)],
    )
    .expect("decodes");
    let k: Vec<Vec<i64>> = parts
        .iter()
        .map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect();
    assert_eq!(k, [vec![5, 6], vec![], vec![7], vec![]]);
    assert!(parts.iter().all(|b| b.schema() == spec.schema));

    let err = |task: Vec<u32>, results: &[TaskResult]| {
        let k = (0..task.len() as i64).collect();
        decode_task_table(&table(task, k), &spec, results).expect_err("refused")
    };
    let e = err(vec![1, 0], &[ok(true), ok(true)]);
    assert!(e.contains("grouped by task, in ascending order"), "{e}");
    let e = err(vec![0, 2], &[ok(true), ok(true)]);
    assert!(e.contains("`task` value 2 at row 1"), "{e}");
    let e = err(vec![0, 1], &[ok(true), ok(false)]);
    assert!(e.contains("rows for task 1, which failed"), "{e}");
    // Without the `task` column, or with another type, the declared columns do not match.
    let e = decode_task_table(
        &ipc(&[("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]),
        &spec,
        &[ok(true)],
    )
    .expect_err("refused");
    assert!(e.contains("`task` then the declared columns"), "{e}");
}

/// A `simulate_many` model (`x` < 0 raises, `x` = 7 leaves out its rows, `x` = 9 names a task
/// that does not exist): through `execute_many` and through single `execute` messages alike,
/// exactly those tasks fail, with what went wrong, and the others get the same rows.
#[test]
fn simulate_many_models_are_checked_task_by_task_on_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("many_model.py");
    std::fs::write(
        &script,
        format!(
            r#"import sys
sys.path.insert(0, {helper:?})
import simsweep_worker

def simulate_many(params, seeds):
    task, k, value = [], [], []
    for i, (p, seed) in enumerate(zip(params, seeds)):
        x = p["x"]
        if x < 0:
            raise ValueError("x < 0")
        if x == 7:
            continue
        index = len(params) if x == 9 else i
        task += [index, index]
        k += [0, 1]
        value += [x * seed, x + seed]
    return {{"values": {{"task": task, "k": k, "value": value}}}}

simsweep_worker.run(simulate_many=simulate_many, parameters=["x"],
                    outputs={{"values": {{"k": "int64", "value": "float64"}}}})
"#,
            helper = fault_model_path().parent().unwrap().join("../python").display().to_string()
        ),
    )
    .expect("write");
    let m = ExternalModel::new(ExternalSettings::new([
        "python3".to_string(),
        script.display().to_string(),
    ]))
    .expect("starts");
    assert!(m.runs_many());
    let xs = [1.0, -1.0, 2.0, 7.0, 3.0, 9.0, 4.0, 5.0, 6.0, 8.0];
    let sets: Vec<ParameterSet> = xs
        .iter()
        .map(|&x| {
            let mut p = ParameterSet::new();
            p.insert("x", ParamValue::Float(x));
            p
        })
        .collect();
    let tasks: Vec<(&ParameterSet, u32)> = sets.iter().zip(10u32..).collect();
    let many = m.simulate_many(&tasks).expect("one call");
    let one: Vec<_> = tasks.iter().map(|(p, s)| m.simulate(p, *s)).collect();
    assert_eq!(many, one);
    let message = |r: &Result<SimOutput, SimError>| match r {
        Err(SimError::Model(e)) => e.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(message(&many[1]), "ValueError: x < 0");
    assert!(message(&many[3]).contains("no rows in any output for task(s) [0]"), "{:?}", many[3]);
    assert!(message(&many[5]).contains("returned rows of output `values` for task 1"));
    for (i, &x) in xs.iter().enumerate().filter(|(i, _)| ![1, 3, 5].contains(i)) {
        let seed = 10.0 + i as f64;
        let out = many[i].as_ref().expect("ok");
        let v = out.tables[0].column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(v.values().to_vec(), vec![x * seed, x + seed], "task {i}");
    }
}
