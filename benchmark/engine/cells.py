"""LSTM / GRU step math and the reference loop over time, with masks passed in.

PyTorch gate conventions so ``nn.LSTM`` / ``nn.GRU`` weights load unchanged:
LSTM gates ``i, f, g, o`` with ``c_t = f*c + i*g``, ``h_t = o*tanh(c_t)``;
GRU gates ``r, z, n`` with ``n = tanh(W_n x + b_in + r*(U_n h + b_hn))`` and
``h_t = (1-z)*n + z*h``.

Regularisation stays out of the step math (haste's rule): every mask arrives from
``masks.draw_layer_masks``, already split per step, as a tensor, a float (eval under
``test`` scaling, or the zoneout expectation) or ``None`` (site inactive). Whatever is
fixed for the segment — the input projection, the dropped ``U``, the per-gate view of
``U`` — is computed once before the loop; the loop body only indexes lists.

Order of the sites inside one step (each scheme uses one or two of them):
``h_in`` on h entering U -> ``g`` on the candidate -> memory update -> ``c`` on the new
memory (Moon: h is computed from the masked c) -> ``zoneout`` -> ``state`` on the carried
state (TensorFlow: the step's output is taken before this mask unless told otherwise).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

StepMasks = Sequence["Tensor | float"] | None  # one entry per time step, or None when inactive


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


def recurrent_product(weight_hh: Tensor, gates: int, h_in: StepMasks, untied: bool) -> Callable[[Tensor, int, Tensor | None], Tensor]:
    """Return ``f(h, t, base) = base + (h * m_t) @ U^T``, specialised once per segment.

    ``h_in`` masks only the copy of h entering U; the carried state is untouched (Gal).
    Untied: one mask per gate, so each gate's block of U sees its own masked h.
    """
    u_t = weight_hh.t()  # (H, G*H)
    if h_in is None:
        def plain(h: Tensor, t: int, base: Tensor | None) -> Tensor:
            return h @ u_t if base is None else torch.addmm(base, h, u_t)
        return plain
    if untied and isinstance(h_in[0], Tensor):
        hidden = weight_hh.size(1)
        u_g = weight_hh.view(gates, hidden, hidden).transpose(1, 2)  # (G, H, H)

        def per_gate(h: Tensor, t: int, base: Tensor | None) -> Tensor:
            hg = torch.bmm(h * h_in[t], u_g)  # (G, B, H): (B, H) * (G, B|1, H)
            out = hg.transpose(0, 1).reshape(h.size(0), gates * hidden)  # (B, G*H)
            return out if base is None else out + base
        return per_gate

    def tied(h: Tensor, t: int, base: Tensor | None) -> Tensor:
        hm = h * h_in[t]  # (B, H)
        return hm @ u_t if base is None else torch.addmm(base, hm, u_t)
    return tied


def lstm_loop(
    xw: Tensor,
    h: Tensor,
    c: Tensor,
    weight_hh: Tensor,
    *,
    h_in: StepMasks = None,
    h_in_untied: bool = False,
    g: StepMasks = None,
    c_mask: StepMasks = None,
    zoneout: StepMasks = None,
    zoneout_c: StepMasks = None,
    state: StepMasks = None,
    state_c: StepMasks = None,
    output_pre_mask: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one LSTM layer over ``xw`` ((T, B, 4H), biases folded in); return (out, h_T, c_T)."""
    hidden = h.size(1)
    recur = recurrent_product(weight_hh, 4, h_in, h_in_untied)
    outputs = []
    for t, xw_t in enumerate(xw.unbind(0)):
        a = recur(h, t, xw_t)  # (B, 4H)
        s = a.sigmoid()  # i, f, o read from here; the g block is recomputed with tanh
        i, f, o = s[:, :hidden], s[:, hidden : 2 * hidden], s[:, 3 * hidden :]
        cand = a[:, 2 * hidden : 3 * hidden].tanh()  # (B, H)
        if g is not None:
            cand = cand * g[t]  # Semeniuta: only the new information is dropped
        c_new = torch.addcmul(f * c, i, cand)  # (B, H)
        if c_mask is not None:
            c_new = c_new * c_mask[t]  # Moon: the masked memory is used and carried
        h_new = o * c_new.tanh()
        if zoneout is not None:
            # Krueger et al. eq. for LSTM: h zones out towards h_{t-1}, c towards c_{t-1}.
            h_new = torch.lerp(h_new, h, zoneout[t])
            c_new = torch.lerp(c_new, c, zoneout_c[t])
        out = h_new
        if state is not None:
            h_new = h_new * state[t]
            if state_c is not None:
                c_new = c_new * state_c[t]
            if not output_pre_mask:
                out = h_new
        outputs.append(out)
        h, c = h_new, c_new
    return torch.stack(outputs), h, c  # (T, B, H), (B, H), (B, H)


def gru_loop(
    xw: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    *,
    h_in: StepMasks = None,
    h_in_untied: bool = False,
    g: StepMasks = None,
    zoneout: StepMasks = None,
    state: StepMasks = None,
    output_pre_mask: bool = False,
) -> tuple[Tensor, Tensor]:
    """Run one GRU layer over ``xw`` ((T, B, 3H), ``b_ih`` folded in); return (out, h_T).

    ``b_hh`` stays inside the recurrent product because its n-part is gated by r.
    """
    hidden = h.size(1)
    recur = recurrent_product(weight_hh, 3, h_in, h_in_untied)
    outputs = []
    for t, gx in enumerate(xw.unbind(0)):  # gx: (B, 3H)
        gh = recur(h, t, bias_hh)  # (B, 3H)
        rz = (gx[:, : 2 * hidden] + gh[:, : 2 * hidden]).sigmoid()
        r, z = rz[:, :hidden], rz[:, hidden:]
        n = torch.addcmul(gx[:, 2 * hidden :], r, gh[:, 2 * hidden :]).tanh()  # (B, H)
        if g is not None:
            n = n * g[t]  # Semeniuta: drop the candidate, not the carried state
        h_new = torch.lerp(n, h, z)  # (1-z)*n + z*h
        if zoneout is not None:
            h_new = torch.lerp(h_new, h, zoneout[t])
        out = h_new
        if state is not None:
            h_new = h_new * state[t]  # carried on: compounds 1/keep through z*h (the explosion)
            if not output_pre_mask:
                out = h_new
        outputs.append(out)
        h = h_new
    return torch.stack(outputs), h
