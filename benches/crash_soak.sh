#!/usr/bin/env bash
# Crash soak: 50 random SIGKILLs (seeded) during the flu example, a resume after each, then the
# whole output compared with an uninterrupted run. See benches/crash_soak.rs.
#   benches/crash_soak.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench crash_soak -- "${1:-50}" "${2:-1978}"
