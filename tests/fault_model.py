"""A model that misbehaves on purpose, chosen by its `mode` parameter (tests only).

Parameters: `mode` (string), `x` (float). Output `values(k: int64, value: float64)`, three rows
drawn from `random.Random(seed)` and scaled by `x`, when the mode lets it return.

Modes: ok; error (raises ValueError); segfault (SIGSEGV to itself); hang (sleeps an hour);
exit137 (exits with 137); oom (allocates 8 GiB: MemoryError under a memory limit); garbage
(writes non-frames to the protocol stream); too_large (announces a frame over the limit);
crash_once (exits with 3 the first time it sees a seed, then succeeds; remembers seeds as files
in $FAULT_STATE_DIR); sigkill (SIGKILL to itself: not memory, a crash); alloc_abort (writes
Rust's allocation-failure message to stderr and aborts); hang_with_child (while the file
$FAULT_STATE_DIR/hang exists: starts `sleep 3600` in its process group, writes its pid to
$FAULT_STATE_DIR/child-<seed>, then hangs; else writes
$FAULT_STATE_DIR/started-<seed> and goes on as ok); slow (sleeps x seconds, then returns);
fail_odd_seed (raises ValueError for an odd seed); table (as ok, returned as a pyarrow Table);
ragged (columns of unequal length: an error of that task); forged replies that break the protocol, for
request id int(x): wrong_id (answers id 999999), bad_json (a reply that is not JSON),
wrong_tables (lists a table `other`), wrong_content_type (the table frame is text/plain),
byte_mismatch (announces 10 bytes, sends 4).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import simsweep_worker  # noqa: E402


def _reply(header):
    body = json.dumps(header).encode("utf-8")
    simsweep_worker.write_frame(simsweep_worker._protocol_out, body)


def _table(content_type, body):
    simsweep_worker.write_frame(simsweep_worker._protocol_out, body, content_type)


FORGED = {
    "wrong_id": lambda i: _reply({"id": 999999, "ok": True, "tables": []}),
    "bad_json": lambda i: simsweep_worker.write_frame(simsweep_worker._protocol_out, b"{not json"),
    "wrong_tables": lambda i: _reply({"id": i, "ok": True,
                                      "tables": [{"name": "other", "bytes": 0}]}),
    "wrong_content_type": lambda i: (
        _reply({"id": i, "ok": True, "tables": [{"name": "values", "bytes": 4}]}),
        _table("text/plain", b"abcd")),
    "byte_mismatch": lambda i: (
        _reply({"id": i, "ok": True, "tables": [{"name": "values", "bytes": 10}]}),
        _table(simsweep_worker.ARROW_STREAM, b"abcd")),
}


def simulate(params, seed):
    mode = params["mode"]
    if mode == "error":
        raise ValueError("mode error asks for an error")
    if mode == "segfault":
        print("fault_model: segfaulting now", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "hang":
        print("fault_model: hanging", file=sys.stderr, flush=True)
        time.sleep(3600)
    if mode == "exit137":
        os._exit(137)
    if mode == "oom":
        hog = bytearray(8 * 1024 * 1024 * 1024)
        return {"values": {"k": [len(hog)], "value": [0.0]}}
    if mode == "garbage":
        simsweep_worker._protocol_out.write(b"this is not a frame\r\n\r\n")
        simsweep_worker._protocol_out.flush()
        time.sleep(3600)
    if mode == "too_large":
        simsweep_worker._protocol_out.write(b"Content-Length: 999999999999\r\n\r\n")
        simsweep_worker._protocol_out.flush()
        time.sleep(3600)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "alloc_abort":
        print("memory allocation of 1073741824 bytes failed", file=sys.stderr, flush=True)
        os.abort()
    if mode == "hang_with_child" and not os.path.exists(
        os.path.join(os.environ["FAULT_STATE_DIR"], "hang")
    ):
        open(os.path.join(os.environ["FAULT_STATE_DIR"], "started-%d" % seed), "w").close()
    elif mode == "hang_with_child":
        child = subprocess.Popen(["sleep", "3600"])
        path = os.path.join(os.environ["FAULT_STATE_DIR"], "child-%d" % seed)
        with open(path + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.rename(path + ".tmp", path)
        time.sleep(3600)
    if mode == "fail_odd_seed" and seed % 2 == 1:
        raise ValueError("odd seed %d" % seed)
    if mode in FORGED:
        FORGED[mode](int(params["x"]))
        simsweep_worker._protocol_out.flush()
        time.sleep(3600)
    if mode == "slow":
        time.sleep(float(params["x"]))
    if mode == "crash_once":
        marker = os.path.join(os.environ["FAULT_STATE_DIR"], "crashed-%d" % seed)
        if not os.path.exists(marker):
            open(marker, "w").close()
            print("fault_model: crashing once for seed %d" % seed, file=sys.stderr, flush=True)
            os._exit(3)
    if mode == "ragged":
        return {"values": {"k": [0, 1], "value": [1.0]}}
    rng = random.Random(seed)
    x = float(params["x"])
    columns = {"k": [0, 1, 2], "value": [x * rng.random() for _ in range(3)]}
    if mode == "table":
        import pyarrow as pa
        return {"values": pa.table(columns)}
    return {"values": columns}


if __name__ == "__main__":
    simsweep_worker.run(
        simulate,
        parameters=["mode", "x"],
        outputs={"values": {"k": "int64", "value": "float64"}},
    )
