//! `simsweep report`: the real reports of the flu and measles examples opened in headless
//! Chromium (no console error; the fit plot's SVG has the observations as points and the model
//! bands, checked in the DOM and in the pixels drawn), and bad input refused with exit code 2
//! and nothing written.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::browser::Browser;
use common::*;

/// Copies the example folder `name` (its job and data files, not an output) into `dir`.
fn copy_example(name: &str, dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let to = dir.join(name);
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    to
}

fn run_ok(args: &[&str], dir: &Path) -> String {
    let out = simsweep(args, dir);
    assert!(
        out.status.success(),
        "simsweep {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Counts the pixels of the fit plot of `target`, drawn by the browser into a canvas, that are
/// close to each colour: `[points (black), 95% band, 50% band, median line]`.
fn fit_pixels(browser: &mut Browser, target: &str) -> Vec<u64> {
    let js = format!(
        "(async () => {{
            const svg = document.querySelector('figure[data-plot=fit][data-target={target}] svg');
            const text = new XMLSerializer().serializeToString(svg);
            const img = new Image();
            img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(text);
            await img.decode();
            const c = document.createElement('canvas');
            c.width = img.width; c.height = img.height;
            const g = c.getContext('2d');
            g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            const want = [[0,0,0],[198,219,239],[107,174,214],[8,81,156]];
            const n = want.map(() => 0);
            for (let i = 0; i < d.length; i += 4) {{
                want.forEach((w, k) => {{
                    if (Math.abs(d[i]-w[0]) + Math.abs(d[i+1]-w[1]) + Math.abs(d[i+2]-w[2]) < 24) n[k]++;
                }});
            }}
            return n;
        }})()"
    );
    let v = browser.eval_async(&js);
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Opens `report` and checks its fit plot of `target`: `observations` points, the bands, no
/// console error. Returns a screenshot (PNG).
fn check_in_browser(report: &Path, target: &str, observations: u64) -> Vec<u8> {
    let mut browser = Browser::start();
    browser.navigate(&format!("file://{}", report.display()));
    browser.wait_for("document.readyState", 20, |v| v == "complete");
    let fit = format!("figure[data-plot=fit][data-target={target}] svg");
    let circles = browser.eval(&format!("document.querySelectorAll('{fit} circle').length"));
    assert_eq!(circles.as_u64(), Some(observations), "one point per observation");
    let polygons = browser.eval(&format!("document.querySelectorAll('{fit} polygon').length"));
    assert!(polygons.as_u64().unwrap() >= 2, "the 95% and 50% bands: {polygons}");
    let lines = browser.eval(&format!("document.querySelectorAll('{fit} polyline').length"));
    assert!(lines.as_u64().unwrap() >= 1, "the median: {lines}");
    // No script, nothing loaded from elsewhere.
    assert_eq!(browser.eval("document.scripts.length").as_u64(), Some(0));
    let external = browser.eval(
        "[...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)\
         .filter(u => !u.startsWith('data:') && !u.startsWith('file:') && !u.includes('#')).length",
    );
    assert_eq!(external.as_u64(), Some(0), "nothing fetched from elsewhere");
    let pixels = fit_pixels(&mut browser, target);
    assert!(pixels[0] > 14 * observations.min(100), "black points drawn: {pixels:?}");
    assert!(pixels[1] > 500 && pixels[2] > 500, "both bands drawn: {pixels:?}");
    assert!(pixels[3] > 100, "the median line drawn: {pixels:?}");
    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(browser.errors, Vec::<String>::new(), "console errors");
    png
}

#[test]
fn the_flu_and_measles_reports_show_data_points_and_model_bands() {
    let root = tempfile::tempdir().unwrap();

    // The flu example as it is (sweep and refine step).
    let flu = copy_example("flu-boarding-school", root.path());
    run_ok(&["run", "job.toml"], &flu);
    let svg_dir = root.path().join("svgs");
    let printed =
        run_ok(&["report", "output", "--top", "4", "--svg-dir", svg_dir.to_str().unwrap()], &flu);
    let report = flu.join("output/report.html");
    assert_eq!(printed.trim(), "output/report.html");
    let html = fs::read_to_string(&report).unwrap();
    assert!(html.contains("refined losses"), "the refine step's best are shown");
    let mut svgs: Vec<String> = fs::read_dir(&svg_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    svgs.sort();
    for name in
        ["in_bed-fit.svg", "in_bed-loss-beta.svg", "in_bed-map-beta-gamma.svg", "throughput.svg"]
    {
        assert!(svgs.contains(&name.to_string()), "{name} in {svgs:?}");
    }
    let png = check_in_browser(&report, "in_bed", 14);
    assert!(png.len() > 20_000, "{} bytes", png.len());

    // The measles example, with fewer parameter sets (the same model, data and targets).
    let measles = copy_example("measles-london", root.path());
    let job = fs::read_to_string(measles.join("job.toml")).unwrap();
    let count = job.lines().find(|l| l.starts_with("count = ")).expect("a count").to_string();
    fs::write(measles.join("job.toml"), job.replace(&count, "count = 60")).unwrap();
    run_ok(&["run", "job.toml"], &measles);
    run_ok(&["report", "output"], &measles);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(measles.join("output/manifest.json")).unwrap()).unwrap();
    let obs = &manifest["observations"][0];
    let target = obs["target"].as_str().unwrap();
    let n = obs["observed"].as_array().unwrap().len() as u64;
    assert!(n > 500, "weekly cases of 1944–1964: {n}");
    check_in_browser(&measles.join("output/report.html"), target, n);
}

#[test]
fn bad_input_is_refused_with_exit_code_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    // Not an output.
    fs::create_dir(dir.path().join("notes")).unwrap();
    fs::write(dir.path().join("notes/readme.txt"), "hello").unwrap();
    let out = simsweep(&["report", "notes"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes") && err.contains("not a simsweep output"), "{err}");
    assert!(!dir.path().join("notes/report.html").exists());
    let out = simsweep(&["report", "missing"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such folder"));

    // An output with no committed batch: a run cancelled before its first batch.
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(&small)).unwrap();
    let cancel = simsweep::CancelToken::new();
    cancel.cancel();
    let report = simsweep::run(
        &job,
        &simsweep::RunOptions::default(),
        std::sync::Arc::new(simsweep::NoProgress),
        cancel,
    )
    .unwrap();
    assert_eq!(report.progress.batches_committed, 0);
    let before = tree(&small.join("output"));
    let out = simsweep(&["report", "output"], &small);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no batch committed yet"));
    assert_eq!(tree(&small.join("output")), before, "nothing written");

    // A target whose every loss is null: every replicate fails.
    let faults = dir.path().join("faults");
    fs::create_dir(&faults).unwrap();
    fs::write(faults.join("obs.csv"), "k,value\n0,1.0\n1,2.0\n").unwrap();
    let target = "[[targets]]\nname = \"values\"\noutput = \"values\"\ncolumn = \"value\"\n\
                  time_column = \"k\"\ndata = \"obs.csv\"\ndata_column = \"value\"\n\
                  data_time_column = \"k\"\naggregation = \"annealed\"\nloss = \"mse\"\n";
    let state = tempfile::tempdir().unwrap();
    write_fault_job_with(
        &faults,
        state.path(),
        &[("error", 1.0), ("error", 2.0)],
        1,
        "max_attempts = 1",
        target,
    );
    simsweep(&["run", "job.toml"], &faults);
    let before = tree(&faults.join("output"));
    let out = simsweep(&["report", "output"], &faults);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every loss of target `values` is null"), "{err}");
    assert_eq!(tree(&faults.join("output")), before, "nothing written");
    // --top 0 is refused.
    let out = simsweep(&["report", "output", "--top", "0"], &faults);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_sharded_and_a_partial_output_are_reported() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Sharded: two shards run by hand into one output folder.
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    for shard in ["0", "1"] {
        run_ok(
            &["run", "job.toml", "--shards", "2", "--shard", shard, "--batch-size", "5"],
            dir.path(),
        );
    }
    run_ok(&["report", "output"], dir.path());
    let html = fs::read_to_string(dir.path().join("output/report.html")).unwrap();
    assert!(html.contains("<th>shards</th><td>2 folders</td>"), "both shards read");
    assert!(html.contains("23 parameter sets scored"), "every set of both shards");
    assert!(html.contains("data-plot=\"fit\" data-target=\"prevalence\""));

    // Partial: stopped after its first committed batch.
    struct StopAfterFirst(simsweep::CancelToken, AtomicBool);
    impl simsweep::ProgressObserver for StopAfterFirst {
        fn on_event(&self, event: &simsweep::ProgressEvent) {
            if matches!(event, simsweep::ProgressEvent::BatchCommitted { .. })
                && !self.1.swap(true, Ordering::SeqCst)
            {
                self.0.cancel();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let job = simsweep::load_job(&SmallJob::default().write(dir.path())).unwrap();
    let cancel = simsweep::CancelToken::new();
    let options = simsweep::RunOptions {
        batch_size: std::num::NonZeroUsize::new(5).unwrap(),
        workers: std::num::NonZeroUsize::new(1).unwrap(),
        ..simsweep::RunOptions::default()
    };
    let observer = Arc::new(StopAfterFirst(cancel.clone(), AtomicBool::new(false)));
    let report = simsweep::run(&job, &options, observer, cancel).unwrap();
    assert!(report.cancelled);
    let committed = report.progress.batches_committed;
    assert!((1..5).contains(&committed), "{committed} batches");
    run_ok(&["report", "output"], dir.path());
    let html = fs::read_to_string(dir.path().join("output/report.html")).unwrap();
    assert!(html.contains("partial: committed batches only"));
    assert!(html.contains(&format!("{committed} of 5 committed")), "batches so far");
    assert!(html.contains(&format!("{} parameter sets scored", 5 * committed)));
    // --top beyond the cap and --svg-dir naming a file: refused, nothing written.
    fs::remove_file(dir.path().join("output/report.html")).unwrap();
    fs::write(dir.path().join("a-file"), "x").unwrap();
    for args in
        [&["report", "output", "--top", "51"][..], &["report", "output", "--svg-dir", "a-file"]]
    {
        let out = simsweep(args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!dir.path().join("output/report.html").exists());
    }
}
