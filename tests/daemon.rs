//! `simsweep serve`, driven over real HTTP on loopback: submit, watch (SSE), fetch and compare
//! with a CLI run of the same spec; refusals (bad specs, paths, models, hosts, origins); the
//! queue, cancel (graceful and forced), resume, delete, and a daemon killed with SIGKILL and
//! started again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A daemon process on an ephemeral loopback port.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_simsweep"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("SIMSWEEP_BATCH_SIZE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server { child, addr, agent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut resp = self.agent.get(&self.url(path)).call().unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn post(&self, path: &str, content_type: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.agent.post(&self.url(path)).header("Content-Type", content_type);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn submit(&self, submission: &Value, key: Option<&str>) -> (u16, Value) {
        self.post("/v1/jobs", "application/json", &submission.to_string(), key)
    }

    fn state(&self, id: &str) -> String {
        self.get(&format!("/v1/jobs/{id}")).1["state"].as_str().unwrap().to_string()
    }

    /// Waits (up to `secs`) until job `id` is in `state`.
    fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}"));
            if job["state"] == state {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} not {state} after {secs} s: {job}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until job `id` has committed at least `batches` batches.
    fn wait_batches(&self, id: &str, batches: u64, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}"));
            if job["progress"]["batches_committed"].as_u64().unwrap_or(0) >= batches {
                return;
            }
            assert!(Instant::now() < deadline, "job {id}: fewer than {batches} batches: {job}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The events of job `id` after `after`, read from the SSE stream to its end.
    fn events(&self, id: &str, after: Option<i64>) -> Vec<(i64, String, Value)> {
        let mut req = self.agent.get(&self.url(&format!("/v1/jobs/{id}/events")));
        if let Some(after) = after {
            req = req.header("Last-Event-ID", &after.to_string());
        }
        let resp = req.call().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let content_type = resp.headers().get("content-type").unwrap().to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        let reader = BufReader::new(resp.into_body().into_reader());
        let (mut events, mut current) = (Vec::new(), (0, String::new(), Value::Null));
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix("id: ") {
                current.0 = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("event: ") {
                current.1 = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                current.2 = serde_json::from_str(v).unwrap();
            } else if line.is_empty() && current.0 > 0 {
                events.push(std::mem::replace(&mut current, (0, String::new(), Value::Null)));
            }
        }
        events
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

const OBSERVED: &str = "day,value\n0,4\n5,4\n10,5\n15,5\n";

/// A no-op job spec: `count` sets × 2 replicates, batch `batch`, one target on `observed.csv`.
fn spec(count: u64, batch: u64, rows: u64) -> String {
    format!(
        "name = \"noop\"\nreplicates = 2\nseed = 3\nbatch_size = {batch}\n\
         [parameters]\nsampler = \"uniform\"\ncount = {count}\n\
         [parameters.space]\na = {{ min = 1.0, max = 5.0 }}\nb = {{ min = 0.0, max = 10.0 }}\n\
         [model]\nname = \"noop\"\nrows = {rows}\n\
         [[targets]]\nname = \"cases\"\noutput = \"signal\"\ncolumn = \"value\"\n\
         data = \"observed.csv\"\ndata_column = \"value\"\ndata_time_column = \"day\"\n\
         aggregation = \"likelihood\"\nloss = \"poisson\"\n"
    )
}

fn submission(spec: &str) -> Value {
    json!({ "spec": spec, "files": { "observed.csv": OBSERVED } })
}

/// Runs `spec` with the CLI in a fresh folder; returns its output folder.
fn cli_run(dir: &Path, spec: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("job.toml"), spec).unwrap();
    std::fs::write(dir.join("observed.csv"), OBSERVED).unwrap();
    let out = simsweep(&["run", "job.toml", "--workers", "2"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join("output")
}

fn assert_same_rows(a: &Path, b: &Path) {
    for dataset in ["model_outputs/signal", "targets/cases"] {
        assert_eq!(read_dataset(&a.join(dataset)), read_dataset(&b.join(dataset)), "{dataset}");
    }
}

#[test]
fn submit_watch_and_fetch_match_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--workers", "2"]);
    assert_eq!(server.get("/healthz"), (200, json!({ "status": "ok" })));
    assert_eq!(server.get("/readyz").0, 200);

    let spec = spec(60, 10, 20);
    let (status, job) = server.submit(&submission(&spec), Some("key-1"));
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(id, "j000001");
    // The same key: the same job, not a second one.
    let (status, again) = server.submit(&submission(&spec), Some("key-1"));
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));

    let events = server.events(&id, None);
    let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{events:?}");
    let states: Vec<&str> =
        events.iter().filter(|e| e.1 == "state").map(|e| e.2["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    let committed: Vec<u64> = events
        .iter()
        .filter(|e| e.1 == "batch_committed")
        .map(|e| e.2["progress"]["batches_committed"].as_u64().unwrap())
        .collect();
    assert_eq!(committed, (1..=6).collect::<Vec<_>>());
    // Reconnecting after event 3 gives exactly the events after it.
    let rest = server.events(&id, Some(3));
    assert_eq!(rest, events[3..].to_vec());

    let (status, job) = server.get(&format!("/v1/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["progress"]["simulations_committed"], 120);
    assert_eq!(job["progress"]["finished"], true);
    let (_, list) = server.get("/v1/jobs?state=succeeded");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);

    // Row for row what the CLI writes for the same spec.
    let cli_dir = data.path().join("cli");
    let cli_out = cli_run(&cli_dir, &spec);
    assert_same_rows(&data.path().join("jobs").join(&id).join("output"), &cli_out);

    let (status, best) = server.get(&format!("/v1/jobs/{id}/best?target=cases&k=3"));
    assert_eq!(status, 200, "{best}");
    let losses: Vec<f64> = best["targets"][0]["best"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 3);
    let a = &best["targets"][0]["best"][0]["parameters"]["a"];
    assert!(a.as_f64().is_some_and(|a| (1.0..=5.0).contains(&a)), "a number in its range: {a}");
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(cli_out.join("summary.json")).unwrap()).unwrap();
    let cli_best = summary.to_string();
    assert!(cli_best.contains(best["targets"][0]["best"][0]["param_id"].as_str().unwrap()));

    // The committed tables: the list, one batch file as on disk, a whole table as Arrow IPC.
    let (status, tables) = server.get(&format!("/v1/jobs/{id}/tables"));
    assert_eq!(status, 200, "{tables}");
    let names: Vec<&str> =
        tables["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["failures", "model_outputs/signal", "targets/cases"]);
    assert_eq!(tables["tables"][2]["rows"], 60);
    let output = data.path().join("jobs").join(&id).join("output");
    let mut resp = server
        .agent
        .get(&server.url(&format!("/v1/jobs/{id}/tables/targets/cases/batch-00002.parquet")))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.body_mut().read_to_vec().unwrap();
    assert_eq!(bytes, std::fs::read(output.join("targets/cases/batch-00002.parquet")).unwrap());
    let resp = server
        .agent
        .get(&server.url(&format!("/v1/jobs/{id}/tables/targets/cases")))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let reader =
        arrow::ipc::reader::StreamReader::try_new(resp.into_body().into_reader(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let streamed = arrow::compute::concat_batches(&schema, &batches).unwrap();
    assert_eq!(streamed, read_dataset(&output.join("targets/cases")));
    assert_eq!(server.get(&format!("/v1/jobs/{id}/tables/targets/nothing")).0, 404);
    assert_eq!(
        server.get(&format!("/v1/jobs/{id}/tables/targets/cases/batch-00099.parquet")).0,
        404
    );
    assert_eq!(server.get(&format!("/v1/jobs/{id}/tables/../../registry.sqlite")).0, 404);
    let (status, failures) = server.get(&format!("/v1/jobs/{id}/failures"));
    assert_eq!((status, &failures["by_kind"]), (200, &json!({})));
    let (status, openapi) = server.get("/v1/openapi.json");
    assert_eq!((status, &openapi["openapi"]), (200, &json!("3.1.0")));
    for path in ["/v1/jobs", "/v1/jobs/{id}/events", "/v1/jobs/{id}/tables/{name}"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} not documented");
    }

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains("simsweep_jobs{state=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("simsweep_batches_committed_total 6"), "{metrics}");
    assert!(metrics.contains("simsweep_queue_length 0"), "{metrics}");
    assert!(metrics.contains("simsweep_simulations_committed_total 120"), "{metrics}");
    assert!(metrics.contains("simsweep_simulations_failed_total 0"), "{metrics}");
    assert!(
        metrics.contains("simsweep_batch_commit_interval_seconds_bucket{le=\"+Inf\"} 6")
            && metrics.contains("simsweep_batch_commit_interval_seconds_count 6"),
        "{metrics}"
    );
}

/// A raw HTTP/1.1 request (to set `Host` and `Origin` freely); returns the status.
fn raw(addr: &str, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn bad_specs_paths_models_hosts_and_origins_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[]);
    let good = spec(10, 5, 5);
    let refused = |spec: &str, needle: &str| {
        let (status, problem) = server.submit(&submission(spec), None);
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["type"], "https://simsweep.dev/problems/invalid-spec");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{needle:?} not in {detail}");
    };
    refused("replicates = [", "job.toml:1:");
    refused(&good.replace("replicates = 2", "replicates = 0"), "replicates");
    refused(
        &good.replace("data = \"observed.csv\"", "data = \"../observed.csv\""),
        "targets[0].data",
    );
    refused(&good.replace("data = \"observed.csv\"", "data = \"/etc/passwd\""), "targets[0].data");
    refused(&format!("output = \"/tmp/x\"\n{good}"), "field `output`");
    refused(&format!("output = \"../x\"\n{good}"), "field `output`");
    refused(
        &good.replace("name = \"noop\"\nrows = 5", "command = [\"python3\", \"m.py\"]"),
        "cannot give a command",
    );
    refused(
        &good.replace("min = 1.0, max = 5.0", "min = 5.0, max = 1.0"),
        "parameters.space.a.min",
    );
    // A file that would leave the job's folder.
    let (status, problem) =
        server.submit(&json!({ "spec": good, "files": { "../observed.csv": OBSERVED } }), None);
    assert_eq!(status, 422, "{problem}");
    // Validation alone: answers, creates nothing.
    let (status, ok) =
        server.post("/v1/jobs:validate", "application/json", &submission(&good).to_string(), None);
    assert_eq!((status, &ok["valid"]), (200, &json!(true)), "{ok}");
    assert_eq!(server.get("/v1/jobs").1, json!({ "jobs": [] }));
    assert_eq!(tree(&data.path().join("jobs")), Vec::<String>::new());
    // The body as TOML: the spec alone (no files: its data file is missing).
    let (status, problem) = server.post("/v1/jobs", "application/toml", &good, None);
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("observed.csv"), "{problem}");

    let addr = server.addr.clone();
    let port = addr.rsplit(':').next().unwrap();
    let get = |host: &str| {
        raw(&addr, &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    };
    assert_eq!(get(&addr), 200);
    assert_eq!(get(&format!("localhost:{port}")), 200);
    assert_eq!(get("evil.example:80"), 421);
    assert_eq!(get(&format!("evil.example:{port}")), 421);
    let post = |origin: &str| {
        let body = submission(&good).to_string();
        raw(
            &addr,
            &format!(
                "POST /v1/jobs:validate HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert_eq!(post("http://evil.example"), 403);
    assert_eq!(post(&format!("http://{addr}")), 200);
    assert_eq!(server.get("/v1/nothing").0, 404);
    assert_eq!(server.get("/v1/jobs/j999999").0, 404);
}

#[test]
fn queue_cancel_resume_delete_and_a_killed_daemon() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &["--max-running", "1", "--workers", "1"]);
    // Long enough to act on while it runs: 1,000 batches.
    let long = spec(100_000, 100, 100);
    let (_, a) = server.submit(&submission(&long), None);
    let a = a["id"].as_str().unwrap().to_string();
    let (_, b) = server.submit(&submission(&spec(10, 5, 5)), None);
    let b = b["id"].as_str().unwrap().to_string();
    server.wait_state(&a, "running", 10);
    server.wait_batches(&a, 1, 30);
    // One slot: the second job waits; cancelled while queued, it never runs. A job of higher
    // priority submitted after it would start before it.
    assert_eq!(server.state(&b), "queued");
    let urgent =
        json!({ "spec": spec(10, 5, 20), "files": { "observed.csv": OBSERVED }, "priority": 5 });
    let (_, c) = server.submit(&urgent, None);
    let c = c["id"].as_str().unwrap().to_string();
    let (_, queued) = server.get("/v1/jobs?state=queued");
    let ids: Vec<&str> =
        queued["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.as_str(), c.as_str()], "listed in submission order");
    // Its rate and ETA, once the run has reported what it finished (every 0.5 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = loop {
        let (_, running) = server.get(&format!("/v1/jobs/{a}"));
        if running.get("eta_s").is_some() || Instant::now() > deadline {
            break running;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(running["rate_simulations_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{running}");
    assert!(running["eta_s"].as_f64().is_some_and(|s| s >= 0.0), "{running}");
    assert_eq!(server.post(&format!("/v1/jobs/{b}/cancel"), "text/plain", "", None).0, 202);
    assert_eq!(server.state(&b), "cancelled");
    assert_eq!(
        server.agent.delete(&server.url(&format!("/v1/jobs/{b}"))).call().unwrap().status(),
        204
    );
    assert_eq!(server.get(&format!("/v1/jobs/{b}")).0, 404);
    assert!(!data.path().join("jobs").join(&b).exists());
    // A running job cannot be deleted.
    let resp = server.agent.delete(&server.url(&format!("/v1/jobs/{a}"))).call().unwrap();
    assert_eq!(resp.status(), 409);

    // Graceful cancel: stops at a batch boundary, resumable; the slot goes to the job of higher
    // priority first.
    assert_eq!(server.post(&format!("/v1/jobs/{a}/cancel"), "text/plain", "", None).0, 202);
    let job = server.wait_state(&a, "cancelled", 30);
    let done_c = server.wait_state(&c, "succeeded", 30);
    assert_eq!(done_c["state"], "succeeded");
    let done = job["progress"]["batches_committed"].as_u64().unwrap();
    assert!((1..1000).contains(&done), "{job}");
    // Resume, then a forced cancel: back within the hard-stop bound.
    assert_eq!(server.post(&format!("/v1/jobs/{a}/resume"), "text/plain", "", None).0, 202);
    server.wait_batches(&a, done + 1, 30);
    let asked = Instant::now();
    assert_eq!(
        server.post(&format!("/v1/jobs/{a}/cancel?force=true"), "text/plain", "", None).0,
        202
    );
    server.wait_state(&a, "cancelled", 10);
    // The hard stop returns within 2 s; the rest is HTTP and polling on a loaded machine.
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    let done =
        server.get(&format!("/v1/jobs/{a}")).1["progress"]["batches_committed"].as_u64().unwrap();
    // Resume, and kill the daemon outright while it runs.
    assert_eq!(server.post(&format!("/v1/jobs/{a}/resume"), "text/plain", "", None).0, 202);
    server.wait_batches(&a, done + 1, 30);
    server.kill();

    // Started again: the job resumes by itself and ends as an uninterrupted run would.
    let server = Server::start(data.path(), &["--max-running", "1", "--workers", "2"]);
    server.wait_state(&a, "succeeded", 120);
    let events = server.events(&a, None);
    let restarted =
        events.iter().any(|e| e.1 == "state" && e.2["reason"] == "the daemon restarted");
    assert!(restarted, "{events:?}");
    let cli_out = cli_run(&data.path().join("cli"), &long);
    assert_same_rows(&data.path().join("jobs").join(&a).join("output"), &cli_out);
}

#[test]
fn the_cli_as_a_client_and_a_graceful_stop() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path(), &["--workers", "2"]);
    let url = format!("http://{}", server.addr);
    let dir = data.path().join("client");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("job.toml"), spec(40, 10, 20)).unwrap();
    std::fs::write(dir.join("observed.csv"), OBSERVED).unwrap();
    let out = simsweep(&["submit", "job.toml", "--server", &url], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("submitted as j000001"), "{stdout}");
    let out = simsweep(&["watch", "j000001", "--server", &url], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("j000001: succeeded"));
    let out = simsweep(&["jobs", "--server", &url], &dir);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("j000001") && listed.contains("succeeded") && listed.contains("4/4"),
        "{listed}"
    );
    // Cancelling a finished job: refused by the server, exit 2 with its reason.
    let out = simsweep(&["cancel", "j000001", "--server", &url], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("succeeded, not queued or running"));
    // A spec the server refuses: exit 2 with the located reason.
    std::fs::write(
        dir.join("bad.toml"),
        spec(40, 10, 10).replace("replicates = 2", "replicates = 0"),
    )
    .unwrap();
    let out = simsweep(&["submit", "bad.toml", "--server", &url], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replicates"));
    // No server there: exit 3.
    let out = simsweep(&["jobs", "--server", "http://127.0.0.1:9"], &dir);
    assert_eq!(out.status.code(), Some(3));

    // A job's warnings are kept with it: day 10 is observed, the model reports days 0..=9.
    let (_, job) = server.submit(&submission(&spec(10, 5, 10)), None);
    let warned = job["id"].as_str().unwrap().to_string();
    server.wait_state(&warned, "succeeded", 30);
    let (status, logs) = server.get(&format!("/v1/jobs/{warned}/logs"));
    assert_eq!(status, 200);
    let lines = logs["logs"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"].as_str().unwrap().contains("loss set to null")
            && l["message"].as_str().unwrap().contains("observed time 10")),
        "{logs}"
    );
    let (_, clean) = server.get("/v1/jobs/j000001/logs");
    assert_eq!(clean["logs"], json!([]));

    // SIGTERM while a job runs: it stops at a batch boundary, is queued again, and the next
    // start finishes it.
    let (_, job) = server.submit(&submission(&spec(40_000, 100, 200)), None);
    let id = job["id"].as_str().unwrap().to_string();
    server.wait_batches(&id, 1, 30);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let server = Server::start(data.path(), &["--workers", "2"]);
    let events = server.events(&id, None);
    let reasons: Vec<&str> =
        events.iter().filter(|e| e.1 == "state").map(|e| e.2["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        ["submitted", "started", "daemon stopped", "started", "every batch committed"],
        "{events:?}"
    );
}

#[test]
fn tokens_and_the_servers_model_allow_list() {
    let data = tempfile::tempdir().unwrap();
    // A token file others may read is refused; beyond loopback a token is required.
    let token_file = data.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = data.path().to_str().unwrap();
    let token_arg = token_file.to_str().unwrap();
    let out = simsweep(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--token-file", token_arg],
        data.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    let out = simsweep(&["serve", "--listen", "0.0.0.0:0", "--data-dir", dir], data.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    // A token file created by the daemon: 0600, 64 hex characters.
    let created = data.path().join("new-token");
    let models = data.path().join("models.toml");
    let model_py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python-sir/model.py");
    let state = data.path().join("fault-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        &models,
        format!(
            "[models.python_sir]\ncommand = [\"python3\", {:?}]\ntimeout_seconds = 60\n\
             [models.python_sir.settings]\npopulation = 763\ninitial_infected = 1\ndays = 14\n\
             steps_per_day = 4\n\
             [models.faults]\ncommand = [\"python3\", {:?}]\nmax_attempts = 1\n\
             env = {{ FAULT_STATE_DIR = {:?} }}\n",
            model_py.to_str().unwrap(),
            fault_model_path().to_str().unwrap(),
            state.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = Server::start(
        data.path(),
        &["--token-file", created.to_str().unwrap(), "--models", models.to_str().unwrap()],
    );
    let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&created).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    // Without the token, with a wrong one, with the right one; /healthz needs none.
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/v1/jobs").0, 401);
    let with = |t: &str| {
        server
            .agent
            .get(&server.url("/v1/jobs"))
            .header("Authorization", &format!("Bearer {t}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with(&format!("{}x", &token[..63])), 401);
    assert_eq!(with(&token), 200);

    // A job naming the server's model runs it; naming it with a command of its own is refused.
    let spec = format!(
        "name = \"py\"\nreplicates = 2\nbatch_size = 5\n[parameters]\nsampler = \"uniform\"\n\
         count = 10\n[parameters.space]\nbeta = {{ min = 1.0, max = 3.0 }}\n\
         gamma = {{ min = 0.3, max = 1.0 }}\n[model]\nname = \"python_sir\"\n"
    );
    let post = |spec: &str| {
        let mut resp = server
            .agent
            .post(&server.url("/v1/jobs"))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/toml")
            .send(spec)
            .unwrap();
        let status = resp.status().as_u16();
        (status, serde_json::from_str::<Value>(&resp.body_mut().read_to_string().unwrap()).unwrap())
    };
    let (status, problem) = post(
        &spec.replace("name = \"python_sir\"\n", "name = \"python_sir\"\ntimeout_seconds = 5\n"),
    );
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("configured by the server"), "{problem}");
    let (status, job) = post(&spec);
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let mut resp = server
            .agent
            .get(&server.url(&format!("/v1/jobs/{id}")))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let job: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        if job["state"] != "queued" && job["state"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state["state"], "succeeded", "{state}");
    assert_eq!(state["progress"]["simulations_committed"], 20);
    let rows =
        read_dataset(&data.path().join("jobs").join(id).join("output/model_outputs/prevalence"));
    assert_eq!(rows.num_rows(), 20 * 15, "10 sets × 2 replicates × days 0..=14");

    // Failures: counted by kind in the job's failures, its events and the metrics.
    let params = "mode,x\nfail_odd_seed,1.0\nfail_odd_seed,2.0\nfail_odd_seed,3.0\n";
    let faults = json!({
        "spec": "name = \"faults\"\nreplicates = 4\n[parameters]\nfile = \"params.csv\"\n\
                 [model]\nname = \"faults\"\n",
        "files": { "params.csv": params },
    });
    let mut resp = server
        .agent
        .post(&server.url("/v1/jobs"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(faults.to_string())
        .unwrap();
    let job: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{job}");
    let id = job["id"].as_str().unwrap();
    let authed = |path: &str| -> Value {
        let mut resp = server
            .agent
            .get(&server.url(path))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while authed(&format!("/v1/jobs/{id}"))["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "{}", authed(&format!("/v1/jobs/{id}")));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Which of the 12 replicates' seeds are odd: from the written failure rows.
    let failed = read_dataset(&data.path().join("jobs").join(id).join("output/failures"));
    let n = failed.num_rows() as u64;
    assert!((1..12).contains(&n), "{n} of 12 failed");
    let failures = authed(&format!("/v1/jobs/{id}/failures"));
    assert_eq!(failures["by_kind"]["error"]["count"], n, "{failures}");
    let first = failures["by_kind"]["error"]["first_messages"][0].as_str().unwrap();
    assert!(first.contains("odd seed"), "{failures}");
    let metrics = authed("/metrics");
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(&format!("simsweep_failures_total{{kind=\"error\"}} {n}")),
        "{metrics}"
    );
    let job = authed(&format!("/v1/jobs/{id}"));
    assert_eq!(job["progress"]["failed"], n);
}

#[test]
fn allowed_folders_and_the_body_limit() {
    let data = tempfile::tempdir().unwrap();
    let shared = data.path().join("shared");
    let outside = data.path().join("outside");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(shared.join("observed.csv"), OBSERVED).unwrap();
    std::fs::write(outside.join("observed.csv"), OBSERVED).unwrap();
    std::os::unix::fs::symlink(outside.join("observed.csv"), shared.join("link.csv")).unwrap();
    let server = Server::start(
        &data.path().join("d"),
        &["--allow-dir", shared.to_str().unwrap(), "--max-parameter-sets", "30"],
    );
    let with_data = |path: &Path| {
        spec(10, 5, 20)
            .replace("data = \"observed.csv\"", &format!("data = {:?}", path.to_str().unwrap()))
    };
    // A file in the allowed folder, by absolute path: accepted and run.
    let (status, job) =
        server.post("/v1/jobs", "application/toml", &with_data(&shared.join("observed.csv")), None);
    assert_eq!(status, 201, "{job}");
    server.wait_state(job["id"].as_str().unwrap(), "succeeded", 30);
    // Outside it, directly or through a link inside it: refused.
    for path in [
        outside.join("observed.csv"),
        shared.join("link.csv"),
        shared.join("../outside/observed.csv"),
    ] {
        let (status, problem) =
            server.post("/v1/jobs", "application/toml", &with_data(&path), None);
        assert_eq!(status, 422, "{path:?}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("or an --allow-dir"), "{problem}");
    }
    // A job over the server's limit of parameter sets: 422, nothing created.
    let (status, problem) = server.post(
        "/v1/jobs",
        "application/toml",
        &with_data(&shared.join("observed.csv")).replace("count = 10", "count = 31"),
        None,
    );
    assert_eq!(
        (status, &problem["type"]),
        (422, &json!("https://simsweep.dev/problems/too-large")),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("31 parameter sets, more than the 30"),
        "{problem}"
    );
    // A body over 16 MiB: 413, nothing created.
    let big = format!("# {}\n{}", "x".repeat(17 << 20), spec(10, 5, 20));
    let (status, _) = server.post("/v1/jobs", "application/toml", &big, None);
    assert_eq!(status, 413);
    assert_eq!(server.get("/v1/jobs").1["jobs"].as_array().unwrap().len(), 1);
}
