"""The hand-written segments (one autograd node per layer, backward by hand) against the reference.

haste's rule: every fast path has a pure-PyTorch reference beside it, compared under one
seed. Here the reference is plain autograd through the reference step (``impl="reference"``);
the fast path is what training runs (``impl="auto"`` / ``"segment"``). Both draw the same
masks from the same RNG calls, so outputs, final states and the gradients of every parameter,
the input and the initial state must agree to float64 rounding, for every in-loop scheme and
option. ``gradcheck`` then checks the hand-written backward against finite differences directly.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.engine import GRU, LSTM
from benchmark.engine import gemm, gemm_choice, gru, lstm
from benchmark.engine.masks import SegmentMasks

TOL = dict(rtol=1e-10, atol=1e-12)
D, H, T, B = 3, 5, 6, 4

# Every in-loop scheme with the options that change what runs inside the recurrence.
CASES = [
    ("variational", {}),  # untied gate masks on x and h_in
    ("variational", {"gate_masks": "tied"}),
    ("variational", {"granularity": "step"}),
    ("variational", {"granularity": "batch"}),
    ("variational", {"scaling": "test"}),
    ("moon", {}),
    ("moon", {"granularity": "step"}),
    ("semeniuta", {}),
    ("semeniuta", {"granularity": "sequence"}),
    ("zoneout", {}),
    ("zoneout", {"granularity": "sequence"}),
    ("state_dropout", {}),
    ("state_dropout", {"granularity": "batch"}),
    ("state_dropout", {"drop_cell": True}),
]
CELL_CASES = [(cell, s, o) for cell in ("lstm", "gru") for s, o in CASES if cell == "lstm" or not o.get("drop_cell")]


def make(cell, impl, layers=2, dtype=torch.double, **kw):
    torch.manual_seed(0)
    return (LSTM if cell == "lstm" else GRU)(D, H, layers, impl=impl, **kw).to(dtype)


def inputs(cell, layers, dtype=torch.double):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, D, dtype=dtype, generator=g, requires_grad=True)
    h0 = torch.randn(layers, B, H, dtype=dtype, generator=g, requires_grad=True)
    c0 = torch.randn(layers, B, H, dtype=dtype, generator=g, requires_grad=True)
    return x, h0, c0


def run(module, cell, x, h0, c0, seed=7):
    """Forward under a fixed seed (so both paths draw the same masks), then every gradient."""
    torch.manual_seed(seed)
    out, state = module(x, (h0, c0) if cell == "lstm" else h0)
    h, c = state if cell == "lstm" else (state, None)
    g = torch.Generator().manual_seed(2)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=g).to(out.device)).sum() + (h * 1.3).sum()
    leaves = [x, h0, *module.parameters()]
    if c is not None:
        loss = loss + (c * 0.7).sum()
        leaves.append(c0)
    grads = torch.autograd.grad(loss, leaves)
    return out, h, c, grads, {k: v.clone() for k, v in module.last_masks.items()}


def assert_same(a, b, **tol):
    (o1, h1, c1, g1, m1), (o2, h2, c2, g2, m2) = a, b
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1), "both paths must draw the same masks"
    torch.testing.assert_close(o1, o2, **tol)
    torch.testing.assert_close(h1, h2, **tol)
    if c1 is not None:
        torch.testing.assert_close(c1, c2, **tol)
    for x, y in zip(g1, g2, strict=True):
        torch.testing.assert_close(x, y, **tol)


@pytest.mark.parametrize("cell,scheme,options", CELL_CASES)
def test_segment_matches_the_reference_values_and_gradients(cell, scheme, options):
    results = []
    for impl in ("auto", "reference"):
        module = make(cell, impl, scheme=scheme, dropout=0.4, **options)
        results.append(run(module, cell, *inputs(cell, 2)))
    assert results[0][4], "a training forward must draw masks"
    assert_same(*results, **TOL)


@pytest.mark.parametrize("way", gemm_choice.GATE_WAYS)
@pytest.mark.parametrize("cell,options", [("lstm", {}), ("lstm", {"granularity": "step"}),
                                          ("gru", {}), ("gru", {"granularity": "step"})])
def test_untied_recurrence_matches_the_reference_either_way(cell, options, way):
    """Untied ``h_in`` masks run their G per-gate products looped or batched (``gemm.untied_way``,
    measured per CPU): both ways give the reference's values and every gradient to float64 rounding."""
    with gemm_choice.forced(way):
        assert gemm.Recurrent(torch.ones(8, 2), 4, [torch.ones(4, 1, 2)], True, 3, True).way == way
        results = [run(make(cell, impl, scheme="variational", dropout=0.4, **options), cell, *inputs(cell, 2))
                   for impl in ("auto", "reference")]
    assert_same(*results, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_segment_matches_the_reference_with_every_site_at_once(cell):
    """Sites stacked in one step (not a registered scheme, but the step math must compose)."""
    from benchmark.engine.masks import dropout_mask, zoneout_mask

    torch.manual_seed(0)
    G = 4 if cell == "lstm" else 3
    x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
    h0, c0 = (torch.randn(B, H, dtype=torch.double, requires_grad=True) for _ in range(2))
    w = torch.randn(G * H, D, dtype=torch.double, requires_grad=True)
    u = torch.randn(G * H, H, dtype=torch.double, requires_grad=True)
    b_ih, b_hh = (torch.randn(G * H, dtype=torch.double, requires_grad=True) for _ in range(2))
    like = x
    for untied, pre_mask in [(True, False), (False, True)]:
        x_mask = dropout_mask((G, T, B, D) if untied else (T, B, D), 0.3, "inverted", like)
        h_in = dropout_mask((G, B, H) if untied else (B, H), 0.3, "inverted", like)
        kw = dict(input=list(x_mask.unbind(1 if untied else 0)), input_untied=untied, h_in=[h_in] * T, h_in_untied=untied,
                  g=list(dropout_mask((T, B, H), 0.3, "inverted", like).unbind(0)),
                  zoneout=list(zoneout_mask((T, B, H), 0.3, like).unbind(0)),
                  state=[dropout_mask((B, H), 0.3, "inverted", like)] * T, output_pre_mask=pre_mask)
        if cell == "lstm":
            kw.update(c=[dropout_mask((B, H), 0.3, "inverted", like)] * T,
                      zoneout_c=list(zoneout_mask((T, B, H), 0.3, like).unbind(0)),
                      state_c=[dropout_mask((B, H), 0.3, "inverted", like)] * T)
        m = SegmentMasks(**kw)
        results = []
        for path in ("segment", "reference"):
            if cell == "lstm":
                if path == "segment":
                    xw = gemm.project(x, w, b_ih + b_hh, x_mask, G, untied)
                    out, h, c = lstm.lstm_segment(xw, h0, c0, u, m)
                else:
                    out, h, c = lstm.lstm_reference(x, h0, c0, w, u, b_ih, b_hh, m)
                loss = (out * out.detach().cos()).sum() + h.sum() * 1.1 + c.sum() * 0.9
                leaves = [x, h0, c0, w, u, b_ih, b_hh]
            else:
                if path == "segment":
                    out, h = gru.gru_segment(gemm.project(x, w, b_ih, x_mask, G, untied), h0, u, b_hh, m)
                else:
                    out, h = gru.gru_reference(x, h0, w, u, b_ih, b_hh, m)
                loss = (out * out.detach().cos()).sum() + h.sum() * 1.1
                leaves = [x, h0, w, u, b_ih, b_hh]
            results.append((out, h, torch.autograd.grad(loss, leaves)))
        (o1, h1, g1), (o2, h2, g2) = results
        torch.testing.assert_close(o1, o2, **TOL)
        torch.testing.assert_close(h1, h2, **TOL)
        for p, q in zip(g1, g2, strict=True):
            torch.testing.assert_close(p, q, **TOL)


@pytest.mark.parametrize("cell,scheme,options", [
    ("lstm", "zoneout", {}), ("gru", "zoneout", {}),  # eval: the expectation (a float) inside the loop
    ("lstm", "variational", {"scaling": "test"}), ("gru", "semeniuta", {"scaling": "test"}),  # eval: x keep
])
def test_segment_matches_the_reference_in_eval_with_float_masks(cell, scheme, options):
    results = []
    for impl in ("segment", "reference"):
        module = make(cell, impl, scheme=scheme, dropout=0.3, **options).eval()
        results.append(run(module, cell, *inputs(cell, 2)))
    assert_same(*results, **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_segment_under_no_grad_and_with_frozen_weights(cell):
    """MC-dropout evaluation (train mode under no_grad) and a frozen U take the segment too."""
    module = make(cell, "segment", scheme="variational", dropout=0.3)
    x, h0, c0 = inputs(cell, 2)
    hx = (h0, c0) if cell == "lstm" else h0
    torch.manual_seed(3)
    expected = module(x, hx)[0].detach()
    torch.manual_seed(3)
    with torch.no_grad():
        torch.testing.assert_close(module(x, hx)[0], expected, **TOL)
    for p in module.parameters():
        p.requires_grad_(False)
    torch.manual_seed(3)
    out = module(x, hx)[0]
    torch.testing.assert_close(out.detach(), expected, **TOL)
    (gx,) = torch.autograd.grad(out.sum(), [x])
    assert torch.isfinite(gx).all()


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    """The hand-written backward must not consume or overwrite what it saved."""
    module = make("lstm", "segment", scheme="zoneout", dropout=0.3)
    x, h0, c0 = inputs("lstm", 2)
    torch.manual_seed(3)
    out, (h, c) = module(x, (h0, c0))
    loss = out.pow(2).sum() + h.sum()
    first = torch.autograd.grad(loss, [x, *module.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *module.parameters()])
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_in_place_edit_of_the_output_is_caught():
    """The output is saved for backward: editing it in place must raise, not give wrong gradients."""
    module = make("lstm", "segment", scheme="moon", dropout=0.3)
    x, h0, c0 = inputs("lstm", 2)
    out, _ = module(x, (h0, c0))
    raw = module.last_raw_output  # the last layer's output straight from the segment
    raw.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


# ----------------------------------------------------------------------------- gradcheck
def _mask_sets(cell, G):
    """One LoopMasks per kind of site, small random masks in float64 (fixed by the seed)."""
    from benchmark.engine.masks import dropout_mask, zoneout_mask

    like = torch.zeros((), dtype=torch.double)
    seq = lambda: [dropout_mask((2, 3), 0.3, "inverted", like)] * 4  # noqa: E731
    step = lambda: list(dropout_mask((4, 2, 3), 0.3, "inverted", like).unbind(0))  # noqa: E731
    zone = lambda: list(zoneout_mask((4, 2, 3), 0.4, like).unbind(0))  # noqa: E731
    sets = {
        "plain": SegmentMasks(),
        "h_in tied": SegmentMasks(h_in=seq()),
        "h_in untied": SegmentMasks(h_in=[dropout_mask((G, 2, 3), 0.3, "inverted", like)] * 4, h_in_untied=True),
        "g": SegmentMasks(g=step()),
        "zoneout": SegmentMasks(zoneout=zone(), zoneout_c=zone() if cell == "lstm" else None),
        "state": SegmentMasks(state=seq(), state_c=seq() if cell == "lstm" else None),
        "state pre-mask": SegmentMasks(state=seq(), output_pre_mask=True),
        "eval floats": SegmentMasks(h_in=[0.7] * 4, zoneout=[0.3] * 4, zoneout_c=[0.3] * 4 if cell == "lstm" else None),
    }
    if cell == "lstm":
        sets["c"] = SegmentMasks(c=seq())
    return sets


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradcheck_of_the_segments(cell):
    G = 4 if cell == "lstm" else 3
    torch.manual_seed(0)
    xw = torch.randn(4, 2, G * 3, dtype=torch.double, requires_grad=True)  # (T, B, G*H), T=4, B=2, H=3
    h0 = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    u = (torch.randn(G * 3, 3, dtype=torch.double) * 0.5).requires_grad_()
    b = torch.randn(G * 3, dtype=torch.double, requires_grad=True)
    for name, masks in _mask_sets(cell, G).items():
        if cell == "lstm":
            ok = torch.autograd.gradcheck(lambda *a: lstm.lstm_segment(*a, masks), (xw, h0, c0, u))
        else:
            ok = torch.autograd.gradcheck(lambda *a: gru.gru_segment(*a, masks), (xw, h0, u, b))
            ok = ok and torch.autograd.gradcheck(lambda *a: gru.gru_segment(*a, None, masks), (xw, h0, u))
        assert ok, name


def test_gradcheck_of_the_input_projection_tied_and_untied():
    """``gemm.project``'s hand-written backward (dX and dW on the fast GEMMs, one block per gate when untied)."""
    from benchmark.engine.masks import dropout_mask

    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, dtype=torch.double, requires_grad=True)  # (T, B, D)
    w = torch.randn(4 * 5, 3, dtype=torch.double, requires_grad=True)  # (G*H, D)
    b = torch.randn(4 * 5, dtype=torch.double, requires_grad=True)
    for mask, untied in [(None, False), (dropout_mask((4, 2, 3), 0.3, "inverted", x), False),
                         (dropout_mask((4, 2, 3), 0.3, "inverted", x), True),  # untied, sequence: (G, B, D)
                         (dropout_mask((4, 4, 2, 3), 0.3, "inverted", x), True)]:  # untied, step: (G, T, B, D)
        assert torch.autograd.gradcheck(lambda *a: gemm.project(*a, mask, 4, untied), (x, w, b)), (mask is None, untied)
        assert torch.autograd.gradcheck(lambda *a: gemm.project(*a, None, mask, 4, untied), (x, w))


# ----------------------------------------------------------------------------- float32 / oneDNN
@pytest.mark.parametrize("backend", ["onednn", "blas", "oneDNN disabled"])
@pytest.mark.parametrize("cell,scheme,options", [
    ("lstm", "variational", {}), ("lstm", "variational", {"gate_masks": "tied"}), ("lstm", "zoneout", {}),
    ("lstm", "semeniuta", {}), ("gru", "moon", {}), ("gru", "state_dropout", {}), ("gru", "variational", {"gate_masks": "tied"}),
])
def test_float32_fast_path_matches_the_reference(cell, scheme, options, backend, monkeypatch):
    """float32 on CPU runs each product on oneDNN's linear or the BLAS, whichever ``gemm_choice``
    picks for the CPU: both, and the plain products without oneDNN, compute what the reference does."""
    onednn = backend != "oneDNN disabled"
    if onednn and not gemm.use_onednn(torch.zeros(1)):
        pytest.skip("this torch has no oneDNN prepacked linear")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)  # restored after the test
    assert gemm.use_onednn(torch.zeros(1)) is onednn
    results = []
    with gemm_choice.forced(backend if onednn else None):
        assert (gemm.PackedLinear(torch.ones(4, 3), 2).packed is not None) is (backend == "onednn")
        for impl in ("auto", "reference"):
            module = make(cell, impl, dtype=torch.float32, scheme=scheme, dropout=0.3, **options)
            results.append(run(module, cell, *inputs(cell, 2, torch.float32)))
    assert_same(*results, rtol=1e-4, atol=1e-5)


def test_onednn_is_used_only_for_float32_cpu(monkeypatch):
    assert not gemm.use_onednn(torch.zeros(1, dtype=torch.double))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not gemm.use_onednn(torch.zeros(1))


# ----------------------------------------------------------------------------- which loop runs
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_impl_selects_the_segment_or_the_reference_and_trace_uses_the_reference(cell, monkeypatch):
    module = lstm if cell == "lstm" else gru
    calls = {"segment": 0, "reference": 0}
    for name, key in ((f"{cell}_segment", "segment"), (f"{cell}_reference", "reference")):
        original = getattr(module, name)

        def counting(*a, _orig=original, _key=key, **kw):
            calls[_key] += 1
            return _orig(*a, **kw)
        monkeypatch.setattr(module, name, counting)
    x = torch.randn(T, B, D)
    make(cell, "auto", dtype=torch.float32, scheme="zoneout", dropout=0.3)(x)
    assert calls == {"segment": 2, "reference": 0}
    make(cell, "reference", dtype=torch.float32, scheme="zoneout", dropout=0.3)(x)
    assert calls == {"segment": 2, "reference": 2}
    make(cell, "auto", dtype=torch.float32, scheme="zoneout", dropout=0.3).trace(x)
    assert calls == {"segment": 2, "reference": 4}


# ----------------------------------------------------------------------------- CUDA graphs
@pytest.fixture
def staged_graphs(monkeypatch):
    """The CUDA-graph plumbing (static buffers, compacted masks, cloned outputs) on the CPU, without capture."""
    from benchmark.engine import cuda_graphs

    caches = {fn: cuda_graphs.GraphCache(fn, capture=False) for fn in (
        lstm.lstm_forward_steps, lstm.lstm_backward_steps, gru.gru_forward_steps, gru.gru_backward_steps)}
    monkeypatch.setattr(cuda_graphs, "graphs_apply", lambda t: True)
    monkeypatch.setattr(cuda_graphs, "_caches", caches)
    return caches


@pytest.mark.parametrize("cell,scheme,options", CELL_CASES)
def test_the_graphed_loops_match_the_reference(cell, scheme, options, staged_graphs):
    """What CUDA replays is the same function on static copies of its inputs: same values and gradients."""
    results = []
    for impl in ("auto", "reference"):
        module = make(cell, impl, scheme=scheme, dropout=0.4, **options)
        results.append(run(module, cell, *inputs(cell, 2)))
    assert_same(*results, **TOL)
    forward = staged_graphs[lstm.lstm_forward_steps if cell == "lstm" else gru.gru_forward_steps]
    assert len(forward.entries) == 1, "both layers have one signature: one graph, replayed"


def test_a_graph_is_replayed_with_new_inputs_and_its_outputs_are_copies(staged_graphs):
    module = make("gru", "auto", scheme="state_dropout", dropout=0.3)
    x, h0, _ = inputs("gru", 2)
    torch.manual_seed(1)
    first, _ = module(x, h0)
    torch.manual_seed(2)
    second, _ = module(x * 2, h0)  # new masks and inputs through the same graph
    reference = make("gru", "reference", scheme="state_dropout", dropout=0.3)
    torch.manual_seed(2)
    expected, _ = reference(x * 2, h0)
    torch.testing.assert_close(second, expected, **TOL)
    assert not torch.equal(first, second), "a replay must not hand back the previous call's buffers"
    assert len(staged_graphs[gru.gru_forward_steps].entries) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_match_the_reference_on_the_gpu():
    """Every in-loop case, captured and replayed on the GPU, against the reference there (float64)."""
    for cell, scheme, options in CELL_CASES:
        results = []
        for impl in ("auto", "reference"):
            module = make(cell, impl, scheme=scheme, dropout=0.4, **options).cuda()
            x, h0, c0 = (t.detach().cuda().requires_grad_() for t in inputs(cell, 2))
            results.append(run(module, cell, x, h0, c0))
        assert_same(*results, rtol=1e-9, atol=1e-11)
