"""Batching for truncated BPTT, as in Zaremba et al. (2014) and every PTB LM since.

The token stream is cut into ``batch_size`` parallel columns, read top to bottom in
segments of ``bptt`` steps. Because column ``b`` of segment ``k+1`` continues column
``b`` of segment ``k``, the hidden state is carried from one segment to the next
(and detached, so gradients stop at the segment boundary).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) -> (N // batch_size, batch_size); the ragged tail is dropped."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    n = tokens.numel() // batch_size
    if n < 2:
        raise ValueError(f"{tokens.numel()} tokens are too few for batch_size={batch_size}")
    return tokens[: n * batch_size].view(batch_size, n).t().contiguous()  # (T, B)


def segments(data: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (inputs, targets) of shape (t, B), t <= bptt, targets shifted by one step."""
    for i in range(0, data.size(0) - 1, bptt):
        t = min(bptt, data.size(0) - 1 - i)
        yield data[i : i + t], data[i + 1 : i + 1 + t]


def num_segments(data: torch.Tensor, bptt: int) -> int:
    return (data.size(0) - 1 + bptt - 1) // bptt
