"""One layer on the native RNN kernel (``torch._VF.lstm`` / ``torch._VF.gru``: oneDNN on a CPU, cuDNN on CUDA).

Why layer by layer: masks between layers (``x``, ``out``) and a dropped ``weight_hh``
must be applied outside the kernel; regularisation never goes into the kernel itself.
The schemes whose sites all act outside the recurrence (``none``, ``naive``,
``weightdrop``, and any scheme in eval whose sites are then the identity) run here.

Why the weights are passed in, never swapped on the module: AWD-LSTM's WeightDrop
replaced ``nn.Parameter``s on a cuDNN module and broke with nearly every PyTorch release
(salesforce/awd-lstm-lm issues 2, 79, 86, 114, 119). Here the dropped weight is an
ordinary tensor computed each forward and handed to the kernel; autograd routes its
gradient to the raw parameter.

On CUDA, cuDNN wants a layer's weights laid out in one buffer, otherwise it copies them
and warns "RNN module weights are not part of single contiguous chunk of memory". Each
layer's parameters are therefore flattened into their own buffer (``flatten_layer``, what
``nn.LSTM.flatten_parameters`` does for the whole stack), and when a weight is replaced
by its dropped copy the layer's tensors are re-laid at the very same offsets of a fresh
buffer (``pack_like``): the one copy DropConnect costs anyway, without the warning.
The CUDA branch is not exercised by the CPU test suite.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, _VF

from benchmark.engine.masks import dropped_weight_hh, input_mask


def lstm_layer(x: Tensor, h0: Tensor, c0: Tensor, weights: list[Tensor], has_biases: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(T, B, D), (B, H), (B, H) -> (T, B, H), (B, H), (B, H)`` on the native kernel."""
    out, h, c = _VF.lstm(
        x, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, has_biases, 1, 0.0,
        torch.is_grad_enabled(),  # cuDNN keeps its backward workspace only when asked
        False, False,
    )
    return out, h[0], c[0]


def gru_layer(x: Tensor, h0: Tensor, weights: list[Tensor], has_biases: bool) -> tuple[Tensor, Tensor]:
    """``(T, B, D), (B, H) -> (T, B, H), (B, H)`` on the native kernel."""
    out, h = _VF.gru(x, h0.unsqueeze(0), weights, has_biases, 1, 0.0, torch.is_grad_enabled(), False, False)
    return out, h[0]


def run_layer(mode: str, x: Tensor, h0: Tensor, c0: Tensor | None, params: list[Tensor],
              masks: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor | None]:
    """Input mask and DropConnect weight outside the kernel, then the kernel: ``(out, h_T, c_T or None)``.

    ``mode`` is ``"LSTM"`` or ``"GRU"``; ``params`` ``[W, U]`` or ``[W, U, b_ih, b_hh]``.
    """
    x_mask, _ = input_mask(masks)
    if x_mask is not None:
        x = x * x_mask  # (T, B, D) * (T|B|1, ..., D)
    weights = params
    w_hh = dropped_weight_hh(params[1], masks)
    if w_hh is not params[1]:
        weights = [params[0], w_hh, *params[2:]]
        if w_hh.is_cuda and is_flat(params):
            weights = pack_like(params, weights)
    has_biases = len(params) == 4
    if mode == "LSTM":
        return lstm_layer(x, h0, c0, weights, has_biases)
    out, h = gru_layer(x, h0, weights, has_biases)
    return out, h, None


def is_flat(params: list[Tensor]) -> bool:
    """Whether the tensors all live in one storage (a flattened layer)."""
    ptr = params[0].untyped_storage().data_ptr()
    return all(p.untyped_storage().data_ptr() == ptr for p in params[1:])


def flatten_layer(params: list[Tensor], mode: str, input_size: int, hidden_size: int) -> None:
    """Make one layer's parameters views of one cuDNN-laid buffer, in place (CUDA only).

    A no-op on CPU, for dtypes cuDNN rejects, or when cuDNN's flattening is disabled —
    the same conditions ``nn.RNNBase.flatten_parameters`` checks.
    """
    first = params[0]
    if not all(p.is_cuda and p.dtype == first.dtype and torch.backends.cudnn.is_acceptable(p) for p in params):
        return
    if len({p.data_ptr() for p in params}) != len(params) or is_flat(params):
        return
    import torch.backends.cudnn.rnn as cudnn_rnn

    with torch.cuda.device_of(first), torch.no_grad():
        if torch._use_cudnn_rnn_flatten_weight():
            torch._cudnn_rnn_flatten_weight(
                params, len(params), input_size, cudnn_rnn.get_cudnn_mode(mode), hidden_size, 0, 1, False, False
            )


def pack_like(originals: list[Tensor], replacements: list[Tensor]) -> list[Tensor]:
    """Lay ``replacements`` out at the offsets ``originals`` occupy in their shared buffer.

    Differentiable (``torch.cat`` of the pieces, then views), so gradients reach every
    replacement. Used only on CUDA when the originals are flat.
    """
    first = originals[0]
    total = first.untyped_storage().nbytes() // first.element_size()
    order = sorted(range(len(originals)), key=lambda k: originals[k].storage_offset())
    pieces, pos = [], 0
    for k in order:
        start = originals[k].storage_offset()
        if start > pos:
            pieces.append(replacements[k].new_zeros(start - pos))  # cuDNN alignment padding
        pieces.append(replacements[k].reshape(-1))
        pos = start + originals[k].numel()
    if total > pos:
        pieces.append(first.new_zeros(total - pos))
    buf = torch.cat(pieces)
    return [buf[o.storage_offset() : o.storage_offset() + o.numel()].view_as(o) for o in originals]
