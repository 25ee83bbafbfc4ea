//! A client of the daemon's API: what `simsweep submit`, `jobs`, `cancel` and `watch` do.

use std::io::BufRead;
use std::path::Path;

use serde_json::{json, Value};

use crate::engine::spec::JobSpec;

/// The server when neither `--server` nor `SIMSWEEP_SERVER` names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";

/// What a request to the daemon ended with, when not with success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The request could not be made or answered (no server there, connection lost).
    #[error("{server}: {message}")]
    Unreachable {
        /// The server's URL.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused the request (its problem document's detail).
    #[error("{detail} (HTTP {status})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem's `detail`.
        detail: String,
    },
    /// The job file or a file it names cannot be read or sent.
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    /// True for the user's input (a refused spec, an unreadable file, a wrong id): exit 2.
    pub fn is_input_error(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => (400..500).contains(status),
            ClientError::Input(_) => true,
            ClientError::Unreachable { .. } => false,
        }
    }
}

/// A connection to one daemon.
pub struct Client {
    server: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the daemon at `server` (`http://host:port`).
    pub fn new(server: &str) -> Client {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Client { server: server.trim_end_matches('/').to_string(), agent }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable { server: self.server.clone(), message: e.to_string() }
    }

    fn answer(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let detail = value["detail"].as_str().map_or_else(|| value.to_string(), str::to_string);
            Err(ClientError::Refused { status, detail })
        }
    }

    /// `GET path`.
    ///
    /// # Errors
    /// [`ClientError`] when the server cannot be reached or answers with an error.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.answer(self.agent.get(&format!("{}{path}", self.server)).call())
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.server);
        let req = self.agent.post(&url).header("Content-Type", "application/json");
        self.answer(req.send(body.to_string()))
    }

    /// Submits the job file `job` with the files it names (its parameter file, its targets'
    /// data, the model's input files), read as text; returns the job as the server shows it.
    ///
    /// # Errors
    /// [`ClientError::Input`] when the job file or a file it names cannot be read as text (a
    /// Parquet file cannot be sent yet: give CSV); as [`Client::post`] otherwise.
    pub fn submit(&self, job: &Path, priority: i64) -> Result<Value, ClientError> {
        self.post("/v1/jobs", &submission(job, priority)?)
    }

    /// Calls `on_event(kind, data)` for each event of job `id` from the start, until the job
    /// reaches a terminal state; returns its last state.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub fn watch(
        &self,
        id: &str,
        mut on_event: impl FnMut(&str, &Value),
    ) -> Result<String, ClientError> {
        let url = format!("{}/v1/jobs/{id}/events", self.server);
        let resp = self.agent.get(&url).call().map_err(|e| self.unreachable(e))?;
        if resp.status().as_u16() != 200 {
            return self.answer(Ok(resp)).map(|_| String::new());
        }
        let (mut kind, mut state) = (String::new(), String::new());
        for line in std::io::BufReader::new(resp.into_body().into_reader()).lines() {
            let line = line.map_err(|e| self.unreachable(e))?;
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if kind == "state" {
                    state = data["state"].as_str().unwrap_or_default().to_string();
                }
                on_event(&kind, &data);
            }
        }
        Ok(state)
    }
}

/// The submission of job file `job`: its text and the files it names, as text.
fn submission(job: &Path, priority: i64) -> Result<Value, ClientError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| {
            ClientError::Input(format!(
                "{}: {e}{}",
                path.display(),
                if e.kind() == std::io::ErrorKind::InvalidData {
                    " (only text files can be sent: give the data as CSV)"
                } else {
                    ""
                }
            ))
        })
    };
    let spec_text = read(job)?;
    let spec: JobSpec = toml::from_str(&spec_text).map_err(|e| {
        ClientError::Input(format!("{}: {}", job.display(), e.message().trim_end()))
    })?;
    let dir = job.parent().unwrap_or(Path::new(""));
    let mut names: Vec<std::path::PathBuf> = Vec::new();
    names.extend(spec.parameters.file.clone());
    names.extend(spec.targets.iter().map(|t| t.data.clone()));
    names.extend(spec.model.input_files(Path::new("")));
    let mut files = serde_json::Map::new();
    for name in names {
        let text = read(&dir.join(&name))?;
        files.insert(name.to_string_lossy().into_owned(), Value::String(text));
    }
    Ok(json!({ "spec": spec_text, "files": files, "priority": priority }))
}
