"""The training step the speed benchmarks time: a model, its optimizer and one fixed batch.

``benchmark.speed`` times it for every scheme against the same language model around
``torch.nn.LSTM``/``GRU`` (``NativeLM``, the baseline, ``NATIVE``); ``benchmark.keras_compare``
times it against Keras; ``benchmark.step_memory`` measures its peak memory. One definition of
a step (forward from a zero state, loss, backward, clipping, SGD), so the three measure the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.model import LanguageModel

NATIVE = "native"


class NativeLM(nn.Module):
    """The baseline: the language model's embedding and decoder around ``torch.nn.LSTM``/``GRU``."""

    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int, cell: str,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(emb_size, hidden_size, num_layers)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -init_scale, init_scale)

    def forward(self, tokens: torch.Tensor, hidden: Any = None):
        out, hidden = self.rnn(self.embedding(tokens), hidden)
        return self.decoder(out), hidden


@dataclass(frozen=True)
class Settings:
    widths: tuple[tuple[str, int], ...]
    cells: tuple[str, ...]
    schemes: tuple[str, ...]
    layers: int = 2
    batch: int = 20
    bptt: int = 35
    vocab: int = 10_000
    dropout: float = 0.3
    lr: float = 1.0
    clip: float = 5.0
    warmup: int = 2
    repeats: int = 7
    memory: bool = True
    device: str = "cpu"
    threads: int = 0
    seed: int = 0


def build(scheme: str, cell: str, hidden: int, s: Settings, device: torch.device) -> nn.Module:
    torch.manual_seed(s.seed)
    if scheme == NATIVE:
        model: nn.Module = NativeLM(s.vocab, hidden, hidden, s.layers, cell)
    else:
        model = LanguageModel(s.vocab, hidden, hidden, s.layers, cell=cell, scheme=scheme, dropout=s.dropout)
    return model.to(device).train()


def path_of(model: nn.Module) -> str:
    if isinstance(model, NativeLM):
        return "torch.nn"
    return model.rnn.path(True)


class Stepper:
    """One model, its optimizer and its fixed batch; ``step()`` returns seconds."""

    def __init__(self, model: nn.Module, s: Settings, device: torch.device) -> None:
        self.model, self.s, self.device = model, s, device
        self.optimizer = torch.optim.SGD(model.parameters(), lr=s.lr)
        g = torch.Generator().manual_seed(s.seed + 1)
        self.tokens = torch.randint(s.vocab, (s.bptt, s.batch), generator=g).to(device)  # (T, B)
        self.targets = torch.randint(s.vocab, (s.bptt, s.batch), generator=g).to(device)  # (T, B)

    def step(self) -> float:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        logits, _ = self.model(self.tokens)  # a fresh zero state each step (why: benchmark.speed)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), self.targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.s.clip)
        self.optimizer.step()
        if cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started
