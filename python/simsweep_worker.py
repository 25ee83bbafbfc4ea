"""simsweep worker side: run a Python model as a simsweep external model.

Implements versions 1 and 2 of the worker protocol (docs/worker-protocol.md) around one
function::

    import simsweep_worker

    def simulate(params: dict, seed: int) -> dict:
        ...  # returns {output name: pyarrow.Table | pandas.DataFrame | polars.DataFrame}

    simsweep_worker.run(
        simulate,
        parameters=["beta", "gamma"],
        outputs={"prevalence": {"day": "int64", "infected": "int64"}},
    )

or, for a model that can run many replicates at once (vectorised with numpy, say), around
``simulate_many(params_list, seeds)``, which returns the outputs of every task at once (below),
and, in the job::

    [model]
    command = ["python3", "model.py"]

Needs the standard library and pyarrow only (pandas/polars frames are converted when given).

With protocol version 2 simsweep sends several tasks per message (`execute_many`); the helper
then calls `simulate` once per task (or `simulate_many` once for all) and sends each output as
one table for all tasks, with a `task` column in front. This shares the fixed cost of a message
and of the Arrow conversion among the tasks. A version-1 simsweep still gets one `execute` per
task.

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

import gc
import io
import json
import os
import sys
import traceback

import pyarrow as pa
import pyarrow.ipc

PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 1
TASK_COLUMN = "task"
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


class _TaskError(Exception):
    """A task's own failure inside `execute_many` (reported as that task's result)."""


class _Worker:
    def __init__(self, simulate, simulate_many, parameters, outputs, initialize):
        self.simulate = simulate
        self.simulate_many = simulate_many
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
            schema = pa.schema(fields)
            many = pa.schema([pa.field(TASK_COLUMN, pa.uint32())] + fields)
            self.outputs.append((name, columns, schema, many))
        self.initialize = initialize

    def handle_initialize(self, message):
        version = message.get("protocol_version")
        if not isinstance(version, int) or not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            return {"ok": False, "error": "protocol version %r not supported (this helper: %d to %d)"
                    % (version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)}
        maximum = message.get("max_protocol_version", version)
        # SIMSWEEP_WORKER_MAX_PROTOCOL=1 makes the helper answer as a version-1 worker (to
        # compare the two, or to rule out version 2 when looking for a fault).
        ours = min(PROTOCOL_VERSION, int(os.environ.get("SIMSWEEP_WORKER_MAX_PROTOCOL",
                                                        PROTOCOL_VERSION)))
        chosen = max(version, min(maximum, ours)) if isinstance(maximum, int) else version
        if self.simulate is None and chosen < 2:
            return {"ok": False, "error": "this model has only simulate_many, which needs protocol "
                    "version 2; simsweep offered up to %r and SIMSWEEP_WORKER_MAX_PROTOCOL allows "
                    "%r: give simulate too, or unset SIMSWEEP_WORKER_MAX_PROTOCOL" % (maximum, ours)}
        if self.initialize is not None:
            self.initialize(message.get("settings") or {})
        return {
            "ok": True,
            "protocol_version": chosen,
            "parameters": self.parameters,
            "outputs": [
                {"name": name, "columns": [{"name": c, "type": t} for c, t in columns.items()]}
                for name, columns, _, _ in self.outputs
            ],
        }

    def _call(self, params, seed):
        if self.simulate is not None:
            return self.simulate(params, seed)
        # One task through simulate_many: checked as in execute_many, then without `task`.
        tables = self._vectorised_tables(self.simulate_many([params], [seed]), 1)
        return {name: table.drop_columns([TASK_COLUMN])
                for (name, _, _, _), table in zip(self.outputs, tables)}

    def _table(self, result, name, schema):
        """One task's output `name` as a table of `schema` (raises on anything else)."""
        if not isinstance(result, dict):
            raise TypeError("simulate returned a %s; return a dict {output name: table}"
                            % type(result).__name__)
        if name not in result:
            raise KeyError("simulate returned no output `%s` (it returned %s)"
                           % (name, sorted(result)))
        table = _to_arrow(result[name], name)
        missing = [f.name for f in schema if f.name not in table.column_names]
        if missing:
            raise KeyError("output `%s` has no column(s) %s" % (name, missing))
        return table.select(schema.names).cast(schema)

    def handle_execute(self, message):
        """Returns (reply header, [table bodies]) or raises MemoryError."""
        request_id = message.get("id")
        result = self._call(dict(message.get("params") or {}), int(message["seed"]))
        bodies = [_encode(self._table(result, name, schema))
                  for name, _, schema, _ in self.outputs]
        header = {
            "id": request_id,
            "ok": True,
            "tables": [
                {"name": name, "bytes": len(body)}
                for (name, _, _, _), body in zip(self.outputs, bodies)
            ],
        }
        return header, bodies

    def handle_execute_many(self, message):
        """Returns (reply header, [table bodies]) for `execute_many`, or raises MemoryError."""
        request_id = message.get("id")
        tasks = message.get("tasks") or []
        params = [dict(t.get("params") or {}) for t in tasks]
        seeds = [int(t["seed"]) for t in tasks]
        results = [None] * len(tasks)   # per task: None (ok) or an error message
        if self.simulate is None:
            tables = self._many_vectorised(params, seeds, results)
        else:
            tables = self._many_by_task(params, seeds, results)
        bodies = [_encode(table) for table in tables]
        header = {
            "id": request_id,
            "ok": True,
            "results": [{"ok": True} if e is None else {"ok": False, "error": e} for e in results],
            "tables": [
                {"name": name, "bytes": len(body)}
                for (name, _, _, _), body in zip(self.outputs, bodies)
            ],
        }
        return header, bodies

    def _many_by_task(self, params, seeds, results):
        """`simulate` per task; each output's tables concatenated with a `task` column."""
        per_output = [[] for _ in self.outputs]   # (task index, result value)
        for index, (p, seed) in enumerate(zip(params, seeds)):
            try:
                result = self.simulate(p, seed)
                if not isinstance(result, dict):
                    raise TypeError("simulate returned a %s; return a dict {output name: table}"
                                    % type(result).__name__)
                for name, _, _, _ in self.outputs:
                    if name not in result:
                        raise KeyError("simulate returned no output `%s` (it returned %s)"
                                       % (name, sorted(result)))
            except MemoryError:
                raise
            except Exception as error:  # noqa: BLE001 - reported to simsweep per task
                traceback.print_exc()
                results[index] = "%s: %s" % (type(error).__name__, error)
                continue
            for slot, (name, _, _, _) in zip(per_output, self.outputs):
                slot.append((index, result[name]))
        tables = []
        for (name, _, schema, many), values in zip(self.outputs, per_output):
            table = _gather_columns(values, schema, many)
            if table is None:
                table = _concat_tables(values, name, schema, many, results)
            if table is None:
                parts = []
                for index, value in values:
                    if results[index] is not None:
                        continue
                    try:
                        part = self._table({name: value}, name, schema)
                    except Exception as error:  # noqa: BLE001 - that task's error
                        results[index] = "%s: %s" % (type(error).__name__, error)
                        continue
                    parts.append(part.add_column(
                        0, pa.field(TASK_COLUMN, pa.uint32()),
                        pa.array([index] * part.num_rows, pa.uint32())))
                table = pa.concat_tables(parts) if parts else many.empty_table()
            tables.append(table)
        # A task that failed on a later output has rows in an earlier one: drop them.
        failed = [i for i, e in enumerate(results) if e is not None]
        if failed:
            tables = [_drop_tasks(t, failed) for t in tables]
        return tables

    def _many_vectorised(self, params, seeds, results):
        """`simulate_many` once for all tasks; on an exception, once per task to find which."""
        try:
            return self._vectorised_tables(self.simulate_many(params, seeds), len(params))
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - retried task by task below
            if len(params) == 1:
                raise
            traceback.print_exc()
        parts = [[] for _ in self.outputs]
        for index, (p, seed) in enumerate(zip(params, seeds)):
            try:
                tables = self._vectorised_tables(self.simulate_many([p], [seed]), 1)
            except MemoryError:
                raise
            except Exception as error:  # noqa: BLE001 - that task's error
                traceback.print_exc()
                results[index] = "%s: %s" % (type(error).__name__, error)
                continue
            for slot, table in zip(parts, tables):
                slot.append(table.set_column(0, TASK_COLUMN,
                                             pa.array([index] * table.num_rows, pa.uint32())))
        return [pa.concat_tables(p) if p else many.empty_table()
                for p, (_, _, _, many) in zip(parts, self.outputs)]

    def _vectorised_tables(self, result, count):
        """simulate_many's `result` for `count` tasks as one table per output (with `task`).

        Raises when the result is not of a form it may take, a `task` value is out of range, or
        (dict form) a task has rows in no output: a task whose rows were left out would
        otherwise pass as a success with no rows.
        """
        if isinstance(result, list):
            if len(result) != count:
                raise ValueError("simulate_many returned %d results for %d tasks"
                                 % (len(result), count))
            tables = []
            for name, _, schema, many in self.outputs:
                parts = []
                for index, value in enumerate(result):
                    part = self._table(value, name, schema)
                    parts.append(part.add_column(
                        0, pa.field(TASK_COLUMN, pa.uint32()),
                        pa.array([index] * part.num_rows, pa.uint32())))
                tables.append(pa.concat_tables(parts) if parts else many.empty_table())
            return tables
        if not isinstance(result, dict):
            raise TypeError("simulate_many returned a %s; return a dict {output name: table "
                            "with a `task` column} or a list of per-task dicts"
                            % type(result).__name__)
        tables = []
        for name, _, _, many in self.outputs:
            if name not in result:
                raise KeyError("simulate_many returned no output `%s` (it returned %s)"
                               % (name, sorted(result)))
            table = _to_arrow(result[name], name)
            missing = [f.name for f in many if f.name not in table.column_names]
            if missing:
                raise KeyError("output `%s` has no column(s) %s" % (name, missing))
            table = table.select(many.names).cast(many)
            task = table.column(0).to_pylist() if table.num_rows else []
            if any(b < a for a, b in zip(task, task[1:])) or (task and task[-1] >= count):
                table = table.sort_by(TASK_COLUMN)
                task = table.column(0).to_pylist()
                if task and task[-1] >= count:
                    raise ValueError(
                        "simulate_many was given %d task(s) and returned rows of output `%s` "
                        "for task %d; `task` is the index in the lists it was given"
                        % (count, name, task[-1]))
            tables.append(table)
        present = set()
        for table in tables:
            present.update(table.column(0).to_pylist())
        missing = [i for i in range(count) if i not in present]
        if missing:
            raise ValueError(
                "simulate_many returned no rows in any output for task(s) %s of %d; return "
                "their rows, raise for a task that fails, or return a list of per-task dicts "
                "for tasks that have no rows" % (missing[:10], count))
        return tables


def _gather_columns(values, schema, many):
    """The fast path of `_many_by_task`: when every task returned a dict of equally long
    columns (lists or numpy arrays) with the declared names, one table built column by column
    without a table per task. None when anything differs (the slow path then finds per-task
    errors)."""
    if not values or not all(type(v) is dict for _, v in values):
        return None
    names = schema.names
    try:
        counts = []
        for _, value in values:
            lengths = {len(value[n]) for n in names}
            if len(lengths) != 1:
                return None
            counts.append(lengths.pop())
        task = []
        for (index, _), count in zip(values, counts):
            task.extend([index] * count)
        arrays = [pa.array(task, pa.uint32())]
        for field in schema:
            parts = [value[field.name] for _, value in values]
            if all(type(p) is list for p in parts):
                column = [x for p in parts for x in p]
            else:
                module = type(parts[0]).__module__.split(".")[0]
                if module != "numpy" or any(type(p) is not type(parts[0]) for p in parts):
                    return None
                import numpy
                column = numpy.concatenate(parts)
            arrays.append(pa.array(column).cast(field.type))
        return pa.Table.from_arrays(arrays, schema=many)
    except (KeyError, TypeError, ValueError, pa.ArrowException):
        return None


def _concat_tables(values, name, schema, many, results):
    """The path of `_many_by_task` for tables (pyarrow, pandas, polars): one concatenation,
    selection and cast for all tasks. None when the tasks' tables differ or do not convert (the
    slow path then finds per-task errors)."""
    try:
        tables = [_to_arrow(value, name) for _, value in values]
        if not tables or any(t.schema != tables[0].schema for t in tables):
            return None
        table = pa.concat_tables(tables).select(schema.names).cast(schema)
        task = []
        for (index, _), part in zip(values, tables):
            task.extend([index] * part.num_rows)
        return table.add_column(0, pa.field(TASK_COLUMN, pa.uint32()),
                                pa.array(task, pa.uint32())).cast(many)
    except (KeyError, TypeError, ValueError, pa.ArrowException):
        return None


def _drop_tasks(table, failed):
    if table.num_rows == 0:
        return table
    import pyarrow.compute as pc
    keep = pc.invert(pc.is_in(table.column(0), value_set=pa.array(failed, pa.uint32())))
    return table.filter(keep)


def run(simulate=None, *, parameters, outputs, initialize=None, simulate_many=None):
    """Serves simsweep's requests on stdin/stdout until `shutdown` or end of input.

    simulate: `simulate(params: dict, seed: int) -> dict[str, table]`, called once per replicate.
        A table is a pyarrow Table, a pandas or polars DataFrame, or a dict of columns (lists or
        numpy arrays; the fastest to convert).
    simulate_many: instead of `simulate`, for a vectorised model:
        `simulate_many(params_list: list[dict], seeds: list[int])` runs every task at once and
        returns either `{output name: table}` where each table has, besides the declared
        columns, a `task` column (int: the task's index in the lists; rows of a task together)
        or a list with one `{output name: table}` per task. If it raises, the helper calls it
        again once per task, so that only the failing tasks fail. Give one of the two.
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
    if (simulate is None) == (simulate_many is None):
        raise TypeError("give simulate or simulate_many (one of them)")
    worker = _Worker(simulate, simulate_many, parameters, outputs, initialize)
    # The modules imported so far (pyarrow, the model's) are there to stay: keep the cyclic
    # garbage collector from scanning them again and again while tasks allocate.
    gc.freeze()
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
        if method not in ("execute", "execute_many"):
            _send_json(proto_out, {"id": message.get("id"), "ok": False,
                                   "error": "unknown method %r" % method})
            continue
        try:
            if method == "execute":
                header, bodies = worker.handle_execute(message)
            else:
                header, bodies = worker.handle_execute_many(message)
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
