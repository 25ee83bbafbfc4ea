#!/usr/bin/env bash
# Time and peak memory of `simsweep report` on an output of N parameter sets (default 1,000,000):
# the noop model (2 replicates, 20 rows each, two swept parameters), a Poisson likelihood target,
# every model output written. The output is built once per N and kept in $SIMSWEEP_BENCH_DIR
# (default /tmp/simsweep-report-bench), then the report is timed 3 times.
#
#   benches/report.sh [N]
#
# Uses target/release/simsweep (build it first: cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/release/simsweep
n=${1:-1000000}
base=${SIMSWEEP_BENCH_DIR:-/tmp/simsweep-report-bench}/n$n
mkdir -p "$base"
cat >"$base/job.toml" <<JOB
name = "report-bench"
replicates = 2
batch_size = 5000
[parameters]
sampler = "uniform"
count = $n
[parameters.space]
a = { min = 1.0, max = 5.0 }
b = { min = 0.0, max = 10.0 }
[model]
name = "noop"
rows = 20
[[targets]]
name = "cases"
output = "signal"
column = "value"
data = "observed.csv"
data_column = "value"
data_time_column = "day"
aggregation = "likelihood"
loss = "poisson"
JOB
printf 'day,value\n0,4\n5,4\n10,5\n' >"$base/observed.csv"
if ! grep -q '"finished": true' "$base/output/manifest.json" 2>/dev/null; then
  echo "building the output of $n parameter sets in $base/output ..."
  /usr/bin/time -f "run: %e s, %M KiB peak" "$bin" run "$base/job.toml" >/dev/null
fi
du -sh "$base/output"
for i in 1 2 3; do
  /usr/bin/time -f "report $i: %e s, %M KiB peak" "$bin" report "$base/output" >/dev/null
done
ls -l "$base/output/report.html"
