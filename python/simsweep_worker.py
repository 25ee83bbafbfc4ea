"""simsweep worker side: run a Python model as a simsweep external model.

Implements version 1 of the worker protocol (docs/worker-protocol.md) around one function::

    import simsweep_worker

    def simulate(params: dict, seed: int) -> dict:
        ...  # returns {output name: pyarrow.Table | pandas.DataFrame | polars.DataFrame}

    simsweep_worker.run(
        simulate,
        parameters=["beta", "gamma"],
        outputs={"prevalence": {"day": "int64", "infected": "int64"}},
    )

and, in the job::

    [model]
    command = ["python3", "model.py"]

Needs the standard library and pyarrow only (pandas/polars frames are converted when given).

What the helper does for the model:

- Frames messages on the process's real stdin/stdout; `print` and C-level writes to stdout are
  redirected to stderr so they cannot corrupt the protocol (simsweep keeps stderr's tail for
  failure records).
- Casts each returned table to the declared column types (a column missing or not castable is
  an error of that task).
- An exception in `simulate` becomes an `ok: false` reply with the exception's type and message
  (the traceback goes to stderr); `MemoryError` is reported with `kind: "oom"`, after which the
  worker exits (simsweep starts a fresh one).
"""

import io
import json
import os
import sys
import traceback

import pyarrow as pa
import pyarrow.ipc

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 * 1024 * 1024
ARROW_STREAM = "application/vnd.apache.arrow.stream"

_TYPES = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "utf8": pa.string(),
    "bool": pa.bool_(),
}


# The protocol stream while `run` serves (for tests that need to break the protocol).
_protocol_out = None


class ProtocolError(Exception):
    """The other side broke the framing; the worker cannot go on."""


def read_frame(stream):
    """Reads one frame; returns (headers dict with lower-case names, body bytes) or None at EOF."""
    headers = {}
    while True:
        line = stream.readline(1024)
        if not line:
            if headers:
                raise ProtocolError("end of input inside a frame header")
            return None
        if not line.endswith(b"\r\n"):
            raise ProtocolError("header line not ended by CRLF: %r" % line[:80])
        line = line[:-2]
        if not line:
            break
        name, sep, value = line.decode("ascii").partition(":")
        if not sep:
            raise ProtocolError("malformed header line: %r" % line[:80])
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    if length < 0 or length > MAX_FRAME_BYTES:
        raise ProtocolError("bad Content-Length %r" % headers.get("content-length"))
    body = stream.read(length)
    if len(body) != length:
        raise ProtocolError("end of input inside a frame body")
    return headers, body


def write_frame(stream, body, content_type=None):
    """Writes one frame (does not flush)."""
    header = "Content-Length: %d\r\n" % len(body)
    if content_type is not None:
        header += "Content-Type: %s\r\n" % content_type
    stream.write(header.encode("ascii") + b"\r\n")
    stream.write(body)


def _send_json(stream, message):
    write_frame(stream, json.dumps(message, separators=(",", ":")).encode("utf-8"))
    stream.flush()


def _to_arrow(value, name):
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(value, preserve_index=False)
    if module == "polars":
        return value.to_arrow()
    if isinstance(value, dict):
        return pa.table(value)
    raise TypeError(
        "output `%s` is a %s; return a pyarrow Table, a pandas or polars DataFrame, "
        "or a dict of columns" % (name, type(value).__name__)
    )


def _encode(table):
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class _Worker:
    def __init__(self, simulate, parameters, outputs, initialize):
        self.simulate = simulate
        self.parameters = list(parameters)
        self.outputs = []
        for name, columns in outputs.items():
            fields = []
            for column, type_name in columns.items():
                if type_name not in _TYPES:
                    raise ValueError(
                        "output `%s` column `%s`: type %r is not one of %s"
                        % (name, column, type_name, sorted(_TYPES))
                    )
                fields.append(pa.field(column, _TYPES[type_name]))
            self.outputs.append((name, columns, pa.schema(fields)))
        self.initialize = initialize

    def handle_initialize(self, message):
        version = message.get("protocol_version")
        if version != PROTOCOL_VERSION:
            return {"ok": False, "error": "protocol version %r not supported (this helper: %d)"
                    % (version, PROTOCOL_VERSION)}
        if self.initialize is not None:
            self.initialize(message.get("settings") or {})
        return {
            "ok": True,
            "protocol_version": PROTOCOL_VERSION,
            "parameters": self.parameters,
            "outputs": [
                {"name": name, "columns": [{"name": c, "type": t} for c, t in columns.items()]}
                for name, columns, _ in self.outputs
            ],
        }

    def handle_execute(self, message):
        """Returns (reply header, [table bodies]) or raises MemoryError."""
        request_id = message.get("id")
        result = self.simulate(dict(message.get("params") or {}), int(message["seed"]))
        if not isinstance(result, dict):
            raise TypeError("simulate returned a %s; return a dict {output name: table}"
                            % type(result).__name__)
        bodies = []
        for name, _, schema in self.outputs:
            if name not in result:
                raise KeyError("simulate returned no output `%s` (it returned %s)"
                               % (name, sorted(result)))
            table = _to_arrow(result[name], name)
            missing = [f.name for f in schema if f.name not in table.column_names]
            if missing:
                raise KeyError("output `%s` has no column(s) %s" % (name, missing))
            table = table.select(schema.names).cast(schema)
            bodies.append(_encode(table))
        header = {
            "id": request_id,
            "ok": True,
            "tables": [
                {"name": name, "bytes": len(body)}
                for (name, _, _), body in zip(self.outputs, bodies)
            ],
        }
        return header, bodies


def run(simulate, *, parameters, outputs, initialize=None):
    """Serves simsweep's requests on stdin/stdout until `shutdown` or end of input.

    simulate: `simulate(params: dict, seed: int) -> dict[str, table]`, called once per replicate.
    parameters: names of the parameters the model reads.
    outputs: `{output name: {column name: type}}`, types among int32, int64, uint32, uint64,
        float32, float64, utf8, bool; every call must return every output.
    initialize: optional `initialize(settings: dict)`, called once with `[model.settings]`.
    """
    # Keep the real stdout for the protocol and send everything else written to fd 1 to stderr.
    global _protocol_out
    proto_out = os.fdopen(os.dup(1), "wb")
    _protocol_out = proto_out
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer
    worker = _Worker(simulate, parameters, outputs, initialize)
    while True:
        frame = read_frame(proto_in)
        if frame is None:
            return
        _, body = frame
        message = json.loads(body)
        method = message.get("method")
        if method == "shutdown":
            return
        if method == "initialize":
            try:
                reply = worker.handle_initialize(message)
            except Exception as error:  # noqa: BLE001 - reported to simsweep
                traceback.print_exc()
                reply = {"ok": False, "error": "%s: %s" % (type(error).__name__, error)}
            _send_json(proto_out, reply)
            continue
        if method != "execute":
            _send_json(proto_out, {"id": message.get("id"), "ok": False,
                                   "error": "unknown method %r" % method})
            continue
        try:
            header, bodies = worker.handle_execute(message)
        except MemoryError as error:
            _send_json(proto_out, {"id": message.get("id"), "ok": False, "kind": "oom",
                                   "error": "MemoryError: %s" % error})
            sys.stderr.flush()
            os._exit(0)
        except Exception as error:  # noqa: BLE001 - reported to simsweep
            traceback.print_exc()
            sys.stderr.flush()
            _send_json(proto_out, {"id": message.get("id"), "ok": False, "kind": "error",
                                   "error": "%s: %s" % (type(error).__name__, error)})
            continue
        write_frame(proto_out, json.dumps(header, separators=(",", ":")).encode("utf-8"))
        for body in bodies:
            write_frame(proto_out, body, ARROW_STREAM)
        proto_out.flush()
