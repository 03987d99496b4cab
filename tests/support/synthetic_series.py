"""Synthetic series with known answers, for the interval methods' tests and coverage benchmark."""

from __future__ import annotations

import math

import numpy as np


def markov_flags(rng: np.random.Generator, replications: int, steps: int, stay: float) -> np.ndarray:
    """(replications, steps) two-state chains that keep their state with probability `stay`, started from
    the stationary distribution (1/2 each, by symmetry): bunched successes and failures, known mean 1/2."""
    flags = np.empty((replications, steps))
    state = rng.random(replications) < 0.5
    for step in range(steps):
        flags[:, step] = state
        state = np.where(rng.random(replications) < stay, state, ~state)
    return flags


def ar1(rng: np.random.Generator, n: int, phi: float = 0.7) -> np.ndarray:
    """Stationary AR(1) noise (unit innovations): neighbouring values correlated, like latencies."""
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / math.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x
