#!/usr/bin/env bash
# The daemon against the command line on the same job, and a burst of small jobs.
#
#   benches/daemon.sh cli JOB.toml      # simsweep run JOB.toml into a fresh folder
#   benches/daemon.sh daemon JOB.toml   # simsweep serve, submit JOB.toml, watch it to the end, stop
#   benches/daemon.sh burst N           # N tiny jobs submitted at once; prints wall, states, RSS
#
# Time the first two side by side, alternated, e.g. with
#   /usr/bin/time -f "%e s %M KiB" benches/daemon.sh daemon examples/flu-boarding-school/job.toml
# (the daemon's figure includes starting and stopping it). Uses target/release/simsweep.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/simsweep
work=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

start_server() {
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" "$@" >"$work/serve.out" 2>"$work/serve.err" &
  server_pid=$!
  for _ in $(seq 100); do
    addr=$(grep -o 'http://[0-9.:]*' "$work/serve.out" 2>/dev/null || true)
    [ -n "$addr" ] && return 0
    sleep 0.02
  done
  echo "the daemon did not start" >&2; cat "$work/serve.err" >&2; exit 1
}

case "${1:-}" in
  cli)
    "$bin" run "$2" --out "$work/out" >/dev/null 2>&1
    ;;
  daemon)
    start_server
    out=$("$bin" submit "$2" --server "$addr")
    id=$(echo "$out" | grep -o 'submitted as j[0-9]*' | cut -d' ' -f3)
    "$bin" watch "$id" --server "$addr" >/dev/null
    kill -TERM "$server_pid"; wait "$server_pid" || true
    ;;
  burst)
    n=${2:-1000}
    start_server --max-running 2 --workers 2
    python3 - "$addr" "$n" "$server_pid" <<'PY'
import json, sys, time, urllib.request
addr, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = """replicates = 2
batch_size = 10
[parameters]
sampler = "uniform"
count = 20
[parameters.space]
a = { min = 1.0, max = 5.0 }
b = { min = 0.0, max = 10.0 }
[model]
name = "noop"
rows = 10
"""
def call(path, body=None):
    req = urllib.request.Request(addr + path, data=body, headers={"Content-Type": "application/toml"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
t0 = time.time()
for i in range(n):
    call("/v1/jobs", (f'name = "burst-{i}"\n' + spec).encode())
submitted = time.time() - t0
while True:
    jobs = call("/v1/jobs?limit=1000&state=succeeded")["jobs"]
    done = len(jobs)
    if done >= n:
        break
    time.sleep(0.2)
wall = time.time() - t0
states = {}
offset = 0
while True:
    page = call(f"/v1/jobs?limit=1000&offset={offset}")["jobs"]
    if not page:
        break
    for j in page:
        states[j["state"]] = states.get(j["state"], 0) + 1
    offset += len(page)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"jobs": n, "submit_s": round(submitted, 2), "all_done_s": round(wall, 2),
                  "jobs_per_s": round(n / wall, 1), "states": states, "server_peak_rss_kib": int(rss)}))
PY
    ;;
  *)
    sed -n 2,12p "$0"; exit 2
    ;;
esac
