#!/usr/bin/env bash
# The external-model protocol against a plain Python loop (issue 16), whole processes.
#
#   benches/external.sh loop [noop]        # python3 calls the model N times in a plain loop
#   benches/external.sh FORM               # simsweep run of the same N tasks, --workers 1
#
# FORM: v1 (the helper answering protocol version 1: one `execute` per task), simulate
# (version 2: `execute_many`, the model's simulate per task), many (version 2 with
# simulate_many), noop / noop-v1 (a model that does nothing, versions 2 / 1).
# N = 2,000 parameter sets (benches/external/sets.csv) × R replicates, R = SIMSWEEP_EXTERNAL_
# REPLICATES (default 10); the loop runs the same sets as many times. The model is
# benches/external/sir_model.py (numpy; `bash scripts/setup-test-env.sh` installs it).
# Time each side by side, alternated, e.g. with
#   /usr/bin/time -f "%e s %M KiB" benches/external.sh simulate
# Overhead per task = (simsweep's wall − the loop's wall) ÷ N; both include starting Python.
# Uses target/release/simsweep.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
replicates=${SIMSWEEP_EXTERNAL_REPLICATES:-10}
export OPENBLAS_NUM_THREADS=1   # numpy's BLAS threads would spin beside the model
form=${1:?"give loop, v1, simulate, many, noop or noop-v1"}
if [ "$form" = loop ]; then
  exec python3 benches/external/sir_model.py loop "$replicates" ${2:-}
fi
case "$form" in
  v1) model=simulate; protocol=1 ;;
  simulate) model=simulate; protocol=2 ;;
  many) model=many; protocol=2 ;;
  noop) model=noop; protocol=2 ;;
  noop-v1) model=noop; protocol=1 ;;
  *) echo "unknown form $form" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s#\"sir_model.py\", \"FORM\"#\"$here/benches/external/sir_model.py\", \"$model\"#" \
    -e "s#\"../../examples#\"$here/examples#" \
    -e "s#^replicates = .*#replicates = $replicates#" \
    -e "s#^file = \"sets.csv\"#file = \"$here/benches/external/sets.csv\"#" \
    -e "s#^\[model\]#[model]\nenv = { SIMSWEEP_WORKER_MAX_PROTOCOL = \"$protocol\", OPENBLAS_NUM_THREADS = \"1\" }#" \
    benches/external/job.toml > "$work/job.toml"
exec target/release/simsweep run "$work/job.toml" --out "$work/out" --workers 1 >/dev/null
