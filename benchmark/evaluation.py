"""Scoring a language model: perplexity, the plain evaluation and the MC-dropout one, and what a blow-up is.

The training loop scores validation after every epoch and the test split at its end with
these functions, and ``python -m runners.evaluate`` scores a finished run's weights again
with the same ones, so a number read back equals the one training wrote.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from benchmark.data import segments
from benchmark.model import LanguageModel


def ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows; it is inf in all but name


# A model this many times worse than guessing uniformly over the vocabulary has blown up,
# even when its loss is still a finite number: a run at perplexity 1e67 must not be
# reported "finished" (issue 15). An untrained model sits near 1x.
ABSURD_OVER_UNIFORM = 10.0


def blown_up(loss: float, vocab_size: int, train_loss: float = math.inf) -> bool:
    """A non-finite loss, or a perplexity above ``ABSURD_OVER_UNIFORM`` x the vocabulary size
    while the training loss (the epoch's mean) is no better than guessing uniformly.

    A model that fits its training split better than uniform guessing has not blown up: a
    validation perplexity past 10 x V is then over-fitting, which is what ``debug=overfit``
    drives a 200-token corpus to on purpose (issue 25). Blow-ups (issue 15) are absurd on both.
    """
    if not math.isfinite(loss):
        return True
    return loss > math.log(ABSURD_OVER_UNIFORM * vocab_size) and not train_loss < math.log(vocab_size)


@torch.no_grad()
def evaluate(model: LanguageModel, data: torch.Tensor, bptt: int) -> float:
    """Mean cross-entropy per token over (T, B) ``data``, hidden state carried throughout."""
    model.eval()
    total, count, hidden = 0.0, 0, None
    for inputs, targets in segments(data, bptt):
        logits, hidden = model(inputs, hidden)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    return total / count


@torch.no_grad()
def evaluate_mc(model: LanguageModel, data: torch.Tensor, bptt: int, samples: int) -> float:
    """MC-dropout cross-entropy: dropout on, predictive probabilities averaged over ``samples``.

    Gal & Ghahramani (2016), eq. 4: ``p(y|x) ~ 1/K sum_k p(y|x, masks_k)``. Each of the K
    samples is a whole stochastic model run over the text with its own carried state, and
    the per-token probabilities are averaged before the log (in log space, for stability).
    As in Gal's released test (yaringal/BayesianRNN LM_code): each sample's masks are drawn
    once and held over the whole text, across BPTT segments (``holding_masks``), and word
    (embedding) dropout is off; the recurrent stack's masks are on.
    """
    if samples < 1:
        raise ValueError(f"mc_samples={samples} must be at least 1")
    model.train()  # masks on; no_grad keeps it an evaluation
    model.embedding.eval()  # word-type dropout off for the MC passes
    total, count, hidden = 0.0, 0, [None] * samples
    held: list[dict] = [{} for _ in range(samples)]  # sample k's masks, drawn at its first segment
    # Masks redrawn every step (naive, semeniuta per step) have nothing to hold over the pass.
    fixed = not model.rnn.plan.per_step_sites
    for inputs, targets in segments(data, bptt):
        logp = []
        for k in range(samples):
            with model.rnn.holding_masks(held[k]) if fixed else contextlib.nullcontext():
                logits, hidden[k] = model(inputs, hidden[k])
            logp.append(torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1))  # (T, B)
        mean_logp = torch.logsumexp(torch.stack(logp), dim=0) - math.log(samples)  # (T, B)
        total -= mean_logp.sum().item()
        count += targets.numel()
    model.eval()
    return total / count
