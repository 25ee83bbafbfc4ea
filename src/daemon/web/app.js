// simsweep's job pages: the list of jobs (#/) and one job (#/jobs/ID), live from the API's
// Server-Sent Events. Plain DOM, no dependencies.
"use strict";

const main = document.getElementById("main");
let streams = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.detail || resp.statusText);
  return body;
}

function closeStreams() {
  for (const s of streams) s.close();
  streams = [];
}

function progressOf(job) {
  const p = job.progress || {};
  return { done: p.batches_committed || 0, all: p.batches_planned || 0 };
}

function bar(job) {
  const { done, all } = progressOf(job);
  return el("progress", { id: "bar-" + job.id, value: done, max: all || 1 });
}

// Follows a job's events: its bar and state cell move as batches commit.
function follow(job, onState) {
  if (["succeeded", "failed", "cancelled"].includes(job.state)) return;
  const source = new EventSource("/v1/jobs/" + job.id + "/events");
  streams.push(source);
  const update = (ev) => {
    const data = JSON.parse(ev.data);
    const b = document.getElementById("bar-" + job.id);
    if (b && data.progress) {
      b.max = data.progress.batches_planned || 1;
      b.value = data.progress.batches_committed;
      b.dataset.updates = String(Number(b.dataset.updates || 0) + 1);
    }
    if (ev.type === "state") {
      const cell = document.getElementById("state-" + job.id);
      if (cell) {
        cell.textContent = data.state;
        cell.className = "state-" + data.state;
      }
      if (onState) onState(data.state);
    }
  };
  for (const kind of ["state", "started", "batch_committed", "failures"]) source.addEventListener(kind, update);
  // The server ends the stream once the job is over; do not reconnect then.
  source.onerror = () => source.close();
}

async function listPage() {
  const { jobs } = await api("/v1/jobs?limit=200");
  const rows = jobs.map((job) =>
    el("tr", {},
      el("td", {}, el("a", { href: "#/jobs/" + job.id }, job.id)),
      el("td", {}, job.name),
      el("td", { id: "state-" + job.id, class: "state-" + job.state }, job.state),
      el("td", {}, bar(job)),
      el("td", {}, job.submitted_at)));
  main.replaceChildren(
    el("h1", {}, "Jobs"),
    jobs.length === 0
      ? el("p", {}, "No jobs yet. Submit one: simsweep submit job.toml --server " + location.origin)
      : el("table", { id: "jobs" },
          el("tr", {}, ...["id", "name", "state", "batches", "submitted"].map((h) => el("th", {}, h))),
          ...rows));
  for (const job of jobs) follow(job);
}

function bestTables(job) {
  const out = [];
  for (const t of job.best || []) {
    const names = t.best.length ? Object.keys(t.best[0].parameters) : [];
    out.push(el("h3", {}, "Target " + t.target));
    out.push(el("table", { class: "best" },
      el("tr", {}, el("th", {}, "#"), el("th", {}, "loss"), ...names.map((n) => el("th", {}, n)),
        el("th", {}, "failed"), el("th", {}, "param_id")),
      ...t.best.map((b, i) => el("tr", {},
        el("td", { class: "num" }, i + 1),
        el("td", { class: "num" }, typeof b.loss === "number" ? b.loss.toPrecision(6) : b.loss),
        ...names.map((n) => el("td", { class: "num" }, Number(b.parameters[n]).toPrecision(5))),
        el("td", { class: "num" }, b.n_failed),
        el("td", {}, el("code", {}, b.param_id.slice(0, 12)))))));
  }
  return out;
}

async function jobPage(id) {
  const job = await api("/v1/jobs/" + id);
  const { done, all } = progressOf(job);
  const p = job.progress || {};
  main.replaceChildren(
    el("h1", {}, "Job " + job.id + " — " + job.name),
    el("p", {}, "State: ", el("span", { id: "state-" + job.id, class: "state-" + job.state }, job.state)),
    el("p", {}, bar(job), " ", el("span", { id: "counts" }, done + " / " + all + " batches, " +
      (p.simulations_committed || 0) + " simulations, " + (p.failed || 0) + " failed")),
    job.error ? el("p", { class: "error" }, job.error) : "",
    el("p", { id: "links" }, "Results: ",
      el("a", { id: "report-link", href: "/v1/jobs/" + job.id + "/report" }, "report (plots)"), " · ",
      el("a", { href: "/v1/jobs/" + job.id + "/tables" }, "tables"), " · ",
      el("a", { href: "/v1/jobs/" + job.id + "/best" }, "best sets"), " · ",
      el("a", { href: "/v1/jobs/" + job.id + "/failures" }, "failures"), " · ",
      el("a", { href: "/v1/jobs/" + job.id + "/logs" }, "logs"), " · ",
      el("a", { href: "/v1/jobs/" + job.id + "/events" }, "events")),
    el("h2", {}, "Failures"),
    el("div", { id: "failures" }, "…"),
    el("h2", {}, "Best parameter sets"),
    ...(job.best && job.best.length ? bestTables(job) : [el("p", { id: "no-best" }, "No batch committed yet.")]));
  const failures = await api("/v1/jobs/" + id + "/failures").catch(() => ({ by_kind: {} }));
  const kinds = Object.entries(failures.by_kind || {});
  document.getElementById("failures").replaceChildren(kinds.length === 0
    ? el("p", {}, "None.")
    : el("table", { class: "failures" },
        el("tr", {}, el("th", {}, "kind"), el("th", {}, "count"), el("th", {}, "first messages")),
        ...kinds.map(([kind, f]) => el("tr", {}, el("td", {}, kind), el("td", { class: "num" }, f.count),
          el("td", {}, (f.first_messages || []).join(" | "))))));
  // Refresh the page's figures (best sets included) when a batch commits or the state changes.
  follow(job, () => setTimeout(route, 200));
  const counts = document.getElementById("counts");
  for (const s of streams) {
    s.addEventListener("batch_committed", (ev) => {
      const d = JSON.parse(ev.data).progress;
      counts.textContent = d.batches_committed + " / " + d.batches_planned + " batches, " +
        d.simulations_committed + " simulations, " + d.failed + " failed";
    });
  }
}

async function route() {
  closeStreams();
  const m = location.hash.match(/^#\/jobs\/([A-Za-z0-9]+)$/);
  try {
    if (m) await jobPage(m[1]);
    else await listPage();
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, "Cannot load: " + e.message));
  }
}

document.getElementById("server").textContent = location.host;
window.addEventListener("hashchange", route);
route();
