//! The daemon's web page in a real browser: headless Chromium (Debian package `chromium`,
//! installed by `scripts/setup-test-env.sh`), driven over the DevTools protocol. The job list
//! and a job's page load with no console errors; a running job's progress bar moves while the
//! page stays open (Server-Sent Events); the best parameter sets appear; a screenshot is kept.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::browser::Browser;
use serde_json::{json, Value};

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
    // Its report, linked from the page: the fit of target `cases`, one point per observation.
    let href = browser.eval("document.getElementById('report-link').getAttribute('href')");
    assert_eq!(href, format!("/v1/jobs/{short}/report"));
    browser.navigate(&format!("http://{}{}", daemon.addr, href.as_str().unwrap()));
    let points =
        "document.querySelectorAll('figure[data-plot=fit][data-target=cases] circle').length";
    browser.wait_for(points, 30, |v| v.as_u64() == Some(3));
    assert_eq!(browser.eval("document.scripts.length").as_u64(), Some(0));

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
