"""A model that does nothing: one row per call, to measure the worker protocol's overhead."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import pyarrow as pa  # noqa: E402

import simsweep_worker  # noqa: E402

SCHEMA = pa.schema([("day", pa.int64()), ("infected", pa.int64())])


def simulate(params, seed):
    return {"prevalence": pa.table({"day": [0], "infected": [seed]}, schema=SCHEMA)}


if __name__ == "__main__":
    simsweep_worker.run(
        simulate,
        parameters=["beta"],
        outputs={"prevalence": {"day": "int64", "infected": "int64"}},
    )
