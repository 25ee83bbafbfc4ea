#!/usr/bin/env bash
# The no-op overhead job (the seed's shape: 10 replicates, 6 targets, 100 rows per replicate,
# batch 200) as one whole process, to time with /usr/bin/time and compare binaries:
#
#   benches/noop.sh [SETS] [BINARY]     # default 10,000 sets (100,000 simulations),
#                                       # target/release/simsweep
#
# The job is what `benches/common/mod.rs` `write_noop_job(dir, SETS, 10, 100, 200)` writes (the
# scale benchmark's overhead jobs); every row is written and committed. Prints nothing; time it,
# e.g. `/usr/bin/time -f "%e s %U u %S s %M KiB" benches/noop.sh 10000`.
set -euo pipefail
cd "$(dirname "$0")/.."
sets=${1:-10000}
bin=${2:-target/release/simsweep}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "day,value"
  for day in $(seq 0 5 99); do echo "$day,$((4 + day / 20))"; done
} > "$work/observed.csv"
{
  printf 'name = "overhead"\nreplicates = 10\nseed = 1\nbatch_size = 200\noutput = "output"\n\n'
  printf '[parameters]\nsampler = "latin_hypercube"\ncount = %s\n\n' "$sets"
  printf '[parameters.space]\na = { min = 1.0, max = 5.0 }\nb = { min = 0.0, max = 10.0 }\n\n'
  printf '[model]\nname = "noop"\nrows = 100\n'
  for target in mse_mean_signal:mse:mean_signal mse_annealed:mse:annealed \
      poisson_annealed:poisson:annealed poisson_likelihood:poisson:likelihood \
      nb_likelihood:negative_binomial:likelihood nb_mean_signal:negative_binomial:mean_signal; do
    IFS=: read -r name loss aggregation <<< "$target"
    printf '\n[[targets]]\nname = "%s"\noutput = "signal"\ncolumn = "value"\n' "$name"
    printf 'data = "observed.csv"\ndata_column = "value"\ndata_time_column = "day"\n'
    printf 'aggregation = "%s"\nloss = "%s"\n' "$aggregation" "$loss"
    [ "$loss" = negative_binomial ] && printf 'dispersion = 10.0\n'
  done
} > "$work/job.toml"
"$bin" run "$work/job.toml" --out "$work/out" >/dev/null 2>&1
