"""A numpy binomial-chain SIR for the external-model benchmark (`benches/external.sh`).

The same model as `examples/python-sir/model.py` (frequency-dependent SIR, 763 pupils, 14 days
of 4 steps), with numpy's binomial draws instead of a Bernoulli loop, so that a task costs
~100 µs and the protocol's overhead shows. Forms (first argument):

    python3 sir_model.py simulate            serve simsweep with simulate(params, seed)
    python3 sir_model.py many                serve simsweep with simulate_many(params, seeds)
    python3 sir_model.py noop                serve simsweep with a model that does nothing
    python3 sir_model.py loop R [noop]       no simsweep: call simulate in a plain loop, R times
                                             for each parameter set of sets.csv (as the job)

Every form gives the same rows for the same (parameters, seed).
"""

import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import simsweep_worker  # noqa: E402

POPULATION, INITIAL, DAYS, STEPS = 763, 1, 14, 4
DAY = np.arange(DAYS + 1, dtype=np.int64)


def _run(beta, gamma, seed):
    rng = np.random.default_rng(seed)
    dt = 1.0 / STEPS
    s, i = POPULATION - INITIAL, INITIAL
    recover = 1.0 - math.exp(-gamma * dt)
    infected = np.empty(DAYS + 1, dtype=np.int64)
    infected[0] = i
    for day in range(1, DAYS + 1):
        for _ in range(STEPS):
            infect = int(rng.binomial(s, 1.0 - math.exp(-beta * i / POPULATION * dt)))
            recovered = int(rng.binomial(i, recover))
            s, i = s - infect, i + infect - recovered
        infected[day] = i
    return infected


def simulate(params, seed):
    return {"prevalence": {"day": DAY, "infected": _run(params["beta"], params["gamma"], seed)}}


def simulate_many(params, seeds):
    infected = [_run(p["beta"], p["gamma"], s) for p, s in zip(params, seeds)]
    task = np.repeat(np.arange(len(seeds), dtype=np.uint32), DAYS + 1)
    return {"prevalence": {"task": task, "day": np.tile(DAY, len(seeds)),
                           "infected": np.concatenate(infected)}}


def noop(params, seed):
    return {"prevalence": {"day": [0], "infected": [seed]}}


def loop(replicates, model):
    import csv
    import time
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sets.csv")) as f:
        sets = [{"beta": float(row["beta"]), "gamma": float(row["gamma"])}
                for row in csv.DictReader(f)]
    start = time.perf_counter()
    for n, params in enumerate(sets):
        for replicate in range(replicates):
            model(params, n * replicates + replicate)
    elapsed = time.perf_counter() - start
    count = len(sets) * replicates
    print("loop: %d calls in %.3f s: %.1f us per call" % (count, elapsed, elapsed / count * 1e6))


if __name__ == "__main__":
    form = sys.argv[1]
    outputs = {"prevalence": {"day": "int64", "infected": "int64"}}
    if form == "loop":
        loop(int(sys.argv[2]), noop if sys.argv[3:] == ["noop"] else simulate)
    elif form == "many":
        simsweep_worker.run(simulate_many=simulate_many, parameters=["beta", "gamma"],
                            outputs=outputs)
    else:
        simsweep_worker.run(noop if form == "noop" else simulate, parameters=["beta", "gamma"],
                            outputs=outputs)
