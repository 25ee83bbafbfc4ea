//! simsweep never deletes what it did not write: `--restart` removes only simsweep's own files
//! (its manifest, commit log, summary, batch files and temporary files) and leaves a user's
//! files — in the output root and in every dataset folder — where they are; a directory whose
//! `manifest.json` simsweep did not write is "not a simsweep output", never "damaged", and
//! nothing in it is touched, `--restart` included.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Every file and folder below `dir` with its contents (folders as `None`), sorted.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.push((name, None));
                walk(base, &p, out);
            } else {
                out.push((name, Some(fs::read(&p).unwrap())));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

const USER_FILES: [&str; 7] = [
    "notes.md",
    "targets/README.txt",
    "targets/prevalence/plot.png",
    "targets/my-own-target/data.csv",
    "model_outputs/prevalence/annotations.json",
    "failures/triage.txt",
    "model_outputs/extra/batch-7.parquet", // not one of simsweep's names (5 digits)
];

#[test]
fn restart_deletes_only_simsweeps_files() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let out = simsweep(&["run", "job.toml", "--batch-size", "5"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let output = dir.path().join("output");
    for (i, f) in USER_FILES.iter().enumerate() {
        let path = output.join(f);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("the user's file {i}")).unwrap();
    }
    let user_files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        USER_FILES.iter().map(|f| (f.to_string(), fs::read(dir.join(f)).unwrap())).collect()
    };
    let before = user_files(&output);

    // A finished run, restarted: same job again, from scratch.
    let out = simsweep(&["run", "job.toml", "--restart", "--batch-size", "7"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(user_files(&output), before, "every user file kept, unchanged");
    // simsweep's batch files are those of the new run only (batch size 7: 4 batches).
    assert_eq!(
        batch_files(&output.join("targets/prevalence")),
        [
            "batch-00000.parquet",
            "batch-00001.parquet",
            "batch-00002.parquet",
            "batch-00003.parquet",
            "plot.png"
        ]
    );

    // Restarting with another job (the spec changed): the same.
    SmallJob { replicates: 2, ..SmallJob::default() }.write(dir.path());
    let refused = simsweep(&["run", "job.toml"], dir.path());
    assert_eq!(refused.status.code(), Some(2));
    let out = simsweep(&["run", "job.toml", "--restart"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(user_files(&output), before);

    // A damaged manifest (simsweep's, truncated): --restart starts over, user files kept.
    let manifest = output.join("manifest.json");
    let text = fs::read(&manifest).unwrap();
    fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let damaged = simsweep(&["run", "job.toml"], dir.path());
    assert_eq!(damaged.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("the manifest is damaged"));
    let out = simsweep(&["run", "job.toml", "--restart"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(user_files(&output), before);
}

#[test]
fn a_manifest_simsweep_did_not_write_is_not_a_simsweep_output_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    SmallJob::default().write(dir.path());
    let project = dir.path().join("my-project");
    let files: [(&str, &[u8]); 4] = [
        ("manifest.json", br#"{"name": "my-web-app", "version": "2.1.0", "icons": []}"#),
        ("targets/important.csv", b"day,cases\n1,2\n"),
        ("model_outputs/run-1/batch-00000.parquet", b"not even parquet, but the user's"),
        ("failures/log.txt", b"my notes"),
    ];
    for (f, bytes) in files {
        let path = project.join(f);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
    }
    let before = snapshot(&project);
    for args in [
        &["run", "job.toml", "--out", "my-project"][..],
        &["run", "job.toml", "--out", "my-project", "--restart"],
        &["validate", "job.toml", "--out", "my-project"],
        &["status", "my-project"],
    ] {
        let out = simsweep(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a simsweep output"), "{args:?}: {stderr}");
        assert!(!stderr.contains("damaged"), "{args:?}: {stderr}");
        assert_eq!(snapshot(&project), before, "{args:?} changed the user's directory");
    }
}
