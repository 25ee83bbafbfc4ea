"""The flu sweep as HyperQueue tasks through its Python API (PyPI `hyperqueue`): one task per
shard, each reading its index from HQ_TASK_ID, then the merge.

    python3 examples/cluster/hyperqueue/submit.py [--local] SIMSWEEP JOB OUT SHARDS

--local starts a HyperQueue server and one worker on this machine (what the tests do);
without it, the server of $HQ_SERVER_DIR (or HyperQueue's default) is used. Exits non-zero
when a task failed.
"""

import argparse
import subprocess
import sys
import tempfile

from hyperqueue import Client, Job, LocalCluster
from hyperqueue.cluster import WorkerConfig


def submit(client: Client, simsweep: str, job_file: str, out: str, shards: int) -> bool:
    job = Job(max_fails=shards)
    for _ in range(shards):
        # HyperQueue numbers the tasks 0..shards-1 and gives each its HQ_TASK_ID.
        job.program([simsweep, "run", job_file, "--out", out, "--shards", str(shards), "--workers", "1"],
                    crash_limit=3)
    submitted = client.submit(job)
    return client.wait_for_jobs([submitted], raise_on_error=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="start a local server and worker")
    parser.add_argument("simsweep")
    parser.add_argument("job")
    parser.add_argument("out")
    parser.add_argument("shards", type=int)
    args = parser.parse_args()
    if args.local:
        with tempfile.TemporaryDirectory() as server_dir:
            with LocalCluster(server_dir=server_dir) as cluster:
                cluster.start_worker(WorkerConfig(cores=2))
                ok = submit(cluster.client(), args.simsweep, args.job, args.out, args.shards)
    else:
        ok = submit(Client(), args.simsweep, args.job, args.out, args.shards)
    if not ok:
        print("a shard's task failed; `simsweep status OUT` says which", file=sys.stderr)
        return 1
    return subprocess.call([args.simsweep, "merge", args.out])


if __name__ == "__main__":
    sys.exit(main())
