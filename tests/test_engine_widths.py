"""Per-layer widths (AWD-LSTM's 1150, 1150, 400) and the ``between`` site, as data.

``hidden_size`` may be one width per layer: layer ``l`` reads the output of layer ``l-1``,
and the state is a list of per-layer ``(B, H_l)`` tensors. Every path (native kernel, fused
loop, reference loop, eval, trace) must run it and agree. ``between`` masks the boundaries
inside the stack at its own rate; with one float rate a scheme that lists it must draw
exactly the masks it drew when ``x`` masked those boundaries.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.engine import GRU, LSTM, resolve

TOL = dict(rtol=1e-10, atol=1e-12)
D, T, B = 3, 6, 4
WIDTHS = (7, 6, 5)
CLS = {"lstm": LSTM, "gru": GRU}


def _state_h(cell, state):
    return state[0] if cell == "lstm" else state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scheme,impl", [("none", "auto"), ("weightdrop", "auto"), ("variational", "segment"),
                                         ("variational", "reference"), ("zoneout", "auto")])
def test_ragged_widths_give_per_layer_shapes_on_every_path(cell, scheme, impl):
    torch.manual_seed(0)
    module = CLS[cell](D, WIDTHS, 3, scheme=scheme, dropout=0.3, impl=impl)
    assert [tuple(getattr(module, f"weight_hh_l{k}").shape) for k in range(3)] == [
        (module._gates * w, w) for w in WIDTHS]
    assert [getattr(module, f"weight_ih_l{k}").shape[1] for k in range(3)] == [D, 7, 6]
    x = torch.randn(T, B, D)
    for mode in ("train", "eval"):
        getattr(module, mode)()
        out, state = module(x)
        assert out.shape == (T, B, WIDTHS[-1])
        hs = _state_h(cell, state)
        assert isinstance(hs, list) and [tuple(h.shape) for h in hs] == [(B, w) for w in WIDTHS]
        if cell == "lstm":
            assert [tuple(c.shape) for c in state[1]] == [(B, w) for w in WIDTHS]
        out2, _ = module(x, state)  # the list form is accepted back as hx
        assert out2.shape == out.shape
    module.train()
    if scheme != "none":
        masks = module.last_masks
        widths_in = (D, 7, 6)
        for (layer, key), mask in masks.items():
            if key in ("x", "between"):
                assert mask.shape[-1] == widths_in[layer]
            elif key == "w_hh":
                assert tuple(mask.shape) == (module._gates * WIDTHS[layer], WIDTHS[layer])
            else:
                assert mask.shape[-1] == WIDTHS[layer]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_ragged_widths_unbatched_and_batch_first(cell):
    torch.manual_seed(0)
    module = CLS[cell](D, list(WIDTHS), 3, batch_first=True, scheme="variational", dropout=0.2)
    out, state = module(torch.randn(B, T, D))
    assert out.shape == (B, T, WIDTHS[-1])
    out, state = module(torch.randn(T, D))  # unbatched
    assert out.shape == (T, WIDTHS[-1])
    assert [tuple(h.shape) for h in _state_h(cell, state)] == [(w,) for w in WIDTHS]
    out2, _ = module(torch.randn(T, D), state)
    assert out2.shape == (T, WIDTHS[-1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loop_and_reference_agree_with_ragged_widths_values_and_gradients(cell):
    results = []
    for impl in ("segment", "reference"):
        torch.manual_seed(0)
        module = CLS[cell](D, WIDTHS, 3, scheme="variational", dropout=0.3, impl=impl).double()
        x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
        h0 = [torch.randn(B, w, dtype=torch.double, requires_grad=True) for w in WIDTHS]
        hx = (h0, [torch.randn(B, w, dtype=torch.double) for w in WIDTHS]) if cell == "lstm" else h0
        out, state = module(x, hx)
        hs = _state_h(cell, state)
        loss = (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum()
        loss = loss + sum((h * (k + 1)).sum() for k, h in enumerate(hs))
        grads = torch.autograd.grad(loss, [x, *h0, *module.parameters()])
        results.append((out, hs, grads, module.last_masks))
    (o1, h1, g1, m1), (o2, h2, g2, m2) = results
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    torch.testing.assert_close(o1, o2, **TOL)
    for a, b in zip(h1, h2, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_kernel_and_loop_agree_with_ragged_widths(cell):
    results = []
    for impl in ("auto", "segment"):
        torch.manual_seed(0)
        module = CLS[cell](D, WIDTHS, 3, scheme="weightdrop", dropout=0.3, impl=impl).double()
        x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
        out, state = module(x)
        grads = torch.autograd.grad(out.sin().sum() + _state_h(cell, state)[0].sum(), [x, *module.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0], **TOL)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_stacked_ragged_lstm_equals_three_single_layer_torch_lstms():
    torch.manual_seed(0)
    widths = (8, 8, 5)
    ours = LSTM(D, widths, 3).double()
    refs = []
    for layer, width in enumerate(widths):
        ref = nn.LSTM(D if layer == 0 else widths[layer - 1], width).double()
        ref.load_state_dict({f"{name}_l0": getattr(ours, f"{name}_l{layer}")
                             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        refs.append(ref)
    x = torch.randn(T, B, D, dtype=torch.double)
    h0 = [torch.randn(B, w, dtype=torch.double) for w in widths]
    c0 = [torch.randn(B, w, dtype=torch.double) for w in widths]
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        out, (h_n, c_n) = ours(x, (h0, c0))
        inp = x
        for layer, ref in enumerate(refs):
            inp, (h, c) = ref(inp, (h0[layer][None], c0[layer][None]))
            torch.testing.assert_close(h_n[layer], h[0], **TOL)
            torch.testing.assert_close(c_n[layer], c[0], **TOL)
        torch.testing.assert_close(out, inp, **TOL)


def test_int_hidden_size_keeps_torch_contract_and_initialisation():
    torch.manual_seed(0)
    ours = LSTM(D, 6, 2)
    torch.manual_seed(0)
    ref = nn.LSTM(D, 6, 2)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # same draws, same order, same bound
    out, (h, c) = ours(torch.randn(T, B, D))
    assert h.shape == c.shape == (2, B, 6) and isinstance(h, torch.Tensor)


def test_reset_parameters_uses_each_layers_own_width():
    torch.manual_seed(0)
    module = GRU(D, (100, 4), 2)
    for layer, width in enumerate((100, 4)):
        params = torch.cat([p.flatten() for p in module._layer_params(layer)])
        bound = 1 / math.sqrt(width)
        assert params.abs().max() <= bound
        assert params.abs().max() > 0.9 * bound  # filled, not a narrower bound


@pytest.mark.parametrize("hidden_size,match", [
    ((4, 5), "hidden_size as a sequence must hold num_layers=3"),
    ((4, 0, 5), "hidden_size as a sequence must hold"),
    ((4, True, 5), "hidden_size as a sequence must hold"),
    ("abc", "hidden_size must be a positive integer or a sequence"),
    (0, "hidden_size must be a positive integer or a sequence"),
])
def test_bad_widths_are_one_line_errors(hidden_size, match):
    with pytest.raises(ValueError, match=match) as err:
        LSTM(D, hidden_size, 3)
    assert "\n" not in str(err.value)


def test_bad_ragged_state_is_a_one_line_error_naming_the_argument():
    module = LSTM(D, WIDTHS, 3)
    x = torch.randn(T, B, D)
    good = [torch.zeros(B, w) for w in WIDTHS]
    with pytest.raises(ValueError, match="^h0 must be a list of 3 tensors"):
        module(x, (torch.zeros(3, B, 5), good))
    bad_c = r"^c0 must be a list of tensors of shapes .* got \[\(4, 7\), \(4, 6\), \(4, 4\)\]"
    with pytest.raises(ValueError, match=bad_c):
        module(x, (good, [torch.zeros(B, 7), torch.zeros(B, 6), torch.zeros(B, 4)]))
    with pytest.raises(ValueError, match="^h0 must be a tensor of shape"):
        LSTM(D, 5, 3)(x, (good, good))


def test_trace_flatten_and_repr_with_ragged_widths():
    torch.manual_seed(0)
    module = LSTM(D, WIDTHS, 3, scheme="state_dropout", dropout=0.3, drop_cell=True)
    (out, (h_n, c_n)), states = module.trace(torch.randn(T, B, D))
    for layer, width in enumerate(WIDTHS):
        h, c = states[layer]
        assert h.shape == c.shape == (T, B, width)
        torch.testing.assert_close(h[-1], h_n[layer])
    module.flatten_parameters()  # no-op on CPU, must not fail on the widths
    assert "LSTM(3, (7, 6, 5), num_layers=3" in repr(module)


# ---------------------------------------------------------------------------- between


def test_weightdrop_lists_between_with_the_sequence_granularity_option():
    plan = resolve("weightdrop", "lstm", 0.3)
    assert plan.sites["between"].rate == 0.3 and plan.sites["between"].granularity == "sequence"
    assert resolve("weightdrop", "gru", 0.3, granularity="step").sites["between"].granularity == "step"
    mapped = resolve("weightdrop", "lstm", {"x": 0.4, "between": 0.25, "out": 0.4})
    assert (mapped.rate("x"), mapped.rate("between"), mapped.rate("out")) == (0.4, 0.25, 0.4)
    with pytest.raises(ValueError, match="site 'between' is not used by scheme 'variational'"):
        resolve("variational", "lstm", {"between": 0.2})
    # A scheme without `between` keeps `x` on every layer's input.
    assert "x" in resolve("naive", "lstm", 0.3).layer_sites(2, 3)
    sites = mapped.layer_sites(1, 3)
    assert "between" in sites and "x" not in sites and "out" not in sites
    assert "x" in mapped.layer_sites(0, 3) and "between" not in mapped.layer_sites(0, 3)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_between_zero_leaves_the_inner_boundary_unmasked_and_x_masks_the_input(cell):
    torch.manual_seed(0)
    module = CLS[cell](D, 5, 2, scheme="weightdrop", dropout={"x": 0.5, "between": 0.0}).double()
    x = torch.randn(T, B, D, dtype=torch.double)
    out, _ = module(x)
    assert set(module.last_masks) == {(0, "x")}
    x_mask = module.last_masks[(0, "x")]  # (B, D): sequence granularity
    assert (x_mask == 0).any() and (x_mask == 2.0).any()
    # The same stack by hand: layer 0 sees the masked input, layer 1 the raw output of layer 0.
    ref = CLS[cell](D, 5, 2).double()  # scheme none: no mask anywhere
    ref.load_state_dict(module.state_dict())
    with torch.no_grad():
        expected, _ = ref(x * x_mask)
    torch.testing.assert_close(out, expected, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_between_has_its_own_rate(cell):
    torch.manual_seed(0)
    module = CLS[cell](D, 400, 3, scheme="weightdrop", dropout={"x": 0.4, "between": 0.25, "out": 0.1})
    module(torch.randn(T, 50, D))
    m = module.last_masks
    assert {k for k in m if k[1] in ("x", "between", "out")} == {(0, "x"), (1, "between"), (2, "between"), (2, "out")}
    assert m[(0, "x")].max().item() == pytest.approx(1 / 0.6)
    assert m[(1, "between")].max().item() == pytest.approx(1 / 0.75)
    assert (m[(1, "between")] == 0).double().mean().item() == pytest.approx(0.25, abs=0.02)
    assert m[(2, "out")].max().item() == pytest.approx(1 / 0.9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("impl", ["auto", "segment", "reference"])
@pytest.mark.parametrize("options", [{}, {"granularity": "step"}])
def test_float_rate_weightdrop_draws_what_x_on_every_layer_drew(cell, impl, options):
    """A float rate gives `between` the same rate as `x`: same RNG calls, same masks, same output.

    Before `between` existed, `x` masked every layer's input (drawn first in each layer's
    draw order, the input's width). The mapping below sets `between` = `x` explicitly; both
    must equal a by-hand stack that masks each layer's input with the mask drawn first.
    """
    runs = []
    for dropout in (0.3, {"emb": 0.3, "x": 0.3, "between": 0.3, "w_hh": 0.3, "out": 0.3}):
        torch.manual_seed(0)
        module = CLS[cell](D, 5, 3, scheme="weightdrop", dropout=dropout, impl=impl, **options).double()
        x = torch.randn(T, B, D, dtype=torch.double)
        out, state = module(x)
        runs.append((out, module.last_masks, torch.rand(4)))  # the RNG stream after the forward
    (o1, m1, r1), (o2, m2, r2) = runs
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    assert torch.equal(o1, o2) and torch.equal(r1, r2)
    # What the draws were before `between`: per layer x (input width), w_hh, then out on the last.
    torch.manual_seed(0)
    fresh = CLS[cell](D, 5, 3, scheme="weightdrop", dropout=0.3, **options).double()
    assert torch.equal(fresh.weight_hh_l0, module.weight_hh_l0)
    torch.randn(T, B, D, dtype=torch.double)
    from benchmark.engine.masks import dropout_mask, mask_shape

    gran = options.get("granularity", "sequence")
    like = torch.empty(0, dtype=torch.double)
    for layer in range(3):
        key = "x" if layer == 0 else "between"
        expected = dropout_mask(mask_shape(gran, T, B, D if layer == 0 else 5), 0.3, "inverted", like)
        assert torch.equal(m1[(layer, key)], expected)
        assert torch.equal(m1[(layer, "w_hh")], dropout_mask((fresh._gates * 5, 5), 0.3, "inverted", like))
    assert torch.equal(m1[(2, "out")], dropout_mask(mask_shape(gran, T, B, 5), 0.3, "inverted", like))
    assert torch.equal(torch.rand(4), r1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_between_follows_the_gate_masks_rule_of_x(cell):
    """No registered scheme has both, so the plan is built by hand: untied `between` masks per gate, on every path."""
    from dataclasses import replace

    from benchmark.engine.schemes import SiteConfig

    results = []
    for impl in ("auto", "segment", "reference"):
        torch.manual_seed(0)
        module = CLS[cell](D, WIDTHS, 3, scheme="variational", dropout=0.3, impl=impl).double()
        plan = module.plan
        module.plan = replace(plan, sites={**plan.sites, "between": SiteConfig(0.2, "sequence", "inverted", "untied")})
        assert module.plan.needs_loop(True)
        x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
        out, _ = module(x)
        grads = torch.autograd.grad(out.sin().sum(), [x, *module.parameters()])
        results.append((out, grads, module.last_masks))
    masks = results[0][2]
    assert tuple(masks[(0, "x")].shape) == (module._gates, B, D)
    assert tuple(masks[(1, "between")].shape) == (module._gates, B, 7) and (2, "x") not in masks
    assert masks[(1, "between")].max().item() == pytest.approx(1 / 0.8)
    for out, grads, m in results[1:]:
        assert m.keys() == masks.keys() and all(torch.equal(m[k], masks[k]) for k in m)
        torch.testing.assert_close(out, results[0][0], **TOL)
        for a, b in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(a, b, **TOL)
