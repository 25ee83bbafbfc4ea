"""A stochastic SIR model in plain Python, run by simsweep as an external model.

Discrete-time binomial chain (Bretó et al. 2009, Ann. Appl. Stat. 3(1):319-348) of the
Kermack-McKendrick SIR model with frequency-dependent transmission; time in days, rates per day,
`steps_per_day` steps a day. Each individual moves S -> I with probability 1 - exp(-beta I/N dt)
and I -> R with probability 1 - exp(-gamma dt) per step (Bernoulli draws from
`random.Random(seed)`, so the same seed gives the same rows).

Parameters: beta, gamma. Settings ([model.settings] in job.toml): population,
initial_infected, days, steps_per_day. Output: prevalence(day: int64, infected: int64), days
0..days, the number infected at the end of each day.
"""

import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import simsweep_worker  # noqa: E402

SETTINGS = {"population": 763, "initial_infected": 1, "days": 14, "steps_per_day": 4}


def initialize(settings):
    SETTINGS.update(settings)


def binomial(rng, n, p):
    return sum(1 for _ in range(n) if rng.random() < p)


def simulate(params, seed):
    beta, gamma = float(params["beta"]), float(params["gamma"])
    if beta < 0 or gamma < 0:
        raise ValueError("beta and gamma must be >= 0, got %r, %r" % (beta, gamma))
    n = int(SETTINGS["population"])
    steps = int(SETTINGS["steps_per_day"])
    dt = 1.0 / steps
    rng = random.Random(seed)
    s, i = n - int(SETTINGS["initial_infected"]), int(SETTINGS["initial_infected"])
    recover = 1.0 - math.exp(-gamma * dt)
    days, infected = [0], [i]
    for day in range(1, int(SETTINGS["days"]) + 1):
        for _ in range(steps):
            infect = binomial(rng, s, 1.0 - math.exp(-beta * i / n * dt))
            recovered = binomial(rng, i, recover)
            s, i = s - infect, i + infect - recovered
        days.append(day)
        infected.append(i)
    return {"prevalence": {"day": days, "infected": infected}}


if __name__ == "__main__":
    simsweep_worker.run(
        simulate,
        parameters=["beta", "gamma"],
        outputs={"prevalence": {"day": "int64", "infected": "int64"}},
        initialize=initialize,
    )
