"""The word-level language model: embedding -> stacked recurrent layers -> decoder.

The recurrent stack (``benchmark.engine.LSTM``/``GRU``) carries its own dropout scheme:
its input, its recurrence and its output. The model adds only what lives outside the
recurrence: word-type embedding dropout at the scheme's ``emb`` rate (Gal & Ghahramani
2016; AWD-LSTM), the embedding and the decoder.

Initialisation is data (``init``): ``uniform`` (Zaremba et al. 2014) or ``awd``
(salesforce/awd-lstm-lm's ``init_weights``). ``last_layer_size`` lets the last recurrent
layer differ in width (AWD-LSTM: 1150, 1150, 400, the last as wide as the embedding so the
decoder can be tied); the engine then runs per-layer widths and carries the state as lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.engine import GRU, LSTM, EmbeddingDropout

CELLS = {"lstm": LSTM, "gru": GRU}
# ``uniform``: every parameter U(-init_scale, init_scale) (Zaremba et al. 2014).
# ``awd``: salesforce/awd-lstm-lm model.py ``init_weights``: embedding and decoder weights
# U(-init_scale, init_scale), decoder bias 0, the recurrent layers left at torch's default
# U(-1/sqrt(H_l), 1/sqrt(H_l)).
INITS: tuple[str, ...] = ("uniform", "awd")


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` config group's schema: each field's type is what a run may set.

    The runner checks a job's ``model.*`` values against these type hints before any
    work, so a wrong key or type costs one line (issue 5), and the schema lives beside
    the model it describes rather than in a second copy.
    """

    cell: str = "lstm"
    emb_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    init_scale: float = 0.1  # the U(-init_scale, init_scale) of ``init``
    tie_weights: bool = False  # Inan et al. 2017, Press & Wolf 2017; needs emb_size == the last layer's width
    init: str = "uniform"  # one of INITS: uniform (Zaremba et al. 2014) or awd (awd-lstm-lm init_weights)
    last_layer_size: int | None = None  # the last recurrent layer's width; None: hidden_size


class LanguageModel(nn.Module):
    """Predicts the next word at every position of a (T, B) batch of token ids.

    ``scheme``, ``dropout`` and ``scheme_options`` go to the recurrent stack unchanged,
    so the engine is the one authority on what they mean and what is allowed. ``init`` is
    one of ``INITS``; ``last_layer_size`` (None: ``hidden_size``) is the last recurrent
    layer's width, and the decoder reads that width.
    """

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int,
                 cell: str = "lstm", scheme: str = "none", dropout: float | Mapping[str, float] = 0.0,
                 init_scale: float = 0.1, tie_weights: bool = False, init: str = "uniform",
                 last_layer_size: int | None = None, **scheme_options: Any) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        if last_layer_size is not None and (isinstance(last_layer_size, bool) or not isinstance(last_layer_size, int)
                                            or last_layer_size < 1):
            raise ValueError(f"last_layer_size must be a positive integer or None, got {last_layer_size!r}")
        self.cell = cell
        self.init = init
        widths: int | tuple[int, ...] = hidden_size
        if last_layer_size is not None and last_layer_size != hidden_size:
            widths = (hidden_size,) * (num_layers - 1) + (last_layer_size,)  # per-layer widths
        self.rnn = CELLS[cell](emb_size, widths, num_layers, dropout=dropout, scheme=scheme, **scheme_options)
        emb = self.rnn.plan.sites.get("emb")
        self.embedding = EmbeddingDropout(nn.Embedding(vocab_size, emb_size), self.rnn.emb_p,
                                          scaling=emb.scaling if emb is not None else "inverted")
        out_size = self.rnn.layer_sizes[-1]  # the last layer's width
        self.decoder = nn.Linear(out_size, vocab_size)
        self.last_output: torch.Tensor | None = None
        if init == "uniform":
            # Zaremba et al. (2014): every parameter uniform in [-init_scale, init_scale].
            for p in self.parameters():
                nn.init.uniform_(p, -init_scale, init_scale)
        else:
            # awd-lstm-lm model.py init_weights: the recurrent layers keep the engine's
            # nn.LSTM initialisation, U(-1/sqrt(H_l), 1/sqrt(H_l)) per layer.
            nn.init.uniform_(self.embedding.embedding.weight, -init_scale, init_scale)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -init_scale, init_scale)
        if tie_weights:
            # Inan et al. 2017, Press & Wolf 2017: one matrix for input and output embeddings.
            if emb_size != out_size:
                raise ValueError(f"tie_weights needs emb_size == the last layer's width (last_layer_size, else "
                                 f"hidden_size), got {emb_size} and {out_size}")
            self.decoder.weight = self.embedding.embedding.weight

    def __getstate__(self) -> dict[str, Any]:
        # ``last_output`` belongs to an autograd graph and cannot be copied; copies start without it.
        return {**self.__dict__, "last_output": None}

    def forward(self, tokens: torch.Tensor, hidden=None):
        """tokens (T, B) -> logits (T, B, V), next hidden state."""
        x = self.embedding(tokens)  # (T, B, E)
        out, hidden = self.rnn(x, hidden)  # (T, B, H_last)
        if self.training:
            self.last_output = out  # the dropped output, for AWD-LSTM's activation regularisation
        return self.decoder(out), hidden

    def activation_regularization(self, ar: float, tar: float) -> torch.Tensor:
        """AWD-LSTM's AR and TAR (Merity et al. 2017, Sec. 4.6) on the last training forward.

        AR penalises large outputs: ``ar * mean(dropped_output^2)``. TAR penalises fast
        change: ``tar * mean((h_t - h_{t-1})^2)`` on the output before dropout.
        """
        penalty = torch.zeros((), device=self.decoder.weight.device)
        if ar:
            penalty = penalty + ar * self.last_output.pow(2).mean()
        if tar:
            raw = self.rnn.last_raw_output  # (T, B, H_last)
            penalty = penalty + tar * (raw[1:] - raw[:-1]).pow(2).mean()
        return penalty


def detach_hidden(hidden):
    """Cut the graph at a segment boundary (truncated BPTT), keeping the values.

    Any nesting of tuples and lists of tensors, as the engine returns it: a stacked
    ``(L, B, H)`` tensor, the LSTM's ``(h, c)``, or per-layer lists (``[(B, H_l)] * L``,
    the LSTM's ``(list of h, list of c)``) when the layers differ in width.
    """
    if hidden is None:
        return None
    if isinstance(hidden, (tuple, list)):
        return type(hidden)(detach_hidden(h) for h in hidden)
    return hidden.detach()
