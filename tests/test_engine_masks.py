"""Granularity, gate tying, scaling and mask bookkeeping, checked through behaviour.

Moon's mask zeroes memory units, and a zeroed unit of c gives an exactly-zero unit of
h = o*tanh(c): the zero pattern of the output shows which units each (step, sample) lost.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.engine import GRU, LSTM

D, H, T, B = 3, 16, 6, 8




def zero_pattern(cell: str, granularity: str, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    module = (LSTM if cell == "lstm" else GRU)(D, H, scheme="moon", dropout=0.5, granularity=granularity).double()
    out, _ = module(torch.randn(T, B, D, dtype=torch.double))
    return out == 0  # (T, B, H)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_masks_are_fixed_over_time_and_differ_between_samples(cell):
    zeros = zero_pattern(cell, "sequence")
    assert zeros.any()
    assert (zeros == zeros[0]).all()  # the same units are dropped at every step
    assert len({tuple(row.tolist()) for row in zeros[0]}) > 1  # but not the same for every sample


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_masks_differ_between_steps(cell):
    zeros = zero_pattern(cell, "step")
    assert zeros.any()
    assert any(not torch.equal(zeros[t], zeros[0]) for t in range(1, T))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batch_masks_are_shared_by_all_samples(cell):
    zeros = zero_pattern(cell, "batch")
    assert zeros.any() and not zeros.all()
    assert (zeros == zeros[0, 0]).all()  # every step and every sample lose the same units


def test_step_masks_at_x_and_out_are_redrawn_every_step():
    torch.manual_seed(0)
    module = LSTM(D, H, scheme="naive", dropout=0.5).double()
    out, _ = module(torch.randn(T, B, D, dtype=torch.double))
    zeros = out == 0
    assert any(not torch.equal(zeros[t], zeros[0]) for t in range(1, T))
    torch.manual_seed(0)
    locked = LSTM(D, H, scheme="naive", dropout=0.5, granularity="sequence").double()
    zeros = locked(torch.randn(T, B, D, dtype=torch.double))[0] == 0
    assert (zeros == zeros[0]).all()


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("gru", 3)])
def test_untied_gives_each_gate_its_own_mask_and_tied_one(cell, gates):
    cls = LSTM if cell == "lstm" else GRU
    torch.manual_seed(0)
    untied = cls(D, H, scheme="variational", dropout=0.5).double()
    untied(torch.randn(T, B, D, dtype=torch.double))
    for site, width in (("x", D), ("h_in", H)):
        mask = untied.last_masks[(0, site)]
        assert mask.shape == (gates, B, width)  # (G, B, D): one sequence mask per gate
        assert any(not torch.equal(mask[k], mask[0]) for k in range(1, gates))
    torch.manual_seed(0)
    tied = cls(D, H, scheme="variational", dropout=0.5, gate_masks="tied").double()
    tied(torch.randn(T, B, D, dtype=torch.double))
    assert tied.last_masks[(0, "h_in")].shape == (B, H)  # one mask shared by every gate
    # Behaviour (not only shape) is pinned by test_engine_reference's gate-level oracle.


def test_inverted_masks_rescale_by_one_over_keep_and_test_masks_do_not():
    p = 0.3
    torch.manual_seed(0)
    inv = LSTM(D, H, scheme="naive", dropout=p)
    inv(torch.randn(50, 64, D))
    mask = inv.last_masks[(0, "out")]
    assert mask.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert mask.mean().item() == pytest.approx(1.0, abs=0.02)  # expectation preserved
    assert (mask == 0).float().mean().item() == pytest.approx(p, abs=0.02)
    test = LSTM(D, H, scheme="naive", dropout=p, scaling="test")
    test(torch.randn(50, 64, D))
    assert set(test.last_masks[(0, "out")].unique().tolist()) == {0.0, 1.0}


def test_rates_per_site_from_a_mapping():
    torch.manual_seed(0)
    module = LSTM(D, H, scheme="variational", dropout={"h_in": 0.5})
    module(torch.randn(T, B, D))
    assert set(module.last_masks) == {(0, "h_in")}  # rate-0 sites draw nothing
    assert module.rates == {"emb": 0.0, "x": 0.0, "h_in": 0.5, "out": 0.0}


def test_masks_are_redrawn_every_training_forward_and_kept_through_eval():
    torch.manual_seed(0)
    module = GRU(D, H, scheme="state_dropout", dropout=0.5)
    x = torch.randn(T, B, D)
    module(x)
    first = module.last_masks[(0, "state")]
    module(x)
    second = module.last_masks[(0, "state")]
    assert not torch.equal(first, second)
    module.eval()
    module(x)
    assert module.last_masks[(0, "state")] is second  # eval draws nothing


@pytest.mark.parametrize("scheme", ["variational", "weightdrop", "moon", "naive"])
def test_mc_dropout_samples_under_no_grad_in_train_mode(scheme):
    """Gal eq. 4: the LM sets train() under no_grad; nothing depends on grad mode."""
    torch.manual_seed(0)
    module = LSTM(D, H, 2, scheme=scheme, dropout=0.4)
    x = torch.randn(T, B, D)
    with torch.no_grad():
        a, _ = module(x)
        b, _ = module(x)
        module.eval()
        c, _ = module(x)
        d, _ = module(x)
    assert not torch.equal(a, b)
    assert torch.equal(c, d)
    assert module.last_masks  # the samples are inspectable too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masks_hit_their_probability_in_every_dtype_and_repeat_under_a_seed(dtype):
    """``uniform < keep`` in float32 whatever the dtype: a bfloat16 uniform would round keep to 2^-8."""
    from benchmark.engine.masks import dropout_mask, zoneout_mask

    like = torch.empty(0, dtype=dtype)
    torch.manual_seed(3)
    drop = dropout_mask((200, 500), 0.3, "inverted", like)
    zone = zoneout_mask((200, 500), 0.15, like)
    assert drop.dtype == zone.dtype == dtype
    assert drop.unique().float().tolist() == pytest.approx([0.0, 1 / 0.7], rel=1e-2)
    assert (drop == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)  # 100k draws: sd 0.0014
    assert zone.float().mean().item() == pytest.approx(0.15, abs=0.005)
    torch.manual_seed(3)
    assert torch.equal(dropout_mask((200, 500), 0.3, "inverted", like), drop)


def test_segment_masks_declares_one_field_per_site_inside_the_recurrence():
    """Issue 27: the per-step mask lists are declared fields, found by name, and they are exactly the
    site table's sites inside the recurrence (with the LSTM memory's own masks) plus the input mask."""
    import dataclasses

    from benchmark.engine.masks import STEP_FIELDS, SegmentMasks

    lists = [f.name for f in dataclasses.fields(SegmentMasks) if f.type == "StepMasks"]
    assert tuple(lists) == STEP_FIELDS
    m = SegmentMasks(g=[1.0, 1.0])
    assert m.g == [1.0, 1.0] and m.h_in is None and not m.untied
    with pytest.raises(AttributeError):
        m.not_a_site  # noqa: B018 - nothing is made up on the fly
