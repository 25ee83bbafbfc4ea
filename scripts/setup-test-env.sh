#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond the Rust toolchain, on a fresh machine:
#   - python3 packages: pyarrow (the Python model worker exchanges Arrow tables) and hyperqueue
#     (a local HyperQueue cluster for the scheduler tests);
#   - a one-node Slurm cluster (Debian's slurm-wlm and munge), started on localhost.
# Run as root (apt-get, the Slurm daemons). Idempotent: what is there already is kept. Fails
# loudly, saying what, when a step cannot be done: the tests that need it would fail anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "setup: python3 is needed (3.9 or later)" >&2; exit 1; }
python3 -m pip install --quiet --disable-pip-version-check 'pyarrow>=14' 'hyperqueue==0.27.0' \
  || { echo "setup: pip could not install pyarrow and hyperqueue" >&2; exit 1; }
python3 -c 'import pyarrow, hyperqueue; print("setup: pyarrow", pyarrow.__version__, "/ hyperqueue", hyperqueue.get_version())'

scripts/slurm-local.sh install
scripts/slurm-local.sh start
