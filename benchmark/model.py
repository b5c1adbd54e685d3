"""The word-level language model: embedding -> stacked recurrent layers -> decoder.

The recurrent stack is one module that carries its own dropout scheme (input, output
and recurrent sites). The model adds only what lives outside the recurrence: the
embedding and the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

CELLS = ("lstm", "gru")


def _naive_stack(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
    """Zaremba et al. (2014): dropout on every non-recurrent connection, none in the loop.

    The native ``nn.LSTM``/``nn.GRU`` drops between layers; the wrapper adds the input
    of the first layer and the output of the last, so every layer's input and output
    are masked, a fresh mask at every step.
    """

    class NaiveStack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn_cls(input_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, hidden=None):
            out, hidden = self.rnn(self.drop(x), hidden)
            return self.drop(out), hidden

    return NaiveStack()


def recurrent_stack(cell: str, input_size: int, hidden_size: int, num_layers: int,
                    scheme: str, dropout: float) -> nn.Module:
    """The recurrent layers with their dropout scheme, called as ``out, h = rnn(x, h)``."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
    if scheme == "none":
        dropout = 0.0
    elif scheme != "naive":
        raise ValueError(f"unknown scheme {scheme!r}; choose one of: naive, none")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is outside [0, 1)")
    return _naive_stack(cell, input_size, hidden_size, num_layers, dropout)


class LanguageModel(nn.Module):
    """Predicts the next word at every position of a (T, B) batch of token ids."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int,
                 cell: str = "lstm", scheme: str = "none", dropout: float = 0.0,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.rnn = recurrent_stack(cell, emb_size, hidden_size, num_layers, scheme, dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        # Zaremba et al. (2014): every parameter uniform in [-init_scale, init_scale].
        for p in self.parameters():
            nn.init.uniform_(p, -init_scale, init_scale)

    def forward(self, tokens: torch.Tensor, hidden=None):
        """tokens (T, B) -> logits (T, B, V), next hidden state."""
        x = self.embedding(tokens)  # (T, B, E)
        out, hidden = self.rnn(x, hidden)  # (T, B, H)
        return self.decoder(out), hidden


def detach_hidden(hidden):
    """Cut the graph at a segment boundary (truncated BPTT), keeping the values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()
