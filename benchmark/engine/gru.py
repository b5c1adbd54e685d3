"""The GRU: its reference step (the specification), its hand-written segment, and the layer runner.

PyTorch's gate conventions, so ``nn.GRU`` weights load unchanged: gates ``r, z, n``,
``r = σ(W_r x + b_ir + U_r h + b_hr)``, ``z = σ(W_z x + b_iz + U_z h + b_hz)``,
``n = tanh(W_n x + b_in + r*(U_n h + b_hn))``, ``h_t = (1-z)*n + z*h_{t-1}``.

Where each site acts inside a step: ``x`` on the input entering W -> ``h_in`` on h entering U
-> ``g`` on the candidate n -> the update -> ``zoneout`` -> ``state`` on the carried state.
A GRU carries h into the next step through ``z*h_{t-1}`` with no matrix in between, which is
why a ``state`` mask under inverted scaling compounds there (tensorflow issue 11650).

The three paths (``native``, ``segment``, ``reference``) are those of ``lstm.py``.
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

GATES = 3


def gru_reference_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                       bias_hh: Tensor | None, m: SegmentMasks, t: int) -> tuple[Tensor, Tensor]:
    """One GRU step with the masks of step ``t``: ``x (B, D), h (B, H) -> (out, h_t)``."""
    gx = gate_product(x, weight_ih, m.input[t] if m.input else None, m.input_untied)  # (B, 3H)
    gh = gate_product(h, weight_hh, m.h_in[t] if m.h_in else None, m.untied)  # (B, 3H)
    if bias_ih is not None:
        gx, gh = gx + bias_ih, gh + bias_hh
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    if m.g is not None:
        n = n * m.g[t]  # Semeniuta: drop the candidate, not the carried state
    h_new = (1 - z) * n + z * h
    if m.zoneout is not None:
        h_new = m.zoneout[t] * h + (1 - m.zoneout[t]) * h_new
    out = h_new
    if m.state is not None:
        h_new = h_new * m.state[t]  # carried on: compounds 1/keep through z*h (the explosion)
        if not m.output_pre_mask:
            out = h_new
    return out, h_new


def gru_reference(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                  bias_hh: Tensor | None, m: SegmentMasks, trace: list | None = None) -> tuple[Tensor, Tensor]:
    """The reference layer: ``gru_reference_step`` over ``x (T, B, D)`` under autograd; ``(out (T, B, H), h_T)``."""
    outputs = []
    for t in range(x.size(0)):
        out, h = gru_reference_step(x[t], h, weight_ih, weight_hh, bias_ih, bias_hh, m, t)
        outputs.append(out)
        if trace is not None:
            trace.append((h, None))
    return torch.stack(outputs), h


def gru_forward_steps(xw: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, m: SegmentMasks):
    """The segment's forward recurrence, no autograd: ``(out (T, B, H), carried (T, B, H) or None when it is
    ``out``, recs (T, B, 3H): U h + b_hh, rzs (T, B, 2H): r and z, ns (T, B, H): tanh(candidate) before its mask, h_T)``.
    """
    steps, batch, gh = xw.shape
    hidden = gh // GATES
    rec = gemm.Recurrent(weight_hh, GATES, m.h_in, m.untied, batch, forward=True)
    recs, rzs, ns = xw.new_empty(steps, batch, gh), xw.new_empty(steps, batch, 2 * hidden), xw.new_empty(steps, batch, hidden)
    out = xw.new_empty(steps, batch, hidden)
    carried = xw.new_empty(steps, batch, hidden) if m.state is not None and m.output_pre_mask else out
    xs, out_t, recs_t, rzs_t, ns_t = xw.unbind(0), out.unbind(0), recs.unbind(0), rzs.unbind(0), ns.unbind(0)
    hp = h0
    for t in range(steps):
        r_t = recs_t[t].copy_(rec.forward(hp, bias_hh, t))  # (B, 3H); its n-part is gated by r
        x_t = xs[t]
        rz = torch.add(x_t[:, : 2 * hidden], r_t[:, : 2 * hidden], out=rzs_t[t]).sigmoid_()  # (B, 2H)
        r, z = rz.chunk(2, 1)
        n = torch.addcmul(x_t[:, 2 * hidden :], r, r_t[:, 2 * hidden :], out=ns_t[t]).tanh_()  # (B, H)
        if m.g is not None:
            n = n * m.g[t]
        h = torch.lerp(n, hp, z, out=out_t[t])  # (1-z)*n + z*h
        if m.zoneout is not None:
            h.lerp_(hp, m.zoneout[t])
        if m.state is not None:
            h = carry_state(h, m, t, carried, out)  # compounds 1/keep through z*h (the explosion)
        hp = h
    return out, None if carried is out else carried, recs, rzs, ns, hp.clone()


def gru_backward_steps(out: Tensor, h0: Tensor, u: Tensor, carried: Tensor | None, recs: Tensor, rzs: Tensor,
                       ns: Tensor, d_out: Tensor | None, d_h: Tensor | None, m: SegmentMasks, need_h0: bool):
    """Back through time by hand: ``(d_rec (T, B, 3H): the gradient of U h + b_hh, d_xn (T, B, H): of the
    candidate's input pre-activation, d h_0)``."""
    steps, batch, hidden = out.shape
    carried = out if carried is None else carried
    rec = gemm.Recurrent(u, GATES, m.h_in, m.untied, batch, forward=False)
    d_rec = out.new_empty(steps, batch, GATES * hidden)
    d_xn = out.new_empty(steps, batch, hidden)
    dh = torch.zeros_like(h0) if d_h is None else d_h
    d_rec_t, d_xn_t, carried_t = d_rec.unbind(0), d_xn.unbind(0), carried.unbind(0)
    recs_t, rzs_t, ns_t = recs.unbind(0), rzs.unbind(0), ns.unbind(0)
    d_outs = [None] * steps if d_out is None else d_out.unbind(0)
    for t in range(steps - 1, -1, -1):
        r, z = rzs_t[t].chunk(2, 1)
        n = ns_t[t]
        d_r, d_z, d_rn = d_rec_t[t].chunk(3, 1)
        dh = output_grads(m, dh, d_outs[t], t)
        dh_z = None
        if m.zoneout is not None:
            dh_z = dh * m.zoneout[t]
            dh = dh - dh_z
        hp = h0 if t == 0 else carried_t[t - 1]
        cand = n if m.g is None else n * m.g[t]
        sigmoid_backward(torch.mul(dh, hp - cand, out=d_z), z, grad_input=d_z)  # h = cand + z*(h_prev - cand)
        direct = dh * z  # h_{t-1} reaches h_t through z*h_{t-1} directly
        dn = dh - direct
        if m.g is not None:
            dn.mul_(m.g[t])
        dxn = tanh_backward(dn, n, grad_input=d_xn_t[t])
        torch.mul(dxn, r, out=d_rn)
        sigmoid_backward(torch.mul(dxn, recs_t[t][:, 2 * hidden :], out=d_r), r, grad_input=d_r)
        if t == 0 and not need_h0:
            break
        dh = rec.grad_h(d_rec_t[t], t).add_(direct)
        if dh_z is not None:
            dh.add_(dh_z)
    return d_rec, d_xn, dh


class _GRUSegment(torch.autograd.Function):
    """``(xw (T, B, 3H), h0 (B, H), U (3H, H), b_hh (3H) | None) -> (out (T, B, H), h_T)`` under ``SegmentMasks``.

    ``xw`` is the input projection with ``b_ih`` (``gemm.project``); ``b_hh`` stays in the
    recurrent product because its n-part is gated by r. On CUDA both loops run as replayed
    CUDA graphs (``cuda_graphs``).
    """

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, m: SegmentMasks):  # type: ignore[override]
        out, carried, recs, rzs, ns, h_n = run_steps(gru_forward_steps, (xw, h0, weight_hh, bias_hh), m)
        ctx.m = m
        ctx.has_bias = bias_hh is not None
        ctx.save_for_backward(h0, weight_hh, out, carried, recs, rzs, ns)
        ctx.set_materialize_grads(False)
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_h: Tensor | None):  # type: ignore[override]
        h0, u, out, carried, recs, rzs, ns = ctx.saved_tensors
        m: SegmentMasks = ctx.m
        need_h0 = ctx.needs_input_grad[1]
        d_rec, d_xn, dh = run_steps(gru_backward_steps, (out, h0, u, carried, recs, rzs, ns, d_out, d_h), m,
                                    (need_h0,))
        hidden = out.size(2)
        d_u = None
        if ctx.needs_input_grad[2]:
            h_in, gate_masks = recurrent_inputs(m, h0, out if carried is None else carried)
            d_u = gemm.recurrent_weight_grad(d_rec, h_in, GATES, m.untied, gate_masks=gate_masks)
        d_b = d_rec.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[3] else None
        d_xw = torch.cat([d_rec[..., : 2 * hidden], d_xn], 2) if ctx.needs_input_grad[0] else None
        return d_xw, (dh if need_h0 else None), d_u, d_b, None


def gru_segment(xw: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, masks: SegmentMasks) -> tuple[Tensor, Tensor]:
    """One GRU layer over the segment as one autograd node: ``(out (T, B, H), h_T)``."""
    return _GRUSegment.apply(xw, h0, weight_hh, bias_hh, masks)


def run_layer(x: Tensor, h0: Tensor, c0: None, params: list[Tensor], masks: Mapping[str, Mask], sites: Mapping, *,
              path: str, output_pre_mask: bool, trace: list | None = None) -> tuple[Tensor, Tensor, None]:
    """One GRU layer over ``x (T, B, D)`` with its drawn masks: ``(out (T, B, H), h_T, None)``; see ``lstm.run_layer``."""
    if path == "native":
        return native.run_layer("GRU", x, h0, None, params, masks)
    m = segment_masks(masks, sites, x.size(0), output_pre_mask)
    weight_ih, weight_hh = params[0], dropped_weight_hh(params[1], masks)
    bias_ih, bias_hh = (params[2], params[3]) if len(params) == 4 else (None, None)
    if path == "reference":
        out, h = gru_reference(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, m, trace)
    else:
        x_mask, untied = input_mask(masks, sites)
        xw = gemm.project(x, weight_ih, bias_ih, x_mask, GATES, untied)
        out, h = gru_segment(xw, h0, weight_hh, bias_hh, m)
    return out, h, None
