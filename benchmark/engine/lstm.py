"""The LSTM: its reference step (the specification), its hand-written segment, and the layer runner.

PyTorch's gate conventions, so ``nn.LSTM`` weights load unchanged: gates ``i, f, g, o``,
``a_t = W x_t + b_ih + U h_{t-1} + b_hh``, ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``.

Where each site acts inside a step (each scheme uses one or two of them): ``x`` on the input
entering W -> ``h_in`` on h entering U -> ``g`` on the candidate -> memory update -> ``c``
on the new memory (Moon: h is computed from the masked c) -> ``zoneout`` -> ``state`` on the
carried state (TensorFlow: the step's output is taken before this mask).

Three ways to run a layer, chosen by ``run_layer``'s ``path``, all with the same masks:

* ``native``: the native kernel (``native.py``), when every site acts outside the recurrence;
* ``segment``: ``lstm_segment``, one autograd node per layer and segment with the backward
  written by hand, what training runs when a site acts inside the recurrence;
* ``reference``: ``lstm_reference``, plain autograd through ``lstm_reference_step``. It is
  the specification: no gradient tricks, and the tests hold the other two to it in float64,
  values and every gradient (tests/test_engine_segments.py).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from benchmark.engine import gemm, native
from benchmark.engine.cuda_graphs import run_steps
from benchmark.engine.masks import Mask, SegmentMasks, dropped_weight_hh, input_mask, segment_masks
from benchmark.engine.segment import (carry_state, gate_product, output_grads, recurrent_inputs, sigmoid_backward,
                                      tanh_backward)

GATES = 4


def lstm_reference_step(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                        bias_ih: Tensor | None, bias_hh: Tensor | None, m: SegmentMasks,
                        t: int) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step with the masks of step ``t``: ``x (B, D), h, c (B, H) -> (out, h_t, c_t)``."""
    a = gate_product(x, weight_ih, m.input[t] if m.input else None, m.input_untied) + gate_product(
        h, weight_hh, m.h_in[t] if m.h_in else None, m.untied)  # (B, 4H)
    if bias_ih is not None:
        a = a + bias_ih + bias_hh
    i, f, g, o = a.chunk(4, 1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    if m.g is not None:
        g = g * m.g[t]  # Semeniuta: only the new information is dropped
    c_new = f * c + i * g
    if m.c is not None:
        c_new = c_new * m.c[t]  # Moon: the masked memory makes h and is carried
    h_new = o * c_new.tanh()
    if m.zoneout is not None:  # Krueger et al.: h zones out towards h_{t-1}, c towards c_{t-1}
        h_new = m.zoneout[t] * h + (1 - m.zoneout[t]) * h_new
        c_new = m.zoneout_c[t] * c + (1 - m.zoneout_c[t]) * c_new
    out = h_new
    if m.state is not None:
        h_new = h_new * m.state[t]
        if m.state_c is not None:
            c_new = c_new * m.state_c[t]  # TensorFlow before 1.4 masked the whole state tuple
        if not m.output_pre_mask:
            out = h_new
    return out, h_new, c_new


def lstm_reference(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                   bias_hh: Tensor | None, m: SegmentMasks, trace: list | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The reference layer: ``lstm_reference_step`` over ``x (T, B, D)`` under autograd; ``(out (T, B, H), h_T, c_T)``.

    ``trace`` receives the carried ``(h, c)`` of every step, as the next step receives it.
    """
    outputs = []
    for t in range(x.size(0)):
        out, h, c = lstm_reference_step(x[t], h, c, weight_ih, weight_hh, bias_ih, bias_hh, m, t)
        outputs.append(out)
        if trace is not None:
            trace.append((h, c))
    return torch.stack(outputs), h, c


def lstm_forward_steps(xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, m: SegmentMasks):
    """The segment's forward recurrence, no autograd: what the backward needs, every step's activations kept.

    ``xw`` is (T, B, 4H), or (G, T, B, H) (``gate_major``: one block per gate) when the ``h_in``
    masks are untied. Returns ``(out (T, B, H), cs (T+1, B, H): c_0 .. c_T, tanh_c (T, B, H),
    carried (T, B, H) or None when it is ``out``, acts (T, B, 4H): i, f, tanh(g) before its mask, o,
    h_T, c_T)``.
    """
    gate_major = xw.dim() == 4
    steps, batch = xw.shape[-3], xw.shape[-2]
    hidden = h0.size(1)
    rec = gemm.Recurrent(weight_hh, GATES, m.h_in, m.untied, batch, forward=True)
    acts = xw.new_empty(steps, batch, GATES * hidden)
    cs = xw.new_empty(steps + 1, batch, hidden)
    cs[0] = c0
    tanh_c = xw.new_empty(steps, batch, hidden)  # tanh of the memory that makes h
    out = xw.new_empty(steps, batch, hidden)
    # The carried h is the output, unless the output is taken before the state mask.
    carried = xw.new_empty(steps, batch, hidden) if m.state is not None and m.output_pre_mask else out
    # Per-step views made once: indexing a Python list is free, indexing a tensor is not.
    if gate_major:
        bases = xw.unbind(1)  # (G, B, H) per step
    elif rec.untied:
        bases = [b.view(batch, GATES, hidden).transpose(0, 1) for b in xw.unbind(0)]
    else:
        bases = xw.unbind(0)  # (B, 4H) per step
    acts_t, c_t, tanh_t, out_t = acts.unbind(0), cs.unbind(0), tanh_c.unbind(0), out.unbind(0)
    hp, cp = h0, c_t[0]
    for t in range(steps):
        a_i, a_f, a_g, a_o = rec.gate_terms(hp, bases[t], t)  # (B, H) each
        i, f, cand, o = acts_t[t].chunk(4, 1)
        torch.sigmoid(a_i, out=i)
        torch.sigmoid(a_f, out=f)
        torch.tanh(a_g, out=cand)
        torch.sigmoid(a_o, out=o)
        if m.g is not None:
            cand = cand * m.g[t]
        c = torch.mul(f, cp, out=c_t[t + 1]).addcmul_(i, cand)  # c = f*c + i*g
        if m.c is not None:
            c.mul_(m.c[t])
        h = torch.mul(o, torch.tanh(c, out=tanh_t[t]), out=out_t[t])
        if m.zoneout is not None:
            h.lerp_(hp, m.zoneout[t])
            c.lerp_(cp, m.zoneout_c[t])
        if m.state is not None:
            h = carry_state(h, m, t, carried, out)
            if m.state_c is not None:
                c.mul_(m.state_c[t])
        hp, cp = h, c
    return out, cs, tanh_c, None if carried is out else carried, acts, hp.clone(), cp.clone()


def lstm_backward_steps(out: Tensor, h0: Tensor, u: Tensor, cs: Tensor, tanh_c: Tensor, carried: Tensor | None,
                        acts: Tensor, d_out: Tensor | None, d_h: Tensor | None, d_c: Tensor | None,
                        m: SegmentMasks, need_h0: bool, gate_major: bool):
    """Back through time by hand: ``(da, d h_0, d c_0)``; ``da`` holds every step's pre-activation
    gradient, (T, B, 4H), or (G, T, B, H) when ``gate_major``."""
    steps, batch, hidden = out.shape
    carried = out if carried is None else carried
    rec = gemm.Recurrent(u, GATES, m.h_in, m.untied, batch, forward=False)
    if gate_major:
        da = out.new_empty(GATES, steps, batch, hidden)
        da_t = da.unbind(1)  # per step: (G, B, H)
        d_gates = [tuple(d.unbind(0)) for d in da_t]  # per step: G contiguous (B, H)
    else:
        da = out.new_empty(steps, batch, GATES * hidden)
        da_t = da.unbind(0)
        d_gates = [d.chunk(4, 1) for d in da_t]
    dh = torch.zeros_like(h0) if d_h is None else d_h
    dc = torch.zeros_like(h0) if d_c is None else d_c
    c_t, tanh_t, acts_t = cs.unbind(0), tanh_c.unbind(0), acts.unbind(0)
    d_outs = [None] * steps if d_out is None else d_out.unbind(0)
    for t in range(steps - 1, -1, -1):
        i, f, cand, o = acts_t[t].chunk(4, 1)
        d_i, d_f, d_g, d_o = d_gates[t]
        dh = output_grads(m, dh, d_outs[t], t)  # d h_t before the state mask
        if m.state_c is not None:
            dc = dc * m.state_c[t]
        dh_z = dc_z = None
        if m.zoneout is not None:  # h = lerp(h_new, h_prev, d): d of it goes straight back
            dh_z, dc_z = dh * m.zoneout[t], dc * m.zoneout_c[t]
            dh, dc = dh - dh_z, dc - dc_z
        th = tanh_t[t]
        sigmoid_backward(torch.mul(dh, th, out=d_o), o, grad_input=d_o)
        through = dh * o
        dc = tanh_backward(through, th, grad_input=through).add_(dc)  # through h = o*tanh(c)
        if m.c is not None:
            dc.mul_(m.c[t])
        sigmoid_backward(torch.mul(dc, c_t[t], out=d_f), f, grad_input=d_f)
        if m.g is None:
            sigmoid_backward(torch.mul(dc, cand, out=d_i), i, grad_input=d_i)
            tanh_backward(torch.mul(dc, i, out=d_g), cand, grad_input=d_g)
        else:
            sigmoid_backward(torch.mul(dc, cand * m.g[t], out=d_i), i, grad_input=d_i)
            tanh_backward(torch.mul(dc, i, out=d_g).mul_(m.g[t]), cand, grad_input=d_g)
        dc = dc * f
        if dc_z is not None:
            dc.add_(dc_z)
        if t == 0 and not need_h0:
            break
        dh = rec.grad_h(da_t[t], t)
        if dh_z is not None:
            dh.add_(dh_z)
    return da, dh, dc


class _LSTMSegment(torch.autograd.Function):
    """``(xw (T, B, 4H), h0, c0 (B, H), U (4H, H)) -> (out (T, B, H), h_T, c_T)`` under ``SegmentMasks``.

    ``xw`` is the input projection with both biases (``gemm.project``); with untied ``h_in``
    masks it may come gate-major, (G, T, B, H), and its gradient goes back in the same layout. Forward: one GEMM and
    about ten in-place element-wise operations per step, activations kept per step.
    Backward: one GEMM and about a dozen element-wise operations per step, every step's
    pre-activation gradient written into one (T, B, 4H) buffer, which is ``d xw`` and gives
    ``dU`` in one product. On CUDA both loops run as replayed CUDA graphs (``cuda_graphs``).
    """

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, m: SegmentMasks):  # type: ignore[override]
        out, cs, tanh_c, carried, acts, h_n, c_n = run_steps(lstm_forward_steps, (xw, h0, c0, weight_hh), m)
        ctx.m, ctx.gate_major = m, xw.dim() == 4
        # Everything through save_for_backward: freed after backward, and in-place edits of
        # ``out`` (an output) are caught by autograd's version check.
        ctx.save_for_backward(h0, weight_hh, out, cs, tanh_c, carried, acts)
        ctx.set_materialize_grads(False)
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_h: Tensor | None, d_c: Tensor | None):  # type: ignore[override]
        h0, u, out, cs, tanh_c, carried, acts = ctx.saved_tensors
        m: SegmentMasks = ctx.m
        need_h0 = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gate_major = ctx.gate_major
        da, dh, dc = run_steps(lstm_backward_steps, (out, h0, u, cs, tanh_c, carried, acts, d_out, d_h, d_c), m,
                               (need_h0, gate_major))
        d_u = None
        if ctx.needs_input_grad[3]:
            h_in, gate_masks = recurrent_inputs(m, h0, out if carried is None else carried)
            d_u = gemm.recurrent_weight_grad(da, h_in, GATES, m.untied, gate_major, gate_masks)
        d_xw = da if ctx.needs_input_grad[0] else None
        return d_xw, (dh if need_h0 else None), (dc if need_h0 else None), d_u, None


def lstm_segment(xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, masks: SegmentMasks) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over the segment as one autograd node: ``(out (T, B, H), h_T, c_T)``."""
    return _LSTMSegment.apply(xw, h0, c0, weight_hh, masks)


def run_layer(x: Tensor, h0: Tensor, c0: Tensor, params: list[Tensor], masks: Mapping[str, Mask],
              sites: Mapping, *, path: str, output_pre_mask: bool,
              trace: list | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over ``x (T, B, D)`` with its drawn masks: ``(out (T, B, H), h_T, c_T)``.

    ``params``: ``[W, U]`` or ``[W, U, b_ih, b_hh]``; ``sites``: the layer's site configs
    (``DropoutPlan.layer_sites``); ``path``: ``native``, ``segment`` or ``reference`` (see the
    module doc). ``out`` is the layer's output before the ``out`` mask, which the caller applies.
    """
    if path == "native":
        return native.run_layer("LSTM", x, h0, c0, params, masks)
    m = segment_masks(masks, sites, x.size(0), output_pre_mask)
    weight_ih, weight_hh = params[0], dropped_weight_hh(params[1], masks)
    bias_ih, bias_hh = (params[2], params[3]) if len(params) == 4 else (None, None)
    if path == "reference":
        return lstm_reference(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, m, trace)
    x_mask, untied = input_mask(masks, sites)
    xw = gemm.project(x, weight_ih, None if bias_ih is None else bias_ih + bias_hh, x_mask, GATES, untied,
                      gate_major=m.untied)  # untied recurrence: every term kept per gate
    return lstm_segment(xw, h0, c0, weight_hh, m)
