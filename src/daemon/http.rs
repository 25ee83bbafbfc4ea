//! The daemon's HTTP API (actix-web): `/v1` JSON, Server-Sent Events, health and metrics.
//!
//! Errors are RFC 9457 problem documents (`application/problem+json`) whose `type` is stable:
//! `https://simsweep.dev/problems/<kind>`. Every request must name the daemon in `Host` (its
//! listen address, `localhost:PORT`, `127.0.0.1:PORT` or `[::1]:PORT`), and a state-changing
//! request that carries `Origin` must come from one of those: a web page elsewhere cannot drive
//! a loopback daemon (DNS rebinding, cross-site requests).

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::registry::{JobRow, JobState};
use super::{Daemon, Refusal, Submission, MAX_BODY_BYTES};

/// Longest an events stream waits before looking for new events by itself (it is woken as
/// soon as one is recorded).
const EVENTS_POLL: Duration = Duration::from_secs(1);

/// A problem document.
fn problem(status: u16, kind: &str, detail: impl Into<String>) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).content_type("application/problem+json").json(json!({
        "type": format!("https://simsweep.dev/problems/{kind}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    }))
}

fn refused(r: Refusal) -> HttpResponse {
    problem(r.status, r.kind, r.detail)
}

fn not_found(id: &str) -> HttpResponse {
    problem(404, "not-found", format!("no job {id}"))
}

/// A parameter value as JSON: numbers as numbers (a non-finite float, which a sweep never
/// holds, as its text), strings as strings.
fn param_json(v: &crate::engine::params::ParamValue) -> serde_json::Value {
    use crate::engine::params::ParamValue;
    match v {
        ParamValue::Float(x) if x.is_finite() => json!(x),
        ParamValue::Int(i) => json!(i),
        ParamValue::Str(s) => json!(s),
        other => json!(other.to_string()),
    }
}

/// The job as the API shows it.
fn job_json(daemon: &Daemon, row: &JobRow) -> serde_json::Value {
    let mut job = json!({
        "id": row.id,
        "name": row.name,
        "state": row.state.as_str(),
        "priority": row.priority,
        "submitted_at": row.submitted_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "error": row.error,
    });
    // Progress: what the output directory has committed (source of truth), and what the run
    // reported since, while it runs.
    if let Ok(status) = crate::status(&daemon.output_dir(&row.id)) {
        let m = &status.manifest;
        job["progress"] = json!({
            "batches_committed": m.batches.len(),
            "batches_planned": m.batches_planned,
            "simulations_committed": status.simulations_committed,
            "failed": status.failed,
            "finished": m.finished,
        });
        job["best"] = json!(status
            .best
            .iter()
            .map(|t| json!({
                "target": t.target,
                "rows": t.rows,
                "null_losses": t.null_losses,
                "best": t.best.iter().map(|b| json!({
                    "param_id": b.param_id,
                    "loss": if b.loss.is_finite() { json!(b.loss) } else { json!(b.loss.to_string()) },
                    "parameters": b.parameters.iter().map(|(k, v)| (k.clone(), param_json(v))).collect::<serde_json::Map<_, _>>(),
                    "n_failed": b.n_failed,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>());
    }
    if let Some(live) = daemon.live_progress(&row.id) {
        // Rate and ETA from this run: simulations finished per second since it started.
        let finished = live["simulations_finished_this_run"].as_f64();
        let elapsed = live["elapsed_s"].as_f64();
        let planned = live["progress"]["simulations_planned"].as_f64();
        let committed = live["progress"]["simulations_committed"].as_f64();
        if let (Some(finished), Some(elapsed)) = (finished, elapsed) {
            if elapsed > 0.0 && finished > 0.0 {
                let rate = finished / elapsed;
                job["rate_simulations_per_s"] = json!(rate);
                if let (Some(planned), Some(committed)) = (planned, committed) {
                    job["eta_s"] = json!(((planned - committed).max(0.0)) / rate);
                }
            }
        }
        job["live"] = live;
    }
    job
}

/// Checks `Host` on every request and `Origin` on state-changing ones.
pub async fn check_host(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = req.app_data::<web::Data<Allowed>>().map(|a| a.get_ref().clone());
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    if let Some(allowed) = allowed {
        let ok_host = host.as_deref().is_some_and(|h| allowed.hosts.iter().any(|a| a == h));
        if !ok_host {
            let resp = problem(
                421,
                "wrong-host",
                format!(
                    "Host `{}` is not this daemon; use one of {}",
                    host.unwrap_or_default(),
                    allowed.hosts.join(", ")
                ),
            );
            return Ok(req.into_response(resp).map_into_right_body());
        }
        if let Some(token) = &allowed.token {
            let health = req.method() == Method::GET && req.path() == "/healthz";
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim);
            let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
            if !health && !ok {
                let resp = problem(
                    401,
                    "unauthorized",
                    "this daemon needs `Authorization: Bearer <token>` (the token is in its \
                     --token-file)",
                );
                let mut resp = req.into_response(resp);
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return Ok(resp.map_into_right_body());
            }
        }
        let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let origin = req.headers().get(header::ORIGIN).and_then(|h| h.to_str().ok());
        if let (true, Some(origin)) = (changes, origin) {
            let ok = allowed.hosts.iter().any(|a| origin == format!("http://{a}"));
            if !ok {
                let resp = problem(
                    403,
                    "cross-origin",
                    format!("requests from origin `{origin}` may not change this daemon's jobs"),
                );
                return Ok(req.into_response(resp).map_into_right_body());
            }
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Who the daemon answers: the `Host` values, and the bearer token when it has one.
#[derive(Clone)]
pub struct Allowed {
    /// `host:port` forms.
    pub hosts: Vec<String>,
    /// The bearer token every request but `GET /healthz` must carry, when set.
    pub token: Option<String>,
}

impl std::fmt::Debug for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowed")
            .field("hosts", &self.hosts)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Equality of `a` and `b` in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Allowed {
    /// The forms of a loopback listen address `addr` a client may use.
    pub fn for_addr(addr: std::net::SocketAddr) -> Allowed {
        let port = addr.port();
        let mut hosts = vec![
            addr.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        hosts.dedup();
        Allowed { hosts, token: None }
    }
}

/// Parses a submission: JSON (`{"spec", "files", "priority"}`) or the spec's TOML itself.
fn submission(req: &HttpRequest, body: &web::Bytes) -> Result<Submission, HttpResponse> {
    let text = std::str::from_utf8(body)
        .map_err(|_| problem(400, "bad-request", "the body is not UTF-8 text"))?;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        serde_json::from_str(text).map_err(|e| {
            problem(400, "bad-request", format!("the JSON body is not a submission: {e}"))
        })
    } else {
        Ok(Submission { spec: text.to_string(), ..Submission::default() })
    }
}

async fn submit(
    daemon: web::Data<Arc<Daemon>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let submission = match submission(&req, &body) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let key =
        req.headers().get("Idempotency-Key").and_then(|h| h.to_str().ok()).map(str::to_string);
    let daemon = daemon.get_ref().clone();
    let result =
        web::block(move || daemon.submit(submission, key).map(|(row, new)| (daemon, row, new)))
            .await;
    match result {
        Ok(Ok((daemon, row, created))) => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            HttpResponse::build(status)
                .insert_header((header::LOCATION, format!("/v1/jobs/{}", row.id)))
                .json(job_json(&daemon, &row))
        }
        Ok(Err(r)) => refused(r),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}

async fn validate(
    daemon: web::Data<Arc<Daemon>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let submission = match submission(&req, &body) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let daemon = daemon.get_ref().clone();
    match web::block(move || daemon.validate(&submission)).await {
        Ok(Ok(name)) => HttpResponse::Ok().json(json!({ "valid": true, "name": name })),
        Ok(Err(r)) => refused(r),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

async fn list(daemon: web::Data<Arc<Daemon>>, query: web::Query<ListQuery>) -> HttpResponse {
    let state = match query.state.as_deref().map(|s| (s, JobState::parse(s))) {
        None => None,
        Some((_, Some(state))) => Some(state),
        Some((s, None)) => {
            return problem(
                400,
                "bad-request",
                format!(
                    "state `{s}`: use queued, running, stopping, succeeded, failed or cancelled"
                ),
            )
        }
    };
    let limit = query.limit.unwrap_or(100).min(1000);
    match daemon.registry().list(state, limit, query.offset.unwrap_or(0)) {
        Ok(rows) => HttpResponse::Ok().json(json!({
            "jobs": rows.iter().map(|r| job_json(&daemon, r)).collect::<Vec<_>>(),
        })),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}

async fn get(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    match daemon.registry().get(&id) {
        Ok(Some(row)) => HttpResponse::Ok().json(job_json(&daemon, &row)),
        Ok(None) => not_found(&id),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct CancelQuery {
    force: Option<bool>,
}

/// The answer to a request that changes job `id`'s state: 202 with the state, or why not.
fn state_change(id: &str, result: Option<Result<JobState, Refusal>>) -> HttpResponse {
    match result {
        None => not_found(id),
        Some(Err(r)) => refused(r),
        Some(Ok(state)) => {
            HttpResponse::Accepted().json(json!({ "id": id, "state": state.as_str() }))
        }
    }
}

async fn cancel(
    daemon: web::Data<Arc<Daemon>>,
    id: web::Path<String>,
    query: web::Query<CancelQuery>,
) -> HttpResponse {
    state_change(&id, daemon.cancel(&id, query.force.unwrap_or(false)))
}

async fn resume(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    state_change(&id, daemon.resume(&id))
}

async fn delete(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    match daemon.delete(&id) {
        None => not_found(&id),
        Some(Err(r)) => refused(r),
        Some(Ok(())) => HttpResponse::NoContent().finish(),
    }
}

#[derive(serde::Deserialize)]
struct BestQuery {
    target: Option<String>,
    k: Option<usize>,
}

async fn best(
    daemon: web::Data<Arc<Daemon>>,
    id: web::Path<String>,
    query: web::Query<BestQuery>,
) -> HttpResponse {
    let row = match daemon.registry().get(&id) {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(&id),
        Err(e) => return problem(500, "internal", e.to_string()),
    };
    let mut job = job_json(&daemon, &row);
    let mut best = job["best"].take();
    let Some(targets) = best.as_array_mut() else {
        return problem(409, "no-results", format!("job {id} has no committed batch yet"));
    };
    if let Some(target) = &query.target {
        targets.retain(|t| t["target"] == json!(target));
        if targets.is_empty() {
            return problem(404, "not-found", format!("job {id} has no target `{target}`"));
        }
    }
    if let Some(k) = query.k {
        for t in targets.iter_mut() {
            if let Some(b) = t["best"].as_array_mut() {
                b.truncate(k);
            }
        }
    }
    HttpResponse::Ok().json(json!({ "id": *id, "targets": best }))
}

/// `GET /v1/jobs/{id}/events`: the job's events as Server-Sent Events (`id:` the event's seq,
/// `event:` its kind, `data:` its JSON), from the one after `Last-Event-ID` (or `?after=`) on;
/// the stream ends once the job is in a terminal state and every event has been sent.
async fn events(
    daemon: web::Data<Arc<Daemon>>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let id = id.into_inner();
    match daemon.registry().get(&id) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(&id),
        Err(e) => return problem(500, "internal", e.to_string()),
    }
    let after = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| {
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.get("after").and_then(|a| a.parse().ok()))
        })
        .unwrap_or(0);
    let daemon = daemon.get_ref().clone();
    let ticks = daemon.event_ticks();
    let stream = futures_util::stream::unfold((after, false), move |(after, done)| {
        let daemon = daemon.clone();
        let id = id.clone();
        let mut ticks = ticks.clone();
        async move {
            if done {
                return None;
            }
            loop {
                // Before reading: an event recorded from here on wakes the wait below.
                ticks.mark_unchanged();
                let events = daemon.registry().events_after(&id, after, 256).unwrap_or_default();
                if let Some(last) = events.last() {
                    let mut text = String::new();
                    for e in &events {
                        text.push_str(&format!(
                            "id: {}\nevent: {}\ndata: {}\n\n",
                            e.seq, e.kind, e.data
                        ));
                    }
                    let next = last.seq;
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from(text)),
                        (next, false),
                    ));
                }
                let terminal = match daemon.registry().get(&id) {
                    Ok(Some(row)) => row.state.is_terminal(),
                    _ => true,
                };
                if terminal {
                    // The terminal state's event is written with the state: nothing follows.
                    return Some((Ok(web::Bytes::from_static(b": end\n\n")), (after, true)));
                }
                let _ = tokio::time::timeout(EVENTS_POLL, ticks.changed()).await;
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream)
}

async fn metrics(daemon: web::Data<Arc<Daemon>>) -> HttpResponse {
    let mut text = String::from(
        "# HELP simsweep_jobs Jobs in the registry, by state.\n# TYPE simsweep_jobs gauge\n",
    );
    let counts = daemon.registry().count_by_state().unwrap_or_default();
    for state in ["queued", "running", "stopping", "succeeded", "failed", "cancelled"] {
        let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        text.push_str(&format!("simsweep_jobs{{state=\"{state}\"}} {n}\n"));
    }
    let queued = counts.iter().find(|(s, _)| s == "queued").map_or(0, |(_, n)| *n);
    text.push_str(&format!(
        "# HELP simsweep_queue_length Jobs waiting for a slot.\n# TYPE simsweep_queue_length gauge\n\
         simsweep_queue_length {queued}\n# HELP simsweep_running_jobs Jobs running now.\n\
         # TYPE simsweep_running_jobs gauge\nsimsweep_running_jobs {}\n",
        daemon.running_count()
    ));
    text.push_str(&format!(
        "# HELP simsweep_batches_committed_total Batches committed by this daemon process.\n\
         # TYPE simsweep_batches_committed_total counter\n\
         simsweep_batches_committed_total {}\n",
        daemon.batches_committed.load(std::sync::atomic::Ordering::Relaxed)
    ));
    let counter = |name: &str, help: &str, value: u64| {
        format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n")
    };
    use std::sync::atomic::Ordering::Relaxed;
    text.push_str(&counter(
        "simsweep_simulations_committed_total",
        "Simulations committed by this daemon process (failed ones included).",
        daemon.simulations_committed.load(Relaxed),
    ));
    text.push_str(&counter(
        "simsweep_simulations_failed_total",
        "Failed simulations committed by this daemon process.",
        daemon.simulations_failed.load(Relaxed),
    ));
    {
        let name = "simsweep_failures_total";
        text.push_str(&format!(
            "# HELP {name} Failed attempts committed by this daemon process, by kind.\n# TYPE {name} counter\n"
        ));
        let kinds = daemon.failures_by_kind.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, n) in kinds.iter() {
            text.push_str(&format!("{name}{{kind=\"{kind}\"}} {n}\n"));
        }
    }
    {
        let h = daemon.commit_intervals.lock().unwrap_or_else(|e| e.into_inner());
        let name = "simsweep_batch_commit_interval_seconds";
        text.push_str(&format!(
            "# HELP {name} Seconds between a job's consecutive batch commits.\n# TYPE {name} histogram\n"
        ));
        let mut cumulative = 0;
        for (i, count) in h.0.iter().enumerate() {
            cumulative += count;
            let le =
                super::COMMIT_INTERVAL_BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            text.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        text.push_str(&format!("{name}_sum {}\n{name}_count {cumulative}\n", h.1));
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(daemon: web::Data<Arc<Daemon>>) -> HttpResponse {
    match daemon.registry().count_by_state() {
        Ok(_) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => problem(503, "not-ready", format!("registry: {e}")),
    }
}

/// The web page's files, compiled into the binary (no build step, nothing from elsewhere).
const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
const FAVICON_SVG: &str = include_str!("web/favicon.svg");
const OPENAPI_JSON: &str = include_str!("web/openapi.json");

/// What the page may load and run: its own files and the API, nothing else.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn openapi() -> HttpResponse {
    asset("application/json", OPENAPI_JSON)
}

async fn favicon() -> HttpResponse {
    asset("image/svg+xml", FAVICON_SVG)
}

async fn unknown(req: HttpRequest) -> HttpResponse {
    problem(404, "not-found", format!("no such endpoint: {} {}", req.method(), req.path()))
}

/// The API's routes, for `App::configure`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route("/", web::get().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/app.css", web::get().to(app_css))
        .route("/favicon.svg", web::get().to(favicon))
        .route("/favicon.ico", web::get().to(favicon))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/v1/openapi.json", web::get().to(openapi))
        .route("/v1/jobs", web::post().to(submit))
        .route("/v1/jobs", web::get().to(list))
        .route("/v1/jobs:validate", web::post().to(validate))
        .route("/v1/jobs/{id}", web::get().to(get))
        .route("/v1/jobs/{id}", web::delete().to(delete))
        .route("/v1/jobs/{id}/cancel", web::post().to(cancel))
        .route("/v1/jobs/{id}/resume", web::post().to(resume))
        .route("/v1/jobs/{id}/best", web::get().to(best))
        .route("/v1/jobs/{id}/events", web::get().to(events))
        .route("/v1/jobs/{id}/failures", web::get().to(failures))
        .route("/v1/jobs/{id}/report", web::get().to(report))
        .route("/v1/jobs/{id}/logs", web::get().to(logs))
        .route("/v1/jobs/{id}/tables", web::get().to(tables))
        .route("/v1/jobs/{id}/tables/{name:.*}", web::get().to(table))
        .default_service(web::to(unknown));
}

/// The committed files of each dataset of job `id`'s output, from its manifest: dataset name
/// (`targets/cases`, …) → (rows, batch indices).
fn committed_tables(
    daemon: &Daemon,
    id: &str,
) -> Result<std::collections::BTreeMap<String, (u64, Vec<u32>)>, HttpResponse> {
    let status = crate::status(&daemon.output_dir(id))
        .map_err(|_| problem(409, "no-results", format!("job {id} has no committed batch yet")))?;
    let mut tables: std::collections::BTreeMap<String, (u64, Vec<u32>)> = Default::default();
    for batch in &status.manifest.batches {
        for (name, rows) in &batch.rows {
            let entry = tables.entry(name.clone()).or_default();
            entry.0 += rows;
            entry.1.push(batch.index);
        }
    }
    Ok(tables)
}

async fn tables(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    if let Ok(None) = daemon.registry().get(&id) {
        return not_found(&id);
    }
    match committed_tables(&daemon, &id) {
        Ok(tables) => HttpResponse::Ok().json(json!({
            "id": *id,
            "tables": tables.iter().map(|(name, (rows, batches))| json!({
                "name": name,
                "rows": rows,
                "url": format!("/v1/jobs/{id}/tables/{name}"),
                "files": batches.iter().map(|b| format!("/v1/jobs/{id}/tables/{name}/batch-{b:05}.parquet")).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Err(resp) => resp,
    }
}

/// Sends what is written to it as chunks of a streaming response.
struct ChunkWriter(tokio::sync::mpsc::Sender<web::Bytes>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(web::Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /v1/jobs/{id}/tables/{dataset}[/batch-NNNNN.parquet]`: one committed batch file as it
/// is on disk, or a whole dataset's committed rows as one Arrow IPC stream (`Accept:
/// application/vnd.apache.arrow.stream`; read and sent one record batch at a time). A dataset
/// asked for without that `Accept` answers with the list of its files.
async fn table(
    daemon: web::Data<Arc<Daemon>>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, rest) = path.into_inner();
    if let Ok(None) = daemon.registry().get(&id) {
        return not_found(&id);
    }
    let tables = match committed_tables(&daemon, &id) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let (name, file) = match rest.rsplit_once('/') {
        Some((name, file)) if file.ends_with(".parquet") => {
            (name.to_string(), Some(file.to_string()))
        }
        _ => (rest.clone(), None),
    };
    let Some((_, batches)) = tables.get(&name) else {
        return problem(404, "not-found", format!("job {id} has no committed table `{name}`"));
    };
    let Some(dataset) = crate::engine::output::Dataset::from_relative_dir(&name) else {
        return problem(404, "not-found", format!("`{name}` is not a table name"));
    };
    let layout = crate::engine::output::OutputLayout::new(daemon.output_dir(&id));
    if let Some(file) = file {
        let Some(&index) = batches.iter().find(|&&b| format!("batch-{b:05}.parquet") == file)
        else {
            return problem(404, "not-found", format!("`{name}` has no committed file `{file}`"));
        };
        return match std::fs::read(layout.batch_file(&dataset, index)) {
            Ok(bytes) => {
                HttpResponse::Ok().content_type("application/vnd.apache.parquet").body(bytes)
            }
            Err(e) => problem(500, "internal", e.to_string()),
        };
    }
    let arrow = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("application/vnd.apache.arrow.stream"));
    if !arrow {
        return HttpResponse::Ok().json(json!({
            "name": name,
            "files": batches.iter().map(|b| format!("/v1/jobs/{id}/tables/{name}/batch-{b:05}.parquet")).collect::<Vec<_>>(),
            "arrow_stream": "send `Accept: application/vnd.apache.arrow.stream` for every row as one Arrow IPC stream",
        }));
    }
    let files: Vec<std::path::PathBuf> =
        batches.iter().map(|&b| layout.batch_file(&dataset, b)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<web::Bytes>(16);
    std::thread::spawn(move || {
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let mut writer: Option<arrow::ipc::writer::StreamWriter<ChunkWriter>> = None;
            for file in files {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        std::fs::File::open(&file)?,
                    )?
                    .build()?;
                for batch in reader {
                    let batch = batch?;
                    if writer.is_none() {
                        writer = Some(arrow::ipc::writer::StreamWriter::try_new(
                            ChunkWriter(tx.clone()),
                            &batch.schema(),
                        )?);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(&batch)?;
                    }
                }
            }
            if let Some(mut w) = writer {
                w.finish()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "table stream ended early");
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|c| c.map(Ok::<_, actix_web::Error>))
    });
    HttpResponse::Ok().content_type("application/vnd.apache.arrow.stream").streaming(stream)
}

/// `GET /v1/jobs/{id}/logs`: the job's warnings and errors, oldest first (`?after=N` for those
/// after event N).
async fn logs(
    daemon: web::Data<Arc<Daemon>>,
    id: web::Path<String>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    match daemon.registry().get(&id) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(&id),
        Err(e) => return problem(500, "internal", e.to_string()),
    }
    let mut after = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut lines = Vec::new();
    loop {
        let events = daemon.registry().events_after(&id, after, 1000).unwrap_or_default();
        let Some(last) = events.last() else { break };
        after = last.seq;
        lines.extend(events.into_iter().filter(|e| e.kind == "log").map(|e| {
            let mut v: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
            v["seq"] = json!(e.seq);
            v
        }));
    }
    HttpResponse::Ok().json(json!({ "id": *id, "logs": lines }))
}

/// `GET /v1/jobs/{id}/failures`: failed attempts by kind, with the first messages of each.
async fn failures(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    if let Ok(None) = daemon.registry().get(&id) {
        return not_found(&id);
    }
    // No committed batch yet: no failures yet.
    let tables = committed_tables(&daemon, &id).unwrap_or_default();
    let layout = crate::engine::output::OutputLayout::new(daemon.output_dir(&id));
    let dataset = crate::engine::output::Dataset::Failures;
    let batches = tables.get("failures").map(|(_, b)| b.clone()).unwrap_or_default();
    let counted = web::block(move || -> Result<serde_json::Value, String> {
        use arrow::array::{Array, AsArray};
        let mut by_kind: std::collections::BTreeMap<String, (u64, Vec<String>)> =
            Default::default();
        for b in batches {
            let file = layout.batch_file(&dataset, b);
            let Ok(f) = std::fs::File::open(&file) else { continue };
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|r| r.build())
                .map_err(|e| e.to_string())?;
            for batch in reader {
                let batch = batch.map_err(|e| e.to_string())?;
                let (Some(kind), Some(message)) =
                    (batch.column_by_name("kind"), batch.column_by_name("message"))
                else {
                    continue;
                };
                let kind = arrow::compute::cast(kind, &arrow::datatypes::DataType::Utf8)
                    .map_err(|e| e.to_string())?;
                let message = arrow::compute::cast(message, &arrow::datatypes::DataType::Utf8)
                    .map_err(|e| e.to_string())?;
                let (kind, message) = (kind.as_string::<i32>(), message.as_string::<i32>());
                for i in 0..batch.num_rows() {
                    let entry = by_kind.entry(kind.value(i).to_string()).or_default();
                    entry.0 += 1;
                    if entry.1.len() < 3 && !message.is_null(i) {
                        entry.1.push(message.value(i).to_string());
                    }
                }
            }
        }
        Ok(json!(by_kind
            .into_iter()
            .map(|(k, (n, m))| (k, json!({ "count": n, "first_messages": m })))
            .collect::<serde_json::Map<_, _>>()))
    })
    .await;
    match counted {
        Ok(Ok(by_kind)) => HttpResponse::Ok().json(json!({ "id": *id, "by_kind": by_kind })),
        Ok(Err(e)) => problem(500, "internal", e),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}

/// The job's report ([`crate::report`]), written into its output and served as HTML: what
/// `simsweep report` writes, from what is committed so far.
async fn report(daemon: web::Data<Arc<Daemon>>, id: web::Path<String>) -> HttpResponse {
    if let Ok(None) = daemon.registry().get(&id) {
        return not_found(&id);
    }
    let dir = daemon.output_dir(&id);
    let written = web::block(move || {
        let options =
            crate::report::ReportOptions { top: crate::report::DEFAULT_TOP, svg_dir: None };
        crate::report::write_report(&dir, &options)
            .map_err(|e| (e.is_input_error(), e.to_string()))
            .and_then(|path| std::fs::read(&path).map_err(|e| (false, e.to_string())))
    })
    .await;
    match written {
        Ok(Ok(html)) => HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html),
        Ok(Err((true, e))) => problem(409, "no-report-yet", e),
        Ok(Err((false, e))) => problem(500, "internal", e),
        Err(e) => problem(500, "internal", e.to_string()),
    }
}
