"""What the two cell files (``lstm.py``, ``gru.py``) share: the reference steps' masked
product, and the hand-written segments' helpers.

A segment is one layer over one BPTT segment as a single autograd node, as in
lmnt-com/haste: the forward runs the recurrence without autograd and keeps each step's
activations, the backward runs back through time by hand and writes every step's
pre-activation gradient into one (T, B, G*H) buffer, whose products with the inputs give
the weights their gradients in one GEMM each (``gemm.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from benchmark.engine.masks import Mask, SegmentMasks


def gate_product(v: Tensor, weight: Tensor, mask: Mask | None, untied: bool) -> Tensor:
    """``(v * mask) W^T``: ``(B, D) -> (B, G*H)``; with untied masks ``(G, B|1, D)`` each gate's rows see their own."""
    if mask is None:
        return v @ weight.t()
    if not untied:
        return (v * mask) @ weight.t()
    blocks = weight.chunk(mask.size(0), 0)
    return torch.cat([(v * mask[g]) @ block.t() for g, block in enumerate(blocks)], 1)


sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # (grad, y, *, grad_input): grad * y * (1 - y)
tanh_backward = torch.ops.aten.tanh_backward.grad_input  # (grad, y, *, grad_input): grad * (1 - y^2)


def carry_state(h: Tensor, m: SegmentMasks, t: int, carried: Tensor, out: Tensor) -> Tensor:
    """The ``state`` mask on the step's new h, which is carried on: in place when the step's output is
    the carried value, else into ``carried[t]`` (TensorFlow: the output is taken before the mask)."""
    if carried is out:
        return h.mul_(m.state[t])
    return torch.mul(h, m.state[t], out=carried[t])


def output_grads(m: SegmentMasks, dh: Tensor, d_out: Tensor | None, t: int) -> Tensor:
    """Gradient reaching the step's h before the ``state`` mask, from the carried h and the output ``d_out``."""
    if m.state is None:
        return dh if d_out is None else dh + d_out
    if m.output_pre_mask:  # out_t = h before the mask; carried = h * mask
        dh = dh * m.state[t]
        return dh if d_out is None else dh.add_(d_out)
    if d_out is not None:  # out_t = carried = h * mask
        dh = dh + d_out
    return dh * m.state[t]


def recurrent_inputs(m: SegmentMasks, h0: Tensor, carried: Tensor) -> tuple[Tensor, Tensor | None]:
    """Every h that entered U, for ``dU``: ``(h_{t-1} * m_t (T, B, H), None)``, or with untied masks
    ``(h_{t-1} (T, B, H), the gates' masks (G, T|1, B|1, H))`` for ``gemm.recurrent_weight_grad``
    to apply gate by gate.

    Recomputed in backward from the carried states and the masks instead of kept from the
    forward: one vectorised product instead of a (G, T, B, H) buffer held over the step.
    """
    previous = torch.cat([h0.unsqueeze(0), carried[:-1]])  # h_0 .. h_{T-1}: (T, B, H)
    if m.h_in is None:
        return previous, None
    if not isinstance(m.h_in[0], Tensor):
        return previous * m.h_in[0], None  # eval under test scaling: one factor
    fixed = all(mask is m.h_in[0] for mask in m.h_in)  # one mask for the segment: broadcast it
    if m.untied:
        return previous, (m.h_in[0].unsqueeze(1) if fixed else torch.stack(list(m.h_in), 1))  # (G, T|1, B|1, H)
    masks = m.h_in[0] if fixed else torch.stack(list(m.h_in))  # (T|., B|1, H)
    return previous * masks, None
