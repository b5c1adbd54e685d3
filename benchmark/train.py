"""Training and evaluation of a language model with truncated BPTT and SGD.

The loop is the one of Zaremba et al. (2014): the hidden state is carried across
segments and detached at their boundary, SGD with gradient-norm clipping, the learning
rate held for ``decay_after`` epochs and then multiplied by ``lr_decay`` every epoch.
After every epoch the model is evaluated on the validation split; at the end the
weights with the best validation perplexity are evaluated on the test split.

Everything observed is handed to ``log(record)`` as plain dicts, so this module knows
nothing of W&B, Hydra or files.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.data import Corpus, batchify, segments
from benchmark.data.batching import num_segments
from benchmark.model import LanguageModel, detach_hidden

Record = dict
Logger = Callable[[Record], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 25
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    lr: float = 1.0
    lr_decay: float = 0.5
    decay_after: int = 4
    clip: float = 5.0
    log_interval: int = 50
    mc_samples: int = 0  # K > 0 adds an MC-dropout test evaluation (Gal & Ghahramani 2016, eq. 4)


@dataclass
class TrainResult:
    status: str  # finished | diverged
    best_val_ppl: float | None
    test_ppl: float | None
    epochs: int
    train_tokens_per_s: float
    diverged_step: int | None = None
    diverged_what: str | None = None
    mc_test_ppl: float | None = None


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base rate in 1-based ``epoch``: Zaremba's ``decay ** max(epoch - max_epoch, 0)``."""
    return cfg.lr_decay ** max(epoch - cfg.decay_after, 0)


def ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows; it is inf in all but name


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
    """
    if samples < 1:
        raise ValueError(f"mc_samples={samples} must be at least 1")
    model.train()  # masks on; no_grad keeps it an evaluation
    total, count, hidden = 0.0, 0, [None] * samples
    for inputs, targets in segments(data, bptt):
        logp = []
        for k in range(samples):
            logits, hidden[k] = model(inputs, hidden[k])
            logp.append(torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1))  # (T, B)
        mean_logp = torch.logsumexp(torch.stack(logp), dim=0) - math.log(samples)  # (T, B)
        total -= mean_logp.sum().item()
        count += targets.numel()
    model.eval()
    return total / count


def train(model: LanguageModel, corpus: Corpus, cfg: TrainConfig, device: torch.device,
          log: Logger = lambda record: None, progress: bool = True) -> TrainResult:
    model.to(device)
    train_data = batchify(corpus.train, cfg.batch_size).to(device)
    valid_data = batchify(corpus.valid, cfg.eval_batch_size).to(device)
    test_data = batchify(corpus.test, cfg.eval_batch_size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e + 1, cfg))

    best_val, best_state, step, train_time, train_tokens = math.inf, None, 0, 0.0, 0
    n_segments = num_segments(train_data, cfg.bptt)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        hidden, epoch_loss, epoch_tokens = None, 0.0, 0
        interval_loss, interval_tokens = 0.0, 0
        started = time.perf_counter()
        bar = tqdm(segments(train_data, cfg.bptt), total=n_segments, desc=f"epoch {epoch}/{cfg.epochs}",
                   disable=not progress, leave=False, mininterval=1.0)
        for inputs, targets in bar:
            step += 1
            hidden = detach_hidden(hidden)
            logits, hidden = model(inputs, hidden)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            if not torch.isfinite(loss):
                return _diverged(step, epoch - 1, "loss", best_val, train_tokens, train_time, started, log)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            if not torch.isfinite(grad_norm):
                return _diverged(step, epoch - 1, "gradient", best_val, train_tokens, train_time, started, log)
            optimizer.step()

            n = targets.numel()
            value = loss.item()
            epoch_loss += value * n
            epoch_tokens += n
            interval_loss += value * n
            interval_tokens += n
            if step % cfg.log_interval == 0:
                mean = interval_loss / interval_tokens
                log({"epoch": epoch, "step": step, "split": "train", "scope": "interval", "loss": mean,
                     "ppl": ppl(mean), "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm.item()})
                bar.set_postfix(ppl=f"{ppl(mean):.1f}")
                interval_loss, interval_tokens = 0.0, 0
        elapsed = time.perf_counter() - started
        train_time += elapsed
        train_tokens += epoch_tokens
        mean = epoch_loss / epoch_tokens
        log({"epoch": epoch, "step": step, "split": "train", "scope": "epoch", "loss": mean, "ppl": ppl(mean),
             "lr": optimizer.param_groups[0]["lr"], "tokens_per_s": epoch_tokens / elapsed})
        scheduler.step()

        val_loss = evaluate(model, valid_data, cfg.bptt)
        log({"epoch": epoch, "step": step, "split": "val", "loss": val_loss, "ppl": ppl(val_loss)})
        if not math.isfinite(val_loss):
            return _diverged(step, epoch, "validation loss", best_val, train_tokens, train_time, started, log)
        if val_loss < best_val:
            best_val, best_state = val_loss, copy.deepcopy(model.state_dict())

    model.load_state_dict(best_state)
    test_loss = evaluate(model, test_data, cfg.bptt)
    test_event = {"epoch": cfg.epochs, "step": step, "split": "test", "loss": test_loss, "ppl": ppl(test_loss)}
    mc_ppl = None
    if cfg.mc_samples:
        mc_loss = evaluate_mc(model, test_data, cfg.bptt, cfg.mc_samples)
        mc_ppl = ppl(mc_loss)
        test_event.update(mc_loss=mc_loss, mc_ppl=mc_ppl, mc_samples=cfg.mc_samples)
    log(test_event)
    return TrainResult("finished", ppl(best_val), ppl(test_loss), cfg.epochs, train_tokens / max(train_time, 1e-9),
                       mc_test_ppl=mc_ppl)


def _diverged(step: int, epochs_done: int, what: str, best_val: float, tokens: int, train_time: float,
              started: float, log: Logger) -> TrainResult:
    """A non-finite value ends the job cleanly so a sweep goes on with its other jobs."""
    train_time += time.perf_counter() - started
    log({"epoch": epochs_done + 1, "step": step, "split": "train", "event": "diverged", "what": what,
         "loss": math.nan, "ppl": math.nan})
    return TrainResult("diverged", ppl(best_val) if math.isfinite(best_val) else None, None, epochs_done,
                       tokens / max(train_time, 1e-9), diverged_step=step, diverged_what=what)
