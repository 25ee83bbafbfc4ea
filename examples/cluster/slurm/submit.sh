#!/bin/bash
# Submits the 4-shard array and, after it, the merge. Run from the repository's root:
#   OUT=$PWD/flu-sharded examples/cluster/slurm/submit.sh
set -euo pipefail
here=$(dirname "$0")
export OUT=${OUT:-$PWD/flu-sharded}
array=$(sbatch --parsable --export=ALL "$here/sweep.sbatch")
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" "$here/merge.sbatch")
echo "array job $array (4 shards), merge job $merge; watch with: simsweep status $OUT"
