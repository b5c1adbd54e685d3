"""Training-mode semantics of every scheme against an independent gate-level oracle.

The oracle below is written from the papers' equations, gate by gate, and reads the masks
the module reports in ``last_masks``. If the engine applied a mask at the wrong place
(h_in to the carried state, one gate's mask to all gates, the state mask before the
output under TF semantics, ...) the outputs would differ.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.engine import GRU, LSTM

TOL = dict(rtol=0, atol=1e-10)
D, H, T, B = 3, 5, 6, 4




def at(mask, t, gate, granularity):
    """The mask entry for step ``t`` and gate ``gate`` (None: site inactive)."""
    if mask is None:
        return None
    if mask.dim() == (4 if granularity == "step" else 3):  # leading gate axis: untied
        mask = mask[gate]
    return mask[t] if granularity == "step" else mask


def mul(v, m):
    return v if m is None else v * m


def oracle(cell, module, x, h, c, masks, gran, pre_mask):
    """One layer, written out gate by gate. ``gran``: {site: granularity}."""
    G = 4 if cell == "lstm" else 3
    W = module.weight_ih_l0.chunk(G)
    U = module.weight_hh_l0.chunk(G)
    if "w_hh" in masks:
        U = (module.weight_hh_l0 * masks["w_hh"]).chunk(G)
    bi, bh = module.bias_ih_l0.chunk(G), module.bias_hh_l0.chunk(G)
    get = lambda key, t, k=0: at(masks.get(key), t, k, gran.get(key.split(".")[0]))  # noqa: E731
    outs = []
    for t in range(T):
        xs = [mul(x[t], get("x", t, k)) for k in range(G)]
        hs = [mul(h, get("h_in", t, k)) for k in range(G)]
        if cell == "lstm":
            pre = [xs[k] @ W[k].T + bi[k] + hs[k] @ U[k].T + bh[k] for k in range(G)]
            i, f, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[3])
            g = mul(torch.tanh(pre[2]), get("g", t))
            c_new = mul(f * c + i * g, get("c", t))
            h_new = o * torch.tanh(c_new)
            if "zoneout" in masks:
                dh, dc = get("zoneout", t), get("zoneout.c", t)
                h_new = dh * h + (1 - dh) * h_new
                c_new = dc * c + (1 - dc) * c_new
        else:
            r = torch.sigmoid(xs[0] @ W[0].T + bi[0] + hs[0] @ U[0].T + bh[0])
            z = torch.sigmoid(xs[1] @ W[1].T + bi[1] + hs[1] @ U[1].T + bh[1])
            n = torch.tanh(xs[2] @ W[2].T + bi[2] + r * (hs[2] @ U[2].T + bh[2]))
            n = mul(n, get("g", t))
            h_new = (1 - z) * n + z * h
            if "zoneout" in masks:
                d = get("zoneout", t)
                h_new = d * h + (1 - d) * h_new
            c_new = None
        out = h_new
        if "state" in masks:
            h_new = h_new * get("state", t)
            if "state.c" in masks:
                c_new = c_new * get("state.c", t)
            if not pre_mask:
                out = h_new
        outs.append(out)
        h, c = h_new, c_new
    out = torch.stack(outs)
    if "out" in masks:
        out = out * masks["out"]  # (T, B, H) * ((T, B, H) | (B, H) | (1, H))
    return out, h, c


CASES = [
    ("naive", {}),
    ("naive", {"granularity": "sequence"}),
    ("variational", {}),
    ("variational", {"gate_masks": "tied"}),
    ("variational", {"granularity": "step"}),
    ("variational", {"granularity": "batch"}),
    ("moon", {}),
    ("moon", {"granularity": "step"}),
    ("semeniuta", {}),
    ("semeniuta", {"granularity": "sequence"}),
    ("weightdrop", {}),
    ("zoneout", {}),
    ("state_dropout", {}),
    ("state_dropout", {"granularity": "batch"}),
    ("state_dropout", {"drop_cell": True}),
    ("variational", {"scaling": "test"}),
]


@pytest.mark.parametrize(
    "cell,scheme,options",
    [(cell, s, o) for cell in ("lstm", "gru") for s, o in CASES if cell == "lstm" or not o.get("drop_cell")],
)
def test_training_forward_matches_the_gate_level_oracle(cell, scheme, options):
    torch.manual_seed(0)
    module = (LSTM if cell == "lstm" else GRU)(D, H, scheme=scheme, dropout=0.4, **options).double()
    x = torch.randn(T, B, D, dtype=torch.double)
    h0 = torch.randn(1, B, H, dtype=torch.double)
    c0 = torch.randn(1, B, H, dtype=torch.double)
    out, state = module(x, (h0, c0) if cell == "lstm" else h0)
    h, c = state if cell == "lstm" else (state, None)
    masks = {key: m for (layer, key), m in module.last_masks.items()}
    assert masks, "a training forward must report its masks"
    gran = {site: cfg.granularity for site, cfg in module.plan.sites.items()}
    pre_mask = module.plan.state_output == "pre_mask"
    with torch.no_grad():
        e_out, e_h, e_c = oracle(cell, module, x, h0[0], c0[0] if cell == "lstm" else None, masks, gran, pre_mask)
    torch.testing.assert_close(out, e_out, **TOL)
    torch.testing.assert_close(h[0], e_h, **TOL)
    if cell == "lstm":
        torch.testing.assert_close(c[0], e_c, **TOL)


@pytest.mark.parametrize("scheme", ["naive", "weightdrop"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_kernel_and_reference_loop_agree_under_one_seed(cell, scheme):
    """haste's rule: the fast path and its pure reference draw the same masks and agree."""
    results = []
    for impl in ("auto", "segment"):
        torch.manual_seed(0)
        module = (LSTM if cell == "lstm" else GRU)(D, H, 2, scheme=scheme, dropout=0.3, impl=impl).double()
        x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
        out, state = module(x)
        h = state[0] if cell == "lstm" else state
        loss = (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum() + h.sum()
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((out, h, grads, module.last_masks))
    (o1, h1, g1, m1), (o2, h2, g2, m2) = results
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(h1, h2, **TOL)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_dropout_outputs_before_the_mask_and_carries_the_masked_state(cell):
    """TF DropoutWrapper: output and state dropout are separate (h_n is the masked state)."""
    torch.manual_seed(0)
    module = (LSTM if cell == "lstm" else GRU)(D, H, scheme="state_dropout", dropout=0.5).double()
    out, state = module(torch.randn(T, B, D, dtype=torch.double))
    h_n = state[0] if cell == "lstm" else state
    mask = module.last_masks[(0, "state")]  # (B, H)
    torch.testing.assert_close(h_n[0], out[-1] * mask, **TOL)
    assert (out[-1][mask == 0] != 0).all()  # the output keeps what the state drops


def test_moon_gru_outputs_the_masked_state():
    """Moon's GRU has no separate memory: the masked h is both output and carried state."""
    torch.manual_seed(0)
    module = GRU(D, H, scheme="moon", dropout=0.5).double()
    out, h_n = module(torch.randn(T, B, D, dtype=torch.double))
    mask = module.last_masks[(0, "state")]
    assert (out[:, mask == 0] == 0).all()
    torch.testing.assert_close(out[-1], h_n[0], **TOL)


def test_multilayer_masks_each_layer_boundary_once():
    """x masks every layer's input (the module's too); out masks the module's output only.

    A boundary between stacked layers gets one mask, as in Zaremba's, Gal's and AWD's code.
    """
    torch.manual_seed(0)
    module = LSTM(D, H, 3, scheme="naive", dropout=0.3).double()
    x = torch.randn(T, B, D, dtype=torch.double)
    out, (h_n, c_n) = module(x)
    m = module.last_masks
    assert {k for k in m} == {(layer, "x") for layer in range(3)} | {(2, "out")}
    inp = x
    with torch.no_grad():
        for layer in range(3):
            ref = nn.LSTM(inp.shape[-1], H).double()
            ref.load_state_dict({f"{name}_l0": getattr(module, f"{name}_l{layer}") for name in
                                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            o, (h, c) = ref(inp * m[(layer, "x")])
            torch.testing.assert_close(h[0], h_n[layer], **TOL)  # h_n is not masked by `out`
            inp = o
        inp = inp * m[(2, "out")]
    torch.testing.assert_close(out, inp, **TOL)


@pytest.mark.parametrize("impl", ["segment", "reference"])
@pytest.mark.parametrize(
    "cell,scheme,options",
    [(cell, s, o) for cell in ("lstm", "gru") for s, o in CASES if cell == "lstm" or not o.get("drop_cell")],
)
def test_reference_loop_gradients_match_the_gate_level_oracle(cell, scheme, options, impl):
    """Both loops' backward is autograd through the oracle: the fused one (hand-written backward)
    and the reference one (one-matmul gradient of U, chunked gates)."""
    torch.manual_seed(0)
    module = (LSTM if cell == "lstm" else GRU)(D, H, scheme=scheme, dropout=0.4, impl=impl, **options).double()
    x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=torch.double, requires_grad=True)
    out, state = module(x, (h0, c0) if cell == "lstm" else h0)
    h, c = state if cell == "lstm" else (state, None)
    masks = {key: m for (layer, key), m in module.last_masks.items()}
    gran = {site: cfg.granularity for site, cfg in module.plan.sites.items()}
    pre_mask = module.plan.state_output == "pre_mask"
    e_out, e_h, e_c = oracle(cell, module, x, h0[0], c0[0] if cell == "lstm" else None, masks, gran, pre_mask)
    weights = torch.randn(out.shape, dtype=torch.double, generator=torch.Generator().manual_seed(3))

    def loss(o, hn, cn):
        value = (o * weights).sum() + (hn * 1.3).sum()
        return value + (cn * 0.7).sum() if cn is not None else value

    leaves = [x, h0, *module.parameters()] + ([c0] if cell == "lstm" else [])
    ours = torch.autograd.grad(loss(out, h[0], c[0] if c is not None else None), leaves)
    expected = torch.autograd.grad(loss(e_out, e_h, e_c), leaves)
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reference_loop_under_no_grad_and_frozen_weights_matches(cell):
    """The one-matmul U gradient is skipped when U needs none; values do not change."""
    torch.manual_seed(0)
    module = (LSTM if cell == "lstm" else GRU)(D, H, 2, scheme="zoneout", dropout=0.3).double()
    x = torch.randn(T, B, D, dtype=torch.double)
    torch.manual_seed(1)
    o1 = module(x)[0]
    torch.manual_seed(1)
    with torch.no_grad():
        o2 = module(x)[0]
    for p in module.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    o3 = module(x.requires_grad_())[0]
    torch.testing.assert_close(o1.detach(), o2, **TOL)
    torch.testing.assert_close(o1.detach(), o3.detach(), **TOL)
    (gx,) = torch.autograd.grad(o3.sum(), [x])
    assert torch.isfinite(gx).all()
