//! Every code block of the README is checked: Rust blocks are compiled as doc tests
//! (`ReadmeDoctests` in `src/lib.rs`); here the job spec is validated as a real job, the
//! `[model]` blocks are read as model settings, the shell and Python blocks are parsed, and
//! the reading snippets (DuckDB SQL, Polars, pyarrow) are run against a real output of the flu
//! example. Needs python3 with pyarrow, polars and duckdb (scripts/setup-test-env.sh).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::simsweep;

/// The README's fenced code blocks: (language, text, line of the opening fence).
fn blocks() -> Vec<(String, String, usize)> {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(String, String, usize)> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), String::new(), i + 1)),
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some((_, text, _)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

fn python(code: &str, dir: &Path) -> std::process::Output {
    let mut child = Command::new("python3")
        .arg("-")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn every_block_has_a_language_the_checks_know() {
    for (lang, _, line) in blocks() {
        assert!(
            ["sh", "toml", "python", "sql", "text", "rust,no_run"].contains(&lang.as_str()),
            "README line {line}: block of language `{lang}` is checked by nothing"
        );
    }
}

#[test]
fn shell_and_python_blocks_parse() {
    for (lang, text, line) in blocks() {
        let check = match lang.as_str() {
            "sh" => Command::new("bash").args(["-n", "-c", &text]).output().unwrap(),
            "python" => python(&format!("import ast\nast.parse({text:?})\n"), Path::new(".")),
            _ => continue,
        };
        assert!(
            check.status.success(),
            "README line {line} ({lang}): {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn the_job_spec_block_is_a_valid_job_and_model_blocks_are_model_settings() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/flu-boarding-school");
    #[derive(serde::Deserialize)]
    struct ModelOnly {
        #[allow(dead_code)]
        model: simsweep::engine::model::ModelSpec,
    }
    let mut jobs = 0;
    for (lang, text, line) in blocks().into_iter().filter(|(l, _, _)| l == "toml") {
        if text.contains("[[targets]]") {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("job.toml"), &text).unwrap();
            let data = "influenza_england_1978_school.csv";
            fs::copy(example.join(data), dir.path().join(data)).unwrap();
            let out = simsweep(&["validate", "job.toml"], dir.path());
            assert!(
                out.status.success(),
                "README line {line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            jobs += 1;
        } else {
            let parsed: Result<ModelOnly, _> = toml::from_str(&text);
            assert!(parsed.is_ok(), "README line {line} ({lang}): {:?}", parsed.err());
        }
    }
    assert_eq!(jobs, 1, "the README shows one whole job spec");
}

#[test]
fn reading_snippets_run_on_a_real_output() {
    // The flu example's output where the snippets look for it, in a copy of the example.
    let root = tempfile::tempdir().unwrap();
    let example = root.path().join("examples/flu-boarding-school");
    fs::create_dir_all(&example).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["job.toml", "influenza_england_1978_school.csv"] {
        fs::copy(repo.join("examples/flu-boarding-school").join(f), example.join(f)).unwrap();
    }
    let run = simsweep(&["run", "examples/flu-boarding-school/job.toml"], root.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut ran = 0;
    for (lang, text, line) in blocks() {
        let code = match lang.as_str() {
            "sql" => format!("import duckdb\nrows = duckdb.sql({text:?}).fetchall()\nassert rows, 'no rows'\nprint(len(rows))\n"),
            "python" if text.contains("/output") => format!("{text}\nprint('ok')\n"),
            _ => continue,
        };
        let out = python(&code, root.path());
        assert!(
            out.status.success(),
            "README line {line} ({lang}) failed on a real output:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert_eq!(ran, 3, "the SQL, Polars and pyarrow snippets");
}
