"""The engine is torch.nn.LSTM / torch.nn.GRU when no mask is active.

Pins: rate 0 (every scheme; native kernel, fused loop and reference loop) equals torch in values and
gradients; eval() is the identity for every scheme (zoneout: the expectation; ``test``
scaling: multiply by keep); state_dicts move both ways unchanged.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.engine import GRU, LSTM, SCHEMES

TOL = dict(rtol=0, atol=1e-10)
OURS = {"lstm": LSTM, "gru": GRU}
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU}
D, H, T, B = 3, 4, 5, 2




def make_pair(cell: str, layers: int = 1, batch_first: bool = False, **kw):
    torch.manual_seed(0)
    ours = OURS[cell](D, H, layers, batch_first=batch_first, **kw).double()
    ref = TORCH[cell](D, H, layers, batch_first=batch_first).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def inputs(cell: str, layers: int, batch_first: bool):
    g = torch.Generator().manual_seed(1)
    shape = (B, T, D) if batch_first else (T, B, D)
    x = torch.randn(shape, dtype=torch.double, generator=g, requires_grad=True)
    h0 = torch.randn(layers, B, H, dtype=torch.double, generator=g, requires_grad=True)
    c0 = torch.randn(layers, B, H, dtype=torch.double, generator=g, requires_grad=True)
    return x, ((h0, c0) if cell == "lstm" else h0)


def run(module, x, hx):
    out, state = module(x, hx)
    h, c = state if isinstance(state, tuple) else (state, None)
    return out, h, c


def grads_of(module, x, hx, out, h, c):
    """Gradients of a loss that touches output and final state, w.r.t. inputs and weights."""
    g = torch.Generator().manual_seed(2)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=g)).sum() + (h * 1.7).sum()
    if c is not None:
        loss = loss + (c * 0.3).sum()
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("impl", ["auto", "segment", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rate_zero_equals_torch_values_and_gradients(cell, scheme, layers, batch_first, impl):
    ours, ref = make_pair(cell, layers, batch_first, scheme=scheme, dropout=0.0, impl=impl)
    ours.train(), ref.train()
    x, hx = inputs(cell, layers, batch_first)
    o1, h1, c1 = run(ours, x, hx)
    o2, h2, c2 = run(ref, x, hx)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(h1, h2, **TOL)
    if cell == "lstm":
        torch.testing.assert_close(c1, c2, **TOL)
    for ga, gb in zip(grads_of(ours, x, hx, o1, h1, c1), grads_of(ref, x, hx, o2, h2, c2), strict=True):
        torch.testing.assert_close(ga, gb, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scheme_none_ignores_a_dropout_float_and_needs_no_hidden(cell):
    """`none` uses no site, so a sweep-wide dropout float applies to nothing."""
    ours, ref = make_pair(cell, 2, scheme="none", dropout=0.5)
    x = torch.randn(T, B, D, dtype=torch.double)
    o1, s1 = ours(x)
    o2, s2 = ref(x)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(s1, s2, **TOL)


def scheme_cases():
    for cell in ("lstm", "gru"):
        for scheme in SCHEMES:
            if scheme in ("none", "zoneout"):
                continue
            # Under test scaling eval multiplies by keep (moon's default): inverted is the dropout-free eval.
            yield cell, scheme, {"scaling": "inverted"} if SCHEMES[scheme].options.get("scaling") == "test" else {}
        yield "lstm", "state_dropout", {"drop_cell": True}
        yield cell, "variational", {"gate_masks": "tied"}
        yield cell, "semeniuta", {"granularity": "sequence"}
        yield cell, "state_dropout", {"granularity": "batch"}


@pytest.mark.parametrize("cell,scheme,options", list(scheme_cases()))
def test_eval_is_the_dropout_free_model(cell, scheme, options):
    ours, ref = make_pair(cell, 2, scheme=scheme, dropout=0.4, **options)
    x, hx = inputs(cell, 2, False)
    # The masks really are active in training (so the eval equality below means something).
    torch.manual_seed(3)
    o_train, _, _ = run(ours, x, hx)
    assert not torch.allclose(o_train, run(ref, x, hx)[0])
    ours.eval(), ref.eval()
    for a, b in zip(run(ours, x, hx), run(ref, x, hx)):
        if a is not None:
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zoneout_eval_is_the_expectation(cell):
    """Krueger et al. 2016: at test time h_t = p*h_{t-1} + (1-p)*h_new (and c for LSTM)."""
    p = 0.3
    ours, ref = make_pair(cell, 1, scheme="zoneout", dropout=p)
    ours.eval()
    x, hx = inputs(cell, 1, False)
    with torch.no_grad():
        out, h, c = run(ours, x, hx)
        step = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(D, H).double()
        step.load_state_dict({k[:-3]: v for k, v in ref.state_dict().items()})
        hp = hx[0][0] if cell == "lstm" else hx[0]
        cp = hx[1][0] if cell == "lstm" else None
        expected = []
        for t in range(T):
            if cell == "lstm":
                hn, cn = step(x[t], (hp, cp))
                hp, cp = p * hp + (1 - p) * hn, p * cp + (1 - p) * cn
            else:
                hp = p * hp + (1 - p) * step(x[t], hp)
            expected.append(hp)
    torch.testing.assert_close(out, torch.stack(expected), **TOL)
    torch.testing.assert_close(h[0], hp, **TOL)
    if cell == "lstm":
        torch.testing.assert_close(c[0], cp, **TOL)


@pytest.mark.parametrize("scheme", ["variational", "weightdrop"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_test_scaling_multiplies_by_keep_at_eval(cell, scheme):
    """The documented exception (drop-rnn code): no rescaling in training, x keep at eval.

    For both schemes eval then means x*keep in, U*keep (h_in, or the DropConnect weight),
    out*keep: a torch model with weight_hh scaled by keep reproduces it.
    """
    p = 0.25
    keep = 1 - p
    ours, ref = make_pair(cell, 1, scheme=scheme, dropout=p, scaling="test")
    ours(torch.randn(T, B, D, dtype=torch.double))
    values = set()
    for key, mask in ours.last_masks.items():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}, key  # no rescaling while training
        values |= set(mask.unique().tolist())
    assert values == {0.0, 1.0}  # (a small mask may keep every unit by chance; not all of them)
    ours.eval()
    with torch.no_grad():
        ref.weight_hh_l0.mul_(keep)
        x, hx = inputs(cell, 1, False)
        out, h, _ = run(ours, x, hx)
        ro, rh, _ = run(ref, x * keep, hx)
    torch.testing.assert_close(out, ro * keep, **TOL)
    torch.testing.assert_close(h, rh, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_dict_moves_both_ways(cell):
    torch.manual_seed(5)
    ref = TORCH[cell](D, H, 2, batch_first=True)
    ours = OURS[cell](D, H, 2, batch_first=True, scheme="weightdrop", dropout=0.3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    back = TORCH[cell](D, H, 2, batch_first=True)
    back.load_state_dict(ours.state_dict(), strict=True)
    for name, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[name], value)
    ours.eval()
    x = torch.randn(B, T, D)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)


def test_unbatched_input_matches_torch():
    ours, ref = make_pair("lstm", 2, scheme="variational", dropout=0.2)
    ours.eval()
    x = torch.randn(T, D, dtype=torch.double)
    o1, (h1, c1) = ours(x)
    o2, (h2, c2) = ref(x)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(h1, h2, **TOL)
    torch.testing.assert_close(c1, c2, **TOL)
