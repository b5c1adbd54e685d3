"""Behaviour that tells the schemes apart, and the GRU state explosion, measured.

Why these: the benchmark's claim is that the schemes differ in *where* they put noise.
Zero input separates dropout outside the recurrence (naive) from dropout inside it;
a saturated memory separates Semeniuta (drop the candidate only: no memory loss) from
Moon (drop the memory itself); and TensorFlow's state dropout with inverted scaling makes
a carried GRU state grow like (1/keep)^t (tensorflow/tensorflow#11650 for the LSTM c).
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.engine import GRU, LSTM

D, H, B = 3, 16, 4




def build(cell, scheme, **kw):
    torch.manual_seed(0)
    return (LSTM if cell == "lstm" else GRU)(D, H, scheme=scheme, **kw).double()


def final_h(module, x):
    _, state = module(x)
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_input_separates_naive_from_recurrent_schemes(cell):
    x = torch.zeros(8, B, D, dtype=torch.double)
    for scheme, changes in [("naive", False), ("variational", True), ("weightdrop", True),
                            ("moon", True), ("state_dropout", True)]:
        module = build(cell, scheme, dropout=0.5)
        module.eval()
        reference = final_h(module, x)
        module.train()
        for seed in range(3):
            torch.manual_seed(seed)
            trained = final_h(module, x)
            assert torch.equal(trained, reference) is not changes, (scheme, seed)


def saturated_lstm(scheme, **kw):
    """Forget gate open (f=1), input gate shut (i=0): the memory should just be carried."""
    module = build("lstm", scheme, dropout=0.5, **kw)
    with torch.no_grad():
        module.bias_ih_l0[:H] = -60.0  # i
        module.bias_ih_l0[H : 2 * H] = 60.0  # f
    return module


def test_semeniuta_keeps_the_memory_while_moon_zeroes_dropped_units():
    x = torch.randn(10, B, D, dtype=torch.double)
    c0 = torch.randn(1, B, H, dtype=torch.double)
    h0 = torch.zeros(1, B, H, dtype=torch.double)

    semeniuta = saturated_lstm("semeniuta")
    _, (_, c_n) = semeniuta(x, (h0, c0))
    assert (semeniuta.last_masks[(0, "g")] == 0).any()  # candidates really were dropped
    assert torch.equal(c_n, c0)  # ... and the memory lost nothing

    moon = saturated_lstm("moon")
    _, (_, c_n) = moon(x, (h0, c0))
    mask = moon.last_masks[(0, "c")]  # (B, H)
    dropped = mask == 0
    assert dropped.any() and (~dropped).any()
    assert (c_n[0][dropped] == 0).all()  # Moon wipes the dropped units of the memory
    # Test-time scaling (the default): kept units are carried unchanged, nothing compounds.
    torch.testing.assert_close(c_n[0][~dropped], c0[0][~dropped], rtol=1e-12, atol=0)

    compounding = saturated_lstm("moon", scaling="inverted")
    _, (_, c_n) = compounding(x, (h0, c0))
    kept = compounding.last_masks[(0, "c")] != 0
    # Inverted scaling multiplies a kept unit by 1/keep = 2 at every one of the 10 steps.
    torch.testing.assert_close(c_n[0][kept], (c0[0] * 2.0**10)[kept], rtol=1e-12, atol=0)


def carried_gru(scheme, keep):
    """A GRU whose update gate is saturated (z=1): h is carried through z*h unchanged."""
    module = build("gru", scheme, dropout=1 - keep)
    with torch.no_grad():
        module.bias_ih_l0[H : 2 * H] = 40.0
        module.weight_hh_l0[H : 2 * H] = 0.0  # keep z saturated however large h grows
    return module


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_gru_state_dropout_explodes_by_one_over_keep_per_step(keep):
    steps = 40
    module = carried_gru("state_dropout", keep)
    h0 = torch.randn(1, B, H, dtype=torch.double)
    with torch.no_grad():
        out, _ = module(torch.randn(steps, B, D, dtype=torch.double), h0)
    kept = module.last_masks[(0, "state")] != 0  # (B, H), fixed over the sequence
    log_norm = torch.stack([out[t][kept].norm() for t in range(steps)]).log()
    t = torch.arange(steps, dtype=torch.double)
    slope = ((t - t.mean()) * (log_norm - log_norm.mean())).sum() / ((t - t.mean()) ** 2).sum()
    assert slope.item() == pytest.approx(math.log(1 / keep), rel=0.05)


def test_gru_variational_stays_bounded_over_a_thousand_steps():
    module = carried_gru("variational", 0.5)
    with torch.no_grad():
        module.weight_hh_l0.copy_(torch.randn_like(module.weight_hh_l0))  # a live recurrence
        module.bias_ih_l0[H : 2 * H] = 0.0  # and a working update gate
        h0 = torch.randn(1, B, H, dtype=torch.double)
        out, h_n = module(torch.randn(1000, B, D, dtype=torch.double), h0)
    assert module.last_masks[(0, "h_in")].eq(0).any()
    # h_t = (1-z)*n + z*h_{t-1} is a convex mix of h_{t-1} and tanh: it can never leave the box;
    # the output is that state times the `out` mask (at most 1/keep = 2).
    box = max(1.0, h0.abs().max().item()) + 1e-12
    assert h_n.abs().max().item() <= box
    assert out.abs().max().item() <= 2 * box


def forget_open_lstm(drop_cell):
    module = build("lstm", "state_dropout", dropout=0.5, drop_cell=drop_cell)
    with torch.no_grad():
        module.bias_ih_l0[H : 2 * H] = 40.0  # f = 1: c carried with nothing in between
    return module


def test_lstm_state_dropout_stays_bounded_without_drop_cell():
    steps = 1000
    module = forget_open_lstm(drop_cell=False)
    c0 = torch.randn(1, B, H, dtype=torch.double)
    with torch.no_grad():
        out, (h_n, c_n) = module(torch.randn(steps, B, D, dtype=torch.double), (torch.zeros_like(c0), c0))
    # h reaches the next step only through U; c moves by at most |i*g| <= 1 per step.
    assert out.abs().max().item() <= 1.0
    assert h_n.abs().max().item() <= 2.0 + 1e-12  # one 1/keep factor, never compounded
    assert c_n.abs().max().item() <= c0.abs().max().item() + steps


def test_lstm_state_dropout_grows_with_drop_cell():
    """TF before 1.4 masked the whole LSTMStateTuple, c included (tensorflow#11650)."""
    steps = 40
    module = forget_open_lstm(drop_cell=True)
    c0 = torch.randn(1, B, H, dtype=torch.double)
    with torch.no_grad():
        _, (_, c_n) = module(torch.randn(steps, B, D, dtype=torch.double), (torch.zeros_like(c0), c0))
    kept = module.last_masks[(0, "state.c")] != 0
    growth = c_n[0][kept].abs().log().mean() - c0[0][kept].abs().log().mean()
    assert growth.item() > 0.5 * steps * math.log(2.0)  # exponential, not the linear drift above
