//! The daemon's web page in a real browser: headless Chromium (Debian package `chromium`,
//! installed by `scripts/setup-test-env.sh`), driven over the DevTools protocol. The job list
//! and a job's page load with no console errors; a running job's progress bar moves while the
//! page stays open (Server-Sent Events); the best parameter sets appear; a screenshot is kept.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// `chromium`, or a loud failure naming the setup script.
fn chromium() -> &'static str {
    let found = Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium is not installed: run scripts/setup-test-env.sh (apt package `chromium`)"
    );
    "chromium"
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(data: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simsweep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().into();
    Daemon { child, addr }
}

/// A headless Chromium and one page, over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Console errors and uncaught exceptions seen so far.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--window-size=1100,700", "about:blank"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = None;
        for line in stderr.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                port = rest.split('/').next().map(str::to_string);
                break;
            }
        }
        // Keep draining its log (a full pipe would stall the browser).
        std::thread::spawn(move || stderr.for_each(drop));
        let port = port.expect("chromium printed its DevTools address");
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let targets: Value = serde_json::from_str(
            &agent
                .get(&format!("http://127.0.0.1:{port}/json/list"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
        let mut browser = Browser { child, ws, next_id: 0, errors: Vec::new(), _profile: profile };
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a DevTools command and returns its result, noting console errors on the way.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().unwrap() else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            match v["method"].as_str() {
                Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                    self.errors.push(v["params"]["args"].to_string())
                }
                Some("Runtime.exceptionThrown") => {
                    self.errors.push(v["params"]["exceptionDetails"].to_string())
                }
                Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => {
                    self.errors.push(v["params"]["entry"]["text"].to_string())
                }
                _ => {}
            }
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluates `expression` (returning JSON-able data) in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }));
        r["result"]["value"].clone()
    }

    /// Polls `expression` until `done` holds for its value (up to `secs`).
    fn wait_for(&mut self, expression: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.eval(expression);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{expression}: still {v} after {secs} s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        decode_base64(r["data"].as_str().unwrap())
    }
}

/// Standard base64 (the DevTools protocol's screenshots).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |n, &v| (n << 6) | u32::from(v)) << (6 * (4 - c.len()));
            let all = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            all.into_iter().take(c.len() - 1)
        })
        .collect()
}

fn submit(addr: &str, count: u64, rows: u64) -> String {
    let spec = format!(
        "name = \"page\"\nreplicates = 2\nbatch_size = 50\n[parameters]\nsampler = \"uniform\"\n\
         count = {count}\n[parameters.space]\na = {{ min = 1.0, max = 5.0 }}\n\
         b = {{ min = 0.0, max = 10.0 }}\n[model]\nname = \"noop\"\nrows = {rows}\n\
         [[targets]]\nname = \"cases\"\noutput = \"signal\"\ncolumn = \"value\"\n\
         data = \"observed.csv\"\ndata_column = \"value\"\ndata_time_column = \"day\"\n\
         aggregation = \"likelihood\"\nloss = \"poisson\"\n"
    );
    let body = json!({ "spec": spec, "files": { "observed.csv": "day,value\n0,4\n5,4\n10,5\n" } });
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut resp = agent
        .post(&format!("http://{addr}/v1/jobs"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let job: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    job["id"].as_str().unwrap().to_string()
}

#[test]
fn the_page_shows_live_progress_and_the_best_sets_without_console_errors() {
    let data = tempfile::tempdir().unwrap();
    let daemon = start_daemon(data.path());
    // A job long enough to watch (thousands of batches), and a short one that finishes.
    let short = submit(&daemon.addr, 100, 20);
    let mut browser = Browser::start();
    let base = format!("http://{}/", daemon.addr);

    // The short job's page: finished, its best sets listed.
    browser.navigate(&format!("{base}#/jobs/{short}"));
    let state = format!("document.getElementById('state-{short}')?.textContent");
    browser.wait_for(&state, 30, |v| v == "succeeded");
    browser.navigate(&format!("{base}#/"));
    browser.navigate(&format!("{base}#/jobs/{short}"));
    let best_rows = "document.querySelectorAll('table.best tr').length";
    let rows = browser.wait_for(best_rows, 10, |v| v.as_u64().unwrap_or(0) > 1);
    assert_eq!(rows, 11, "a header and the 10 best sets");
    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 10_000, "{} bytes", png.len());
    std::fs::write(data.path().join("job-page.png"), &png).unwrap();

    // A running job: its bar moves while the page stays open (no reload).
    let long = submit(&daemon.addr, 2_000_000, 200);
    browser.navigate(&format!("{base}#/"));
    let bar = format!(
        "(() => {{ const b = document.getElementById('bar-{long}'); \
         return b ? [b.value, Number(b.dataset.updates || 0)] : null; }})()"
    );
    let first = browser.wait_for(&bar, 30, |v| v[1].as_u64().unwrap_or(0) >= 1);
    let later = browser.wait_for(&bar, 30, |v| {
        v[0].as_f64().unwrap_or(0.0) > first[0].as_f64().unwrap() && v[1].as_u64().unwrap() > 1
    });
    assert!(later[0].as_f64().unwrap() > first[0].as_f64().unwrap(), "{first} → {later}");
    let states = format!("document.getElementById('state-{short}').textContent");
    assert_eq!(browser.eval(&states), "succeeded");
    assert_eq!(browser.errors, Vec::<String>::new(), "console errors");
    // A page that fails to load its job says so (and that is no script error).
    browser.navigate(&format!("{base}#/jobs/j999999"));
    let text = browser.wait_for("document.getElementById('main').textContent", 10, |v| {
        v.as_str().is_some_and(|t| t.contains("Cannot load"))
    });
    assert!(text.as_str().unwrap().contains("no job j999999"), "{text}");
}
