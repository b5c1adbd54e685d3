"""Stability probes: how the carried state grows over a long sequence, with masks on.

Why: the GRU under TensorFlow-style state dropout blows up because a kept unit of the
carried state is multiplied by ``1/keep`` at every step (README, "Why the GRU explodes"; tensorflow issue
11650 for the LSTM's memory). Perplexity only says that a run diverged; the probe says
how fast the state grew and where, so a report can put the measured growth per step
beside ``1/keep``.

The probe runs the recurrent stack in training mode (masks sampled as in training) on
one long sequence from a zero state, and reads the carried state of every layer at
every step through the engine's ``trace`` (layers may differ in width: each is read at its own).
"""

from __future__ import annotations

import math

import torch

from benchmark.model import LanguageModel


def growth_per_step(norms: torch.Tensor) -> float | None:
    """exp of the least-squares slope of log(norm) against t: the factor the state grows by per step.

    Fitted over the steps whose norm is positive and finite: a state that overflowed or
    was zeroed says nothing more about the rate.
    """
    t = torch.arange(len(norms), dtype=torch.float64)
    ok = torch.isfinite(norms) & (norms > 0)
    if ok.sum() < 3:
        return None
    t, y = t[ok], norms[ok].double().log()
    slope = ((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum()
    return math.exp(slope.item())


@torch.no_grad()
def stability_probe(model: LanguageModel, tokens: torch.Tensor) -> dict:
    """Per-step carried-state norms of the last layer for (T, B) ``tokens``, masks on.

    Returns ``state_norm`` (T floats: the mean over the batch of the L2 norm of h_t),
    ``cell_norm`` (the LSTM memory c_t likewise, else None), ``max_state`` (the largest
    |value| of any carried state of any layer), and ``growth_per_step`` (see above; of c
    for the LSTM, whose h is bounded by tanh, of h for the GRU).
    """
    was_training = model.training
    devices = [tokens.device] if tokens.is_cuda else []
    # The probe samples masks; a forked generator keeps training's random stream untouched,
    # so a run with probes trains exactly as one without.
    with torch.random.fork_rng(devices=devices):
        model.train()
        try:
            x = model.embedding(tokens)  # (T, B, E)
            _, states = model.rnn.trace(x)
        finally:
            model.train(was_training)
    h, c = states[max(states)]  # the last layer: (T, B, H_last) each, c None for a GRU
    state_norm = h.double().norm(dim=-1).mean(dim=-1)  # (T,)
    cell_norm = c.double().norm(dim=-1).mean(dim=-1) if c is not None else None
    largest = max(max(s.abs().max().item() for s in (lh, lc) if s is not None) for lh, lc in states.values())
    return {
        "state_norm": [float(v) for v in state_norm],
        "cell_norm": [float(v) for v in cell_norm] if cell_norm is not None else None,
        "max_state": float(largest),
        "growth_per_step": growth_per_step(cell_norm if cell_norm is not None else state_norm),
    }
