"""The fast time loop: one custom autograd function per layer and segment, backward by hand.

Why: the reference loop (``cells.lstm_reference`` / ``cells.gru_reference``) records every
element-wise operation of every step as an autograd node, about 20 per LSTM step in forward
and 30 in backward, each with its own allocation, dispatch and saved tensors. Here a layer's
segment is *one* autograd node (``_LSTMSegment`` / ``_GRUSegment``), as in lmnt-com/haste:
the forward runs the recurrence without autograd (one matmul and about ten in-place
element-wise operations per step, activations kept per step), and the backward runs back
through time by hand (one (B, G*H) x (G*H, H) matmul and about a dozen element-wise
operations per step), writing every step's pre-activation gradient into one (T, B, G*H)
buffer. That buffer is the gradient of the input projection (whose backward is one matmul
for the whole segment, outside this function), and ``dU = dA^T H_in`` is one matmul over
all ``T*B`` rows. On a CPU the forward product runs on oneDNN's prepacked linear
(``_Recurrent``), the GEMM ``torch.nn.LSTM`` itself uses there.

What is left against oneDNN's fused LSTM (measured at width 650, batch 20, one thread):
the element-wise work, ~13 ms per layer in forward (two thirds of it the sigmoid/tanh
evaluations) and ~13 ms in backward, which oneDNN fuses into its GEMM steps; about 1 to 3 %
of a language-model training step per layer.

Semantics are the reference loop's, site for site (tests/test_engine_fused.py compares the
two in float64, values and gradients, for every scheme, and gradchecks both functions):
``h_in`` on h entering U -> ``g`` on the candidate -> memory update -> ``c`` on the new
memory -> ``zoneout`` -> ``state`` on the carried state (the step's output taken before it
under ``output_pre_mask``). Masks arrive already split per step, as in the reference loop:
a tensor, a float, or the site absent. Regularisation stays out of the step math: nothing
here draws a mask.

The backward is not itself differentiable (``once_differentiable``: no double backward
through the recurrence). ``trace`` (the probes) runs on the reference loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

_sigmoid_bw = torch.ops.aten.sigmoid_backward.grad_input  # (grad, y, *, grad_input): grad * y * (1 - y)
_tanh_bw = torch.ops.aten.tanh_backward.grad_input  # (grad, y, *, grad_input): grad * (1 - y^2)

StepMasks = Sequence["Tensor | float"] | None  # one entry per time step, or None when inactive


@dataclass(frozen=True)
class LoopMasks:
    """The per-step masks of one layer and segment (each a list over steps, or None)."""

    h_in: StepMasks = None
    h_in_untied: bool = False  # h_in entries are (G, B|1, H): one mask per gate
    g: StepMasks = None
    c: StepMasks = None  # LSTM only
    zoneout: StepMasks = None
    zoneout_c: StepMasks = None  # LSTM only
    state: StepMasks = None
    state_c: StepMasks = None  # LSTM only
    output_pre_mask: bool = False


def _untied(m: LoopMasks) -> bool:
    return m.h_in is not None and m.h_in_untied and isinstance(m.h_in[0], Tensor)


@functools.lru_cache(maxsize=None)
def _onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's prepacked linear (``torch.ops.mkldnn``), checked once on a tiny case."""
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 3), 1)
        y = torch.ops.mkldnn._linear_pointwise.binary(torch.ones(1, 3), torch.ones(1, 2), w, None, "add")
        return bool(torch.equal(y, torch.full((1, 2), 4.0)))
    except Exception:  # noqa: BLE001 - any failure means: use the plain matmul
        return False


def _use_onednn(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and _onednn_linear_works())


class _Recurrent:
    """The per-step recurrent product ``base_t + (h * m_t) U^T`` and its gradient, set up once per segment.

    Why oneDNN: on a CPU, ``torch.nn.LSTM`` runs oneDNN's RNN, whose per-step GEMM multiplies
    by a weight reordered once into oneDNN's blocked layout; for a (B, H) x (H, G*H) product
    with small B that is ~15 % faster than MKL's ``addmm`` (measured on a 2-core AMD EPYC at
    B=20, H=650). ``U`` is fixed for the segment, so it is reordered once here (~2 ms) and
    every step calls oneDNN's prepacked linear with the addition of ``base_t`` fused in. Only
    for float32 CPU tensors when the op exists; otherwise ``addmm``. The backward product
    ``dA_t U`` stays on ``mm``: reordering ``U^T`` costs as much as it saves there.
    Untied gate masks (one masked h per gate) use ``bmm`` over the gate axis.
    """

    def __init__(self, weight: Tensor, gates: int, m: LoopMasks, batch: int, forward: bool) -> None:
        self.gates, self.hidden, self.batch = gates, weight.size(1), batch
        self.weight = weight  # (G*H, H)
        self.untied = _untied(m)
        self.m = m
        self.packed = self.u_g = self.u_t = None
        if not forward:
            return
        if self.untied:
            self.u_g = weight.view(gates, self.hidden, self.hidden).transpose(1, 2).contiguous()  # (G, H_in, H_out)
        elif _use_onednn(weight):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
        else:
            self.u_t = weight.t()  # (H, G*H)

    def forward(self, hm: Tensor, base: Tensor | None) -> Tensor:
        """``base + hm U^T`` as a fresh (B, G*H) tensor; ``base`` is (B, G*H), (G*H,) or None."""
        if self.untied:
            prod = torch.bmm(hm, self.u_g).transpose(0, 1)  # (B, G, H)
            out = hm.new_empty(self.batch, self.gates * self.hidden)
            if base is None:
                out.view(self.batch, self.gates, self.hidden).copy_(prod)
            else:
                torch.add(base.view(-1, self.gates, self.hidden), prod, out=out.view(self.batch, self.gates, self.hidden))
            return out
        if self.packed is not None:
            if base is not None and base.dim() == 2:
                return torch.ops.mkldnn._linear_pointwise.binary(hm, base, self.packed, None, "add")
            return torch.ops.mkldnn._linear_pointwise(hm, self.packed, base, "none", [], "")
        if base is None:
            return torch.mm(hm, self.u_t)
        return torch.addmm(base, hm, self.u_t)

    def grad_h(self, da: Tensor, t: int) -> Tensor:
        """``d h_{t-1}`` through the product: ``(dA_t U) * m_t`` (untied: summed over gates), a fresh tensor."""
        m = self.m
        if self.untied:
            d = da.view(self.batch, self.gates, self.hidden).transpose(0, 1)  # (G, B, H)
            per_gate = torch.bmm(d, self.weight.view(self.gates, self.hidden, self.hidden))  # (G, B, H)
            return per_gate.mul_(m.h_in[t]).sum(0)  # (B, H)
        dh = da @ self.weight  # (B, H)
        if m.h_in is not None:
            dh.mul_(m.h_in[t])
        return dh


def _recurrent_input_buffer(m: LoopMasks, like: Tensor, steps: int, batch: int, hidden: int, gates: int) -> Tensor | None:
    """Where the masked ``h_{t-1}`` entering U is kept for ``dU`` (None: it is the carried h)."""
    if m.h_in is None:
        return None
    if _untied(m):
        return like.new_empty(gates, steps, batch, hidden)  # (G, T, B, H): one gate's rows contiguous
    return like.new_empty(steps, batch, hidden)  # (T, B, H)


def _steps_of(hin: Tensor | None, m: LoopMasks) -> Sequence[Tensor] | None:
    """The per-step slots of ``hin``: (B, H), or (G, B, H) with untied masks."""
    if hin is None:
        return None
    return hin.unbind(1) if _untied(m) else hin.unbind(0)


def _masked_h(m: LoopMasks, hp: Tensor, hin_t: Sequence[Tensor] | None, t: int) -> Tensor:
    """``h_{t-1}`` as it enters U at step ``t``, written into its slot of ``hin``."""
    if m.h_in is None:
        return hp
    return torch.mul(hp, m.h_in[t], out=hin_t[t])  # (B, H), or (G, B, H) untied


def _weight_grad(m: LoopMasks, da: Tensor, hin: Tensor | None, h0: Tensor, carried: Tensor, gates: int) -> Tensor:
    """``dU = sum_t dA_t^T h_in_t`` in one matmul over all ``T*B`` rows (untied: one per gate)."""
    steps, batch, gh = da.shape
    hidden = gh // gates
    if _untied(m):
        d = da.view(steps * batch, gates, hidden).permute(1, 2, 0)  # (G, H, T*B)
        return torch.bmm(d, hin.view(gates, steps * batch, hidden)).reshape(gh, hidden)  # (G*H, H)
    if hin is None:  # the carried states h_0 .. h_{T-1}
        hin = torch.cat([h0.unsqueeze(0), carried[: steps - 1]])  # (T, B, H)
    return da.view(steps * batch, gh).t() @ hin.reshape(steps * batch, hidden)  # (G*H, H)


def _output_grads(m: LoopMasks, dh: Tensor, d_out: Tensor | None, t: int) -> Tensor:
    """Gradient reaching the step's h before the ``state`` mask, from the carried h and the output ``d_out``."""
    if m.state is None:
        return dh if d_out is None else dh + d_out
    if m.output_pre_mask:  # out_t = h before the mask; carried = h * mask
        dh = dh * m.state[t]
        return dh if d_out is None else dh.add_(d_out)
    if d_out is not None:  # out_t = carried = h * mask
        dh = dh + d_out
    return dh * m.state[t]


class _LSTMSegment(torch.autograd.Function):
    """``(xw (T, B, 4H), h0, c0 (B, H), U (4H, H)) -> (out (T, B, H), h_T, c_T)`` with the masks of ``LoopMasks``."""

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, m: LoopMasks):  # type: ignore[override]
        steps, batch, gh = xw.shape
        hidden = gh // 4
        rec = _Recurrent(weight_hh, 4, m, batch, forward=True)
        acts = []  # per step (B, 4H): i, f, tanh(g) before its mask, o
        cs = xw.new_empty(steps + 1, batch, hidden)  # carried c_0 .. c_T
        cs[0] = c0
        tanh_c = xw.new_empty(steps, batch, hidden)  # tanh of the memory that makes h
        out = xw.new_empty(steps, batch, hidden)  # (T, B, H)
        # The carried h is the output, unless the output is taken before the state mask.
        carried = xw.new_empty(steps, batch, hidden) if m.state is not None and m.output_pre_mask else out
        hin = _recurrent_input_buffer(m, xw, steps, batch, hidden, 4)
        hin_t = _steps_of(hin, m)
        # Per-step views made once: indexing a Python list is free, indexing a tensor is not.
        bases, c_t, tanh_t, out_t = xw.unbind(0), cs.unbind(0), tanh_c.unbind(0), out.unbind(0)
        hp, cp = h0, c_t[0]
        for t in range(steps):
            a = rec.forward(_masked_h(m, hp, hin_t, t), bases[t])  # (B, 4H)
            a[:, : 2 * hidden].sigmoid_()
            a[:, 3 * hidden :].sigmoid_()
            a[:, 2 * hidden : 3 * hidden].tanh_()
            acts.append(a)
            i, f, cand, o = a.chunk(4, 1)
            if m.g is not None:
                cand = cand * m.g[t]  # Semeniuta: only the new information is dropped
            c = torch.mul(f, cp, out=c_t[t + 1]).addcmul_(i, cand)  # c = f*c + i*g
            if m.c is not None:
                c.mul_(m.c[t])  # Moon: the masked memory makes h and is carried
            h = torch.mul(o, torch.tanh(c, out=tanh_t[t]), out=out_t[t])
            if m.zoneout is not None:
                h.lerp_(hp, m.zoneout[t])
                c.lerp_(cp, m.zoneout_c[t])
            if m.state is not None:
                if carried is out:
                    h.mul_(m.state[t])
                else:
                    h = torch.mul(h, m.state[t], out=carried[t])
                if m.state_c is not None:
                    c.mul_(m.state_c[t])
            hp, cp = h, c
        ctx.m = m
        # Everything through save_for_backward: freed after backward, and in-place edits of
        # ``out`` (an output) are caught by autograd's version check.
        ctx.save_for_backward(h0, weight_hh, out, cs, tanh_c, hin, None if carried is out else carried, *acts)
        ctx.set_materialize_grads(False)
        return out, hp.clone(), cp.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_h: Tensor | None, d_c: Tensor | None):  # type: ignore[override]
        h0, u, out, cs, tanh_c, hin, carried, *acts = ctx.saved_tensors
        carried = out if carried is None else carried
        m: LoopMasks = ctx.m
        steps, batch, hidden = out.shape
        rec = _Recurrent(u, 4, m, batch, forward=False)
        da = out.new_empty(steps, batch, 4 * hidden)  # (T, B, 4H): the pre-activation gradient of every step
        dh = torch.zeros_like(h0) if d_h is None else d_h
        dc = torch.zeros_like(h0) if d_c is None else d_c
        need_h0 = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        da_t, c_t, tanh_t = da.unbind(0), cs.unbind(0), tanh_c.unbind(0)
        d_outs = [None] * steps if d_out is None else d_out.unbind(0)
        for t in range(steps - 1, -1, -1):
            i, f, cand, o = acts[t].chunk(4, 1)
            d_i, d_f, d_g, d_o = da_t[t].chunk(4, 1)
            dh = _output_grads(m, dh, d_outs[t], t)  # d h_t before the state mask
            if m.state_c is not None:
                dc = dc * m.state_c[t]
            dh_z = dc_z = None
            if m.zoneout is not None:  # h = lerp(h_new, h_prev, d): d of it goes straight back
                dh_z, dc_z = dh * m.zoneout[t], dc * m.zoneout_c[t]
                dh, dc = dh - dh_z, dc - dc_z
            th = tanh_t[t]
            _sigmoid_bw(torch.mul(dh, th, out=d_o), o, grad_input=d_o)
            through = dh * o
            dc = _tanh_bw(through, th, grad_input=through).add_(dc)  # through h = o*tanh(c)
            if m.c is not None:
                dc.mul_(m.c[t])
            _sigmoid_bw(torch.mul(dc, c_t[t], out=d_f), f, grad_input=d_f)
            if m.g is None:
                _sigmoid_bw(torch.mul(dc, cand, out=d_i), i, grad_input=d_i)
                _tanh_bw(torch.mul(dc, i, out=d_g), cand, grad_input=d_g)
            else:
                _sigmoid_bw(torch.mul(dc, cand * m.g[t], out=d_i), i, grad_input=d_i)
                _tanh_bw(torch.mul(dc, i, out=d_g).mul_(m.g[t]), cand, grad_input=d_g)
            dc = dc * f
            if dc_z is not None:
                dc.add_(dc_z)
            if t == 0 and not need_h0:
                break
            dh = rec.grad_h(da_t[t], t)
            if dh_z is not None:
                dh.add_(dh_z)
        d_u = _weight_grad(m, da, hin, h0, carried, 4) if ctx.needs_input_grad[3] else None
        d_xw = da if ctx.needs_input_grad[0] else None
        return d_xw, (dh if need_h0 else None), (dc if need_h0 else None), d_u, None


class _GRUSegment(torch.autograd.Function):
    """``(xw (T, B, 3H), h0 (B, H), U (3H, H), b_hh (3H) | None) -> (out (T, B, H), h_T)``."""

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, m: LoopMasks):  # type: ignore[override]
        steps, batch, gh = xw.shape
        hidden = gh // 3
        rec = _Recurrent(weight_hh, 3, m, batch, forward=True)
        recs, rzs, ns = [], [], []  # per step: U h + b_hh (B, 3H); r, z (B, 2H); tanh(candidate) before its mask
        out = xw.new_empty(steps, batch, hidden)
        carried = xw.new_empty(steps, batch, hidden) if m.state is not None and m.output_pre_mask else out
        hin = _recurrent_input_buffer(m, xw, steps, batch, hidden, 3)
        hin_t = _steps_of(hin, m)
        xs, out_t = xw.unbind(0), out.unbind(0)
        hp = h0
        for t in range(steps):
            r_t = rec.forward(_masked_h(m, hp, hin_t, t), bias_hh)  # (B, 3H); its n-part is gated by r
            x_t = xs[t]
            rz = torch.add(x_t[:, : 2 * hidden], r_t[:, : 2 * hidden]).sigmoid_()  # (B, 2H)
            r, z = rz.chunk(2, 1)
            n = torch.addcmul(x_t[:, 2 * hidden :], r, r_t[:, 2 * hidden :]).tanh_()  # (B, H)
            recs.append(r_t)
            rzs.append(rz)
            ns.append(n)
            if m.g is not None:
                n = n * m.g[t]  # Semeniuta: drop the candidate, not the carried state
            h = torch.lerp(n, hp, z, out=out_t[t])  # (1-z)*n + z*h
            if m.zoneout is not None:
                h.lerp_(hp, m.zoneout[t])
            if m.state is not None:
                if carried is out:
                    h.mul_(m.state[t])  # carried on: compounds 1/keep through z*h (the explosion)
                else:
                    h = torch.mul(h, m.state[t], out=carried[t])
            hp = h
        ctx.m, ctx.steps = m, steps
        ctx.has_bias = bias_hh is not None
        ctx.save_for_backward(h0, weight_hh, out, hin, None if carried is out else carried, *recs, *rzs, *ns)
        ctx.set_materialize_grads(False)
        return out, hp.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor | None, d_h: Tensor | None):  # type: ignore[override]
        h0, u, out, hin, carried, *per_step = ctx.saved_tensors
        steps = ctx.steps
        recs, rzs, ns = per_step[:steps], per_step[steps : 2 * steps], per_step[2 * steps :]
        carried = out if carried is None else carried
        m: LoopMasks = ctx.m
        steps, batch, hidden = out.shape
        rec = _Recurrent(u, 3, m, batch, forward=False)
        d_rec = out.new_empty(steps, batch, 3 * hidden)  # (T, B, 3H): gradient of U h + b_hh per step
        d_xn = out.new_empty(steps, batch, hidden)  # (T, B, H): gradient of the candidate's pre-activation
        dh = torch.zeros_like(h0) if d_h is None else d_h
        need_h0 = ctx.needs_input_grad[1]
        d_rec_t, d_xn_t, carried_t = d_rec.unbind(0), d_xn.unbind(0), carried.unbind(0)
        d_outs = [None] * steps if d_out is None else d_out.unbind(0)
        for t in range(steps - 1, -1, -1):
            r, z = rzs[t].chunk(2, 1)
            n = ns[t]
            d_r, d_z, d_rn = d_rec_t[t].chunk(3, 1)
            dh = _output_grads(m, dh, d_outs[t], t)
            dh_z = None
            if m.zoneout is not None:
                dh_z = dh * m.zoneout[t]
                dh = dh - dh_z
            hp = h0 if t == 0 else carried_t[t - 1]
            cand = n if m.g is None else n * m.g[t]
            _sigmoid_bw(torch.mul(dh, hp - cand, out=d_z), z, grad_input=d_z)  # h = cand + z*(h_prev - cand)
            direct = dh * z  # h_{t-1} reaches h_t through z*h_{t-1} directly
            dn = dh - direct
            if m.g is not None:
                dn.mul_(m.g[t])
            dxn = _tanh_bw(dn, n, grad_input=d_xn_t[t])
            torch.mul(dxn, r, out=d_rn)
            _sigmoid_bw(torch.mul(dxn, recs[t][:, 2 * hidden :], out=d_r), r, grad_input=d_r)
            if t == 0 and not need_h0:
                break
            dh = rec.grad_h(d_rec_t[t], t).add_(direct)
            if dh_z is not None:
                dh.add_(dh_z)
        d_u = _weight_grad(m, d_rec, hin, h0, carried, 3) if ctx.needs_input_grad[2] else None
        d_b = d_rec.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[3] else None
        d_xw = torch.cat([d_rec[..., : 2 * hidden], d_xn], 2) if ctx.needs_input_grad[0] else None
        return d_xw, (dh if need_h0 else None), d_u, d_b, None


def lstm_segment(xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, masks: LoopMasks) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over the segment as one autograd node: ``(out (T, B, H), h_T, c_T)``."""
    return _LSTMSegment.apply(xw, h0, c0, weight_hh, masks)


def gru_segment(xw: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, masks: LoopMasks) -> tuple[Tensor, Tensor]:
    """One GRU layer over the segment as one autograd node: ``(out (T, B, H), h_T)``."""
    return _GRUSegment.apply(xw, h0, weight_hh, bias_hh, masks)
