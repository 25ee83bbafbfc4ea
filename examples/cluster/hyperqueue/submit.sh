#!/bin/bash
# The flu sweep as a HyperQueue task array: 4 tasks, task i runs shard i (HQ_TASK_ID), then the
# merge. Needs a running HyperQueue server and workers (`hq server start`, `hq worker start`, or
# an allocation queue). Run from the repository's root. A task that crashed resumes when
# HyperQueue retries it (--crash-limit); exit 2 (bad spec) fails every task alike.
set -euo pipefail
OUT=${OUT:-$PWD/flu-sharded}
hq submit --array 0-3 --cpus 1 --crash-limit 3 --wait \
  -- simsweep run examples/flu-boarding-school/job.toml --out "$OUT" --shards 4 --workers 1
simsweep merge "$OUT"
