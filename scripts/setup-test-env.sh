#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond the Rust toolchain, on a fresh machine:
#   - python3 packages: pyarrow (the Python model worker exchanges Arrow tables), hyperqueue
#     (a local HyperQueue cluster for the scheduler tests), duckdb and polars (the README's
#     reading snippets are run by tests/readme.rs);
#   - a one-node Slurm cluster (Debian's slurm-wlm and munge), started on localhost;
#   - headless Chromium (Debian's chromium), for the daemon's web page test.
# Run as root (apt-get, the Slurm daemons). Idempotent: what is there already is kept. Fails
# loudly, saying what, when a step cannot be done: the tests that need it would fail anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "setup: python3 is needed (3.9 or later)" >&2; exit 1; }
python3 -m pip install --quiet --disable-pip-version-check 'pyarrow>=14' 'hyperqueue==0.27.0' \
  'duckdb>=1' 'polars>=1' 'numpy>=1.22' \
  || { echo "setup: pip could not install pyarrow, hyperqueue, duckdb, polars and numpy" >&2; exit 1; }
python3 -c 'import pyarrow, hyperqueue, duckdb, polars, numpy; print("setup: pyarrow", pyarrow.__version__, "/ hyperqueue", hyperqueue.get_version(), "/ duckdb", duckdb.__version__, "/ polars", polars.__version__, "/ numpy", numpy.__version__)'

if ! command -v chromium >/dev/null; then
  command -v apt-get >/dev/null || { echo "setup: no apt-get: install chromium by hand" >&2; exit 1; }
  apt-get update -qq || { echo "setup: apt-get update failed" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { echo "setup: apt-get install chromium failed" >&2; exit 1; }
fi
echo "setup: $(chromium --version 2>/dev/null | head -1)"

scripts/slurm-local.sh install
scripts/slurm-local.sh start
