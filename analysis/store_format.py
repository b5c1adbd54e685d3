"""The run store's contract: what a job directory holds and what each of its files says.

A job directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one event
per line, appended as training goes), ``summary.json`` (a ``JobSummary``, written
atomically at the end) and ``checkpoint.pt`` (the state a job resumes from). The runners
write them (``runners.run_store``, ``runners.job``, ``runners.checkpoints``, the resilient
launcher) and analysis reads them (``analysis.store_reader``, ``analysis.runs``, the
publishers), so the file names, the summary's fields and the event keys are written down
here once, and a field renamed on one side cannot go unnoticed on the other.

Why here: the dependency runs one way, ``runners`` -> ``analysis``, and a report must be
buildable where torch is not installed; so this module is standard library only, and
the runners import it, never the reverse. The events themselves come from the training
loop (``benchmark.train``), which imports nothing of ``analysis``: ``tests/test_store_format.py``
holds every event it emits to the keys below.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

# --- the files of a job directory --------------------------------------------------------

CONFIG, METRICS, SUMMARY, CHECKPOINT = "config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"

# --- the summary -------------------------------------------------------------------------

# A job's ending. ``interrupted`` (a signal, Ctrl-C) and ``failed`` resume when run again;
# the ``DONE`` ones are skipped.
STATUSES = ("finished", "diverged", "interrupted", "failed")
DONE = ("finished", "diverged")
# Where the summary's identity fields come from in the resolved config: a summary written
# before a field existed, or for a job killed before it wrote one, is completed from here.
CONFIG_KEYS = {"scheme": "scheme.name", "cell": "model.cell", "data": "data.name", "seed": "seed",
               "dropout": "dropout", "run_name": "run_name"}


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key (``"model.cell"``) of a nested config, ``None`` where absent."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def resolve_reference(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's numbers a config carries (``reference``), with a per-variant ``{by, values}`` applied.

    A preset compares its runs with a published figure; one that covers several variants
    (tied and untied gate masks) gives ``by: <config key>`` and ``values: {<value>: {...}}``.
    The job records the result in its summary; a reader of an older store applies the same rule.
    """
    ref = config.get("reference")
    if not isinstance(ref, Mapping) or not ref:
        return None
    ref = dict(ref)
    by, values = ref.pop("by", None), ref.pop("values", None) or {}
    if by is not None and isinstance(values, Mapping):
        chosen = values.get(str(config_value(config, str(by))))
        ref.update(chosen if isinstance(chosen, Mapping) else {})
    return ref


@dataclass
class JobSummary:
    """``summary.json``: one job's identity, ending, scores and where it ran.

    The job writes it at its end, whatever happened (``status`` is ``failed`` until the loop
    returns); a reader takes any mapping (a W&B summary carries keys of its own) and gets
    ``None`` for a field the writer of that summary did not know yet.
    """

    run_name: str | None = None
    scheme: str | None = None
    cell: str | None = None
    data: str | None = None
    seed: int | None = None
    dropout: float | dict | None = None  # 0 for scheme none; a rate, or {site or group: rate}
    status: str | None = None  # one of STATUSES
    best_val_ppl: float | None = None
    test_ppl: float | None = None
    test_weights: str | None = None  # which weights test_ppl scores: best | last (train.test_weights)
    test_epoch: int | None = None  # the epoch those weights are from
    bayes_test_ppl: float | None = None  # the corpus's known optimum, for a synthetic corpus
    mc_test_ppl: float | None = None
    epochs: int | None = None
    wall_s: float | None = None
    train_tokens_per_s: float | None = None
    diverged_step: int | None = None
    diverged_what: str | None = None  # what became NaN, infinite or absurd
    error: str | None = None  # the first line of what a failed job raised
    dir: str | None = None
    reference: dict | None = None  # resolve_reference of the config
    plan: dict | None = None  # the dropout plan the engine ran (DropoutPlan.describe())
    machine: dict | None = None  # benchmark.machine.machine() of the device it ran on
    unk_share: dict | None = None  # {split: share of <unk> tokens}
    warnings: list | None = None
    wandb_group: str | None = None  # the W&B group it logged to (the dashboard filters on it)

    @classmethod
    def start(cls, config: Mapping[str, Any], **known: Any) -> JobSummary:
        """A job's summary before it runs: who it is, from its resolved config, and ``failed``."""
        ident = {name: config_value(config, key) for name, key in CONFIG_KEYS.items()}
        if ident["scheme"] == "none":
            ident["dropout"] = 0.0  # the config's rate is not applied to anything
        return cls(**{**ident, "status": "failed", "epochs": 0, "reference": resolve_reference(config), **known})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSummary:
        """The summary's fields of ``data``; keys it does not know are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_summary(job_dir: Path) -> JobSummary | None:
    """The job directory's ``summary.json``, or None when there is none or it cannot be read."""
    try:
        data = json.loads((Path(job_dir) / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return JobSummary.from_json(data) if isinstance(data, dict) else None


# --- the events of metrics.jsonl ----------------------------------------------------------

# Every event says where it sits on the curves; one without these cannot be placed.
REQUIRED_EVENT_KEYS = frozenset({"epoch", "step", "split"})
# ``split``: a training interval or epoch, a validation pass, the one test, a stability probe.
SPLITS = ("train", "val", "test", "probe")
# ``scope`` of a train event: the mean over ``log_interval`` steps, or over the whole epoch.
SCOPES = ("interval", "epoch")
# ``event`` of a train event that marks a moment: the run diverged (``what`` says what did),
# or NT-ASGD switched to averaging.
MARKS = ("diverged", "averaging")
# Numbers some events carry, and the per-step lists of a probe (null entries are NaN).
EVENT_NUMBERS = ("lr", "grad_norm", "grad_norm_max", "tokens_per_s", "max_state", "growth_per_step")
EVENT_LISTS = ("state_norm", "cell_norm")
# Every key an event may hold: the above, the loss, and what qualifies a test or probe event
# (which weights the test scored, the MC-dropout scores, what triggered a probe).
EVENT_KEYS = frozenset((*REQUIRED_EVENT_KEYS, "scope", "event", "what", "loss", "ppl", *EVENT_NUMBERS, *EVENT_LISTS,
                        "weights", "weights_epoch", "mc_loss", "mc_ppl", "mc_samples", "at"))
