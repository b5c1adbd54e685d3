"""LSTM / GRU step math and the time loop, with masks passed in: fused by default, reference beside it.

PyTorch gate conventions so ``nn.LSTM`` / ``nn.GRU`` weights load unchanged:
LSTM gates ``i, f, g, o`` with ``c_t = f*c + i*g``, ``h_t = o*tanh(c_t)``;
GRU gates ``r, z, n`` with ``n = tanh(W_n x + b_in + r*(U_n h + b_hn))`` and
``h_t = (1-z)*n + z*h``.

Regularisation stays out of the step math (haste's rule): every mask arrives from
``masks.draw_layer_masks``, already split per step, as a tensor, a float (eval under
``test`` scaling, or the zoneout expectation) or ``None`` (site inactive). Whatever is
fixed for the segment — the input projection, the dropped ``U``, the per-gate view of
``U`` — is computed once before the loop; the loop body only indexes lists.

Two implementations of the loop, same masks, same values and gradients: ``lstm_loop`` /
``gru_loop`` run the fast one, ``fused.lstm_segment`` / ``fused.gru_segment`` (the whole
segment one autograd node, backward written by hand), unless told ``fused=False`` or given a
``trace`` to fill; ``lstm_reference`` / ``gru_reference`` are the plain autograd loops the fast
path is tested against (tests/test_engine_fused.py) and the probes trace.

Speed of the reference loop: the backward of a time loop is dominated by the per-step
gradient of ``U`` (a (G*H, H) product and accumulation per step). The loop multiplies by a
detached ``U`` and ``_RecurrentWeightGrad`` computes ``dU`` once for the segment, in one
matmul over all ``T*B`` rows; gates come from one ``chunk`` (one ``cat`` in backward)
instead of slices (a zero-filled full-width gradient per slice and step). The fused path
does the same by construction and also drops the ~50 autograd nodes per step.

Order of the sites inside one step (each scheme uses one or two of them):
``h_in`` on h entering U -> ``g`` on the candidate -> memory update -> ``c`` on the new
memory (Moon: h is computed from the masked c) -> ``zoneout`` -> ``state`` on the carried
state (TensorFlow: the step's output is taken before this mask unless told otherwise).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from benchmark.engine.fused import LoopMasks, StepMasks, gru_segment, lstm_segment


def project_inputs(x: Tensor, weight_ih: Tensor, bias: Tensor | None, x_mask: Tensor | float | None, gates: int, untied: bool) -> Tensor:
    """All input projections of the segment in one matmul: ``(T, B, D) -> (T, B, G*H)``.

    With untied masks (Gal & Ghahramani 2016) every gate sees its own masked copy of x,
    so the product is one batched matmul over the gate axis instead of G separate ones.
    """
    steps, batch, width = x.shape
    if untied and isinstance(x_mask, Tensor):
        hidden = weight_ih.size(0) // gates
        mask = x_mask if x_mask.dim() == 4 else x_mask.unsqueeze(1)  # (G, T|1, B|1, D)
        xg = (x.unsqueeze(0) * mask).reshape(gates, steps * batch, width)  # (G, T*B, D)
        w = weight_ih.view(gates, hidden, width).transpose(1, 2)  # (G, D, H)
        out = torch.bmm(xg, w).transpose(0, 1).reshape(steps, batch, gates * hidden)  # (T, B, G*H)
        return out if bias is None else out + bias
    if x_mask is not None:
        x = x * x_mask  # (T, B, D)
    flat = x.reshape(steps * batch, width)  # (T*B, D)
    out = flat @ weight_ih.t() if bias is None else torch.addmm(bias, flat, weight_ih.t())
    return out.view(steps, batch, -1)  # (T, B, G*H)


class _RecurrentWeightGrad(torch.autograd.Function):
    """Identity on ``base``; gives ``weight`` the gradient of every step's recurrent product at once.

    Why: autograd through a time loop computes ``dU += dA_t^T h_{t-1}`` once per step, a
    (G*H, H) product and a (G*H, H) accumulation per step (on CPU, where ``torch.nn.LSTM``
    is the same composite loop, this is most of the backward). The loop multiplies by a
    *detached* ``U`` instead, and this function, tapped into the per-step additive term of
    the pre-activations (whose gradient is exactly ``dA_t``), returns
    ``dU = sum_t dA_t^T h_{t-1}`` in one matmul over all ``T*B`` rows. ``inputs`` is the
    list the loop fills with the (masked, detached) ``h_{t-1}`` that entered ``U`` at each
    step: ``(B, H)``, or ``(G, B, H)`` with untied gate masks. Same values as autograd's
    per-step sum up to summation order.
    """

    @staticmethod
    def forward(ctx, base: Tensor, weight: Tensor, inputs: list, gates: int, untied: bool) -> Tensor:  # type: ignore[override]
        ctx.inputs, ctx.gates, ctx.untied = inputs, gates, untied
        return base.view_as(base)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad_w = None
        if ctx.needs_input_grad[1]:
            hs = torch.stack(ctx.inputs)  # (T, B, H) or (T, G, B, H)
            steps, batch, gh = grad.shape
            if ctx.untied:
                gates = ctx.gates
                d = grad.reshape(steps * batch, gates, gh // gates).permute(1, 2, 0)  # (G, H, T*B)
                hg = hs.transpose(0, 1).reshape(gates, steps * batch, hs.size(-1))  # (G, T*B, H)
                grad_w = torch.bmm(d, hg).reshape(gh, hs.size(-1))  # (G*H, H)
            else:
                grad_w = grad.reshape(steps * batch, gh).t() @ hs.reshape(steps * batch, -1)  # (G*H, H)
        return grad, grad_w, None, None, None  # inputs stay: backward may run again (retain_graph)


def recurrent_product(weight_hh: Tensor, gates: int, h_in: StepMasks, untied: bool, base: Tensor | None,
                      steps: int, batch: int) -> tuple[Callable[[Tensor, int, Tensor | None], Tensor], list[Tensor | None]]:
    """Return ``(f, bases)`` with ``f(h, t, base_t) = base_t + (h * m_t) @ U^T``, specialised once.

    ``h_in`` masks only the copy of h entering U; the carried state is untouched (Gal).
    Untied: one mask per gate, so each gate's block of U sees its own masked h.
    ``base`` ((T, B, G*H), or a broadcastable bias, or None) is the per-step additive term;
    ``bases`` is its per-step list. When ``U`` needs a gradient, the per-step products use
    a detached ``U`` and ``base`` is tapped by ``_RecurrentWeightGrad``, which gives ``U``
    its gradient in one matmul (``base`` then becomes an explicit (T, B, G*H) term).
    """
    hidden = weight_hh.size(1)
    fast_grad = torch.is_grad_enabled() and weight_hh.requires_grad
    seen: list[Tensor] = []
    u = weight_hh
    if fast_grad:
        u = weight_hh.detach()
        if base is None or base.dim() < 3:
            full = (steps, batch, gates * hidden)
            base = weight_hh.new_zeros(full) if base is None else base.expand(full)
        untied_grad = untied and h_in is not None and isinstance(h_in[0], Tensor)
        base = _RecurrentWeightGrad.apply(base, weight_hh, seen, gates, untied_grad)
    if base is None:
        bases: list[Tensor | None] = [None] * steps
    elif base.dim() < 3:
        bases = [base] * steps
    else:
        bases = list(base.unbind(0))
    u_t = u.t()  # (H, G*H)
    record = seen.append if fast_grad else (lambda v: None)

    if h_in is None:
        def plain(h: Tensor, t: int, base_t: Tensor | None) -> Tensor:
            record(h.detach())
            return h @ u_t if base_t is None else torch.addmm(base_t, h, u_t)
        return plain, bases
    if untied and isinstance(h_in[0], Tensor):
        u_g = u.view(gates, hidden, hidden).transpose(1, 2)  # (G, H, H)

        def per_gate(h: Tensor, t: int, base_t: Tensor | None) -> Tensor:
            hm = h * h_in[t]  # (G, B|1, H)... broadcast to (G, B, H)
            record(hm.detach())
            hg = torch.bmm(hm, u_g)  # (G, B, H)
            out = hg.transpose(0, 1).reshape(h.size(0), gates * hidden)  # (B, G*H)
            return out if base_t is None else out + base_t
        return per_gate, bases

    def tied(h: Tensor, t: int, base_t: Tensor | None) -> Tensor:
        hm = h * h_in[t]  # (B, H)
        record(hm.detach())
        return hm @ u_t if base_t is None else torch.addmm(base_t, hm, u_t)
    return tied, bases


def lstm_loop(xw: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, masks: LoopMasks, *,
              trace: list | None = None, fused: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Run one LSTM layer over ``xw`` ((T, B, 4H), biases folded in); return (out, h_T, c_T).

    ``fused`` (the default) runs the segment as one autograd node with a hand-written
    backward (``fused.lstm_segment``); ``fused=False``, or a ``trace`` to fill, runs the
    reference loop, plain autograd through every step (``lstm_reference``). Same masks,
    same values, same gradients (tests/test_engine_fused.py).
    """
    if fused and trace is None:
        return lstm_segment(xw, h, c, weight_hh, masks)
    return lstm_reference(xw, h, c, weight_hh, masks, trace=trace)


def lstm_reference(xw: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, m: LoopMasks, *,
                   trace: list | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The reference LSTM loop: autograd through every step; see ``lstm_loop``.

    Gates come from one ``chunk`` of the pre-activations (its backward is one ``cat``, where
    slicing would zero-fill a full (B, 4H) gradient per slice and step).
    """
    steps, batch = xw.shape[0], xw.shape[1]
    recur, bases = recurrent_product(weight_hh, 4, m.h_in, m.h_in_untied, xw, steps, batch)
    outputs = []
    for t in range(steps):
        a = recur(h, t, bases[t])  # (B, 4H)
        i, f, cand, o = a.chunk(4, 1)
        i, f, o, cand = i.sigmoid(), f.sigmoid(), o.sigmoid(), cand.tanh()  # (B, H) each
        if m.g is not None:
            cand = cand * m.g[t]  # Semeniuta: only the new information is dropped
        c_new = torch.addcmul(f * c, i, cand)  # (B, H)
        if m.c is not None:
            c_new = c_new * m.c[t]  # Moon: the masked memory is used and carried
        h_new = o * c_new.tanh()
        if m.zoneout is not None:
            # Krueger et al. eq. for LSTM: h zones out towards h_{t-1}, c towards c_{t-1}.
            h_new = torch.lerp(h_new, h, m.zoneout[t])
            c_new = torch.lerp(c_new, c, m.zoneout_c[t])
        out = h_new
        if m.state is not None:
            h_new = h_new * m.state[t]
            if m.state_c is not None:
                c_new = c_new * m.state_c[t]
            if not m.output_pre_mask:
                out = h_new
        outputs.append(out)
        h, c = h_new, c_new
        if trace is not None:
            trace.append((h, c))  # the carried state, as the next step receives it
    return torch.stack(outputs), h, c  # (T, B, H), (B, H), (B, H)


def gru_loop(xw: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, masks: LoopMasks, *,
             trace: list | None = None, fused: bool = True) -> tuple[Tensor, Tensor]:
    """Run one GRU layer over ``xw`` ((T, B, 3H), ``b_ih`` folded in); return (out, h_T).

    ``b_hh`` stays inside the recurrent product because its n-part is gated by r.
    ``fused`` / ``trace``: as in ``lstm_loop`` (``fused.gru_segment`` or ``gru_reference``).
    """
    if fused and trace is None:
        return gru_segment(xw, h, weight_hh, bias_hh, masks)
    return gru_reference(xw, h, weight_hh, bias_hh, masks, trace=trace)


def gru_reference(xw: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor | None, m: LoopMasks, *,
                  trace: list | None = None) -> tuple[Tensor, Tensor]:
    """The reference GRU loop: autograd through every step; see ``gru_loop``."""
    steps, batch = xw.shape[0], xw.shape[1]
    recur, bases = recurrent_product(weight_hh, 3, m.h_in, m.h_in_untied, bias_hh, steps, batch)
    outputs = []
    for t, gx in enumerate(xw.unbind(0)):  # gx: (B, 3H)
        gh = recur(h, t, bases[t])  # (B, 3H)
        x_r, x_z, x_n = gx.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
        n = torch.addcmul(x_n, r, h_n).tanh()  # (B, H)
        if m.g is not None:
            n = n * m.g[t]  # Semeniuta: drop the candidate, not the carried state
        h_new = torch.lerp(n, h, z)  # (1-z)*n + z*h
        if m.zoneout is not None:
            h_new = torch.lerp(h_new, h, m.zoneout[t])
        out = h_new
        if m.state is not None:
            h_new = h_new * m.state[t]  # carried on: compounds 1/keep through z*h (the explosion)
            if not m.output_pre_mask:
                out = h_new
        outputs.append(out)
        h = h_new
        if trace is not None:
            trace.append((h, None))
    return torch.stack(outputs), h
