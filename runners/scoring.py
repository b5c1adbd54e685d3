"""A finished run scored again from its saved weights: what ``python -m runners.evaluate`` computes.

Training ends by scoring the test split once, with the weights ``train.test_weights`` names
(the best-validation epoch's by default, or the last epoch's). Papers
and follow-up questions need more: the same number again (to check a result), the
validation split, an MC-dropout estimate with another sample count, or the same model
on another corpus. None of that should cost a retraining, so this reads the run's own
``config.yaml`` and ``checkpoint.pt`` and calls the very functions training calls
(``benchmark.train.evaluate`` and ``evaluate_mc``) on the same batches: the standard
test perplexity equals the one in ``summary.json``.

The checkpoint holds the best-validation weights (``Progress.best_state``) next to the last
ones; the run's ``train.test_weights`` says which are scored, as at the end of training
(``best`` for a run from before the setting existed), and ``weights`` picks the other.
The last weights are read as training tested them: through NT-ASGD's running average once
it has switched to averaging (``benchmark.optim.averaged_weights``). Another corpus
(``data=NAME``, ``data.path=DIR``, ...) is read with its own loader and its words are
mapped into the run's vocabulary (the model knows no other): words the run never saw
count as ``<unk>``, and the share of ``<unk>`` is printed beside the perplexity.

Bad input (not a run directory, no or unreadable weights, an unknown split or corpus)
is an ``EvalError`` with a one-line message; the command prints it as ``error: ...``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from benchmark.data import Corpus, DataError, batchify
from benchmark.data.corpus import UNK
from benchmark.optim import averaged_weights, make_optimizer
from benchmark.train import TEST_WEIGHTS, evaluate, evaluate_mc, ppl
from runners import build
from runners.build import ConfigError
from runners.checkpoints import CHECKPOINT, FORMAT
from runners.run_store import CONFIG, SUMMARY

SPLITS = ("test", "valid")
EVALUATION = "evaluation.json"  # an evaluation's result, in its folder (<run>/eval/<time>/)


class EvalError(ValueError):
    """A run that cannot be evaluated as asked; the message is one line."""


@dataclass
class Evaluation:
    """What one evaluation found; ``render`` and ``json=true`` show it."""

    run_dir: str
    run_name: str
    scheme: str
    cell: str
    status: str  # the run's: finished, diverged, interrupted, unfinished, ...
    split: str
    weights: str  # which weights were scored: best (the best-validation epoch's) or last
    weights_epoch: int | None  # the epoch they are from (None: not recorded, an older checkpoint)
    data: str  # the corpus scored
    own_corpus: bool  # the run's own corpus (else another one, mapped into the run's vocabulary)
    tokens: int
    unk_share: float  # of the scored tokens, the share that is <unk> to the run's vocabulary
    vocab_size: int
    loss: float
    ppl: float
    summary_ppl: float | None  # what summary.json says for this split, these weights and the run's own corpus
    mc_samples: int
    mc_loss: float | None = None
    mc_ppl: float | None = None
    summary_mc_ppl: float | None = None
    mc_note: str | None = None  # why there is no MC-dropout estimate, when one was asked for


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _reason(e: BaseException) -> str:
    """What torch says about an unreadable file, in a few words: its messages run to a paragraph."""
    text = _one_line(e)
    if text.startswith("Weights only load failed"):
        return "not a file torch.save wrote, or one holding more than tensors"
    return text.split(". ")[0]


def origin_dir(run_dir: Path) -> Path | None:
    """The working directory the run was started from (Hydra records it), for its relative paths."""
    try:
        recorded = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        cwd = recorded["hydra"]["runtime"]["cwd"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return Path(cwd) if cwd else None


def _from(origin: Path | None, value: Any) -> Any:
    """A relative path of the run's config, as the run saw it: relative to where it was started."""
    if origin is None or not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
        return value
    return str(origin / value)


def read_run(run_dir: Path) -> tuple[DictConfig, dict | None]:
    """The run's config and summary (None if it never wrote one), once it shows it has saved weights.

    Read before the command makes its output folder (``<run>/eval/<time>``), so a path that is
    not a run is never made into a directory; the weights themselves are read by ``load_run``.
    """
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir} is not a directory; give the directory of a run (it holds {CONFIG}, "
                        f"{SUMMARY} and {CHECKPOINT})")
    if not (run_dir / CONFIG).is_file():
        raise EvalError(f"{run_dir} is not a run directory: it has no {CONFIG} (a sweep's runs are its "
                        "numbered subdirectories)")
    try:
        cfg = OmegaConf.create(yaml.safe_load((run_dir / CONFIG).read_text()))
        for key in ("scheme", "model", "data", "train", "paths"):
            if not isinstance(cfg.get(key), DictConfig):
                raise ValueError(f"no {key} section")
    except Exception as e:  # noqa: BLE001 - any unreadable config gets the same one-line answer
        raise EvalError(f"{run_dir / CONFIG} is not a run's config ({_one_line(e)})") from None
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        summary = None
    if not (run_dir / CHECKPOINT).is_file():
        status = (summary or {}).get("status", "unfinished")
        raise EvalError(f"{run_dir} has no saved weights ({CHECKPOINT} is missing; the run is {status}); "
                        "only a run that finished at least one epoch can be evaluated")
    return cfg, summary


def load_run(run_dir: Path) -> tuple[DictConfig, dict | None, dict]:
    """The run's resolved config, its summary (None if it never wrote one) and its checkpoint's payload.

    Relative ``paths.cache_dir`` and ``data.path`` are made absolute against the directory
    the run was started from, so evaluating from anywhere reads the same corpus.
    """
    cfg, summary = read_run(run_dir)
    path = run_dir / CHECKPOINT
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"format {got!r}, expected {FORMAT}")
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same one-line answer
        raise EvalError(f"{path} is corrupt or not a checkpoint of this suite ({_reason(e)})") from None
    origin = origin_dir(run_dir)
    cfg.paths.cache_dir = _from(origin, cfg.paths.get("cache_dir"))
    if "path" in cfg.data:
        cfg.data.path = _from(origin, cfg.data.path)
    return cfg, summary, payload


def run_weights(cfg: DictConfig) -> str:
    """The weights the run's own test scored: its ``train.test_weights`` (``best`` before the setting existed)."""
    return str(cfg.train.get("test_weights", "best"))


def best_state(payload: dict, path: Path) -> dict:
    """The checkpoint's best-validation weights, or a one-line ``EvalError`` when it has none yet."""
    state = (payload.get("progress") or {}).get("best_state")
    if not state:
        raise EvalError(f"{path} holds no best-validation weights yet: the run stopped before its first "
                        "validation; resume it (run the same command again) to get some")
    return state


def load_weights(model: torch.nn.Module, cfg: DictConfig, payload: dict, weights: str,
                 path: Path) -> tuple[contextlib.AbstractContextManager, int | None]:
    """Load ``weights`` (``best`` or ``last``) from the checkpoint's ``payload`` into ``model``.

    Returns the context to score them in (NT-ASGD's average for the last weights of a run
    that switched to averaging, as ``train`` scores them; else nothing) and their epoch.
    """
    progress = payload.get("progress") or {}
    if weights == "best":
        model.load_state_dict(best_state(payload, path))
        return contextlib.nullcontext(), progress.get("best_epoch")
    model.load_state_dict(payload["model"])
    epoch = int(progress.get("epoch", 1)) - 1  # the checkpoint is taken after an epoch or within the next one
    if not progress.get("averaging"):
        return contextlib.nullcontext(), epoch
    optimizer = make_optimizer(model, build.train_config(cfg), averaged=True)
    optimizer.load_state_dict(payload["optimizer"])
    return averaged_weights(model, optimizer), epoch


def eval_config(cfg: DictConfig, data: dict[str, Any]) -> DictConfig:
    """The run's config with the corpus to score: the run's own with ``data``'s options changed, or,
    where ``data`` names one (``name``), another corpus with ``data``'s options.

    The corpus is checked against its loader's schema first (``build.check_data``), so a
    misspelt option or a value of the wrong type costs one line.
    """
    options = dict(data) if "name" in data else {**OmegaConf.to_container(cfg.data, resolve=True), **data}
    other = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    other.data = options
    try:
        build.check_data(other)
    except ConfigError as e:
        raise EvalError(str(e)) from None
    return other


def map_tokens(tokens: torch.Tensor, source: tuple[str, ...], target: tuple[str, ...]) -> torch.Tensor:
    """Token ids of one vocabulary as ids of another, by word; unknown words become ``<unk>``."""
    stoi = {w: i for i, w in enumerate(target)}
    lookup = torch.tensor([stoi.get(w, stoi[UNK]) for w in source], dtype=torch.int64)
    return lookup[tokens]


def mc_sampled_sites(model: torch.nn.Module) -> list[str]:
    """The mask sites an MC-dropout pass samples: every active one but word dropout (``emb``).

    ``evaluate_mc`` turns word dropout off, as Gal's released test does; with no other
    site (``scheme=none``, or every rate 0) each sample is the deterministic model, and
    an "MC" number would only repeat the standard one.
    """
    return [site for site, rate in model.rnn.plan.rates.items() if rate and site != "emb"]


def _load(cfg: DictConfig) -> Corpus:
    try:
        return build.corpus(cfg)
    except (DataError, ValueError) as e:
        raise EvalError(_one_line(e)) from None


# The command's own keys (conf/eval.yaml) and their types; ``run`` and ``data`` are checked on their own.
OPTIONS = {"split": str, "weights": str | None, "mc": int | None, "seed": int | None, "device": str, "json": bool}


def check_options(split: str, weights: str | None, mc: int | None, device: str) -> None:
    """The options' values, each refused in one line naming what is allowed."""
    if split not in SPLITS:
        raise EvalError(f"split={split} is unknown; choose one of: {', '.join(SPLITS)}")
    if weights is not None and weights not in TEST_WEIGHTS:
        raise EvalError(f"weights={weights} is unknown; choose one of: {', '.join(TEST_WEIGHTS)}")
    if mc is not None and mc < 0:
        raise EvalError(f"mc={mc} must be 0 (none) or a number of samples")
    try:  # the run's own check of device names; the rest of a run's config was checked when it trained
        build.check_top_level(OmegaConf.create({"seed": 0, "threads": None, "hardware": "any", "device": device}))
    except ConfigError as e:
        raise EvalError(str(e)) from None


def check_request(cfg: DictConfig) -> None:
    """An evaluation's config (``conf/eval.yaml`` and its overrides), as far as it can be checked without torch.

    What the command checks before Hydra makes the output folder: the run is named and is a
    run with saved weights, and every option has its type and an allowed value.
    """
    if OmegaConf.is_missing(cfg, "run"):
        raise EvalError("run is not set: name the run to score, e.g. python -m runners.evaluate "
                        "run=outputs/runs/<time>-<run name>")
    build.check_types("", {key: cfg.get(key) for key in OPTIONS}, OPTIONS)
    check_options(cfg.split, cfg.weights, cfg.mc, cfg.device)
    run_cfg, _ = read_run(Path(str(cfg.run)))
    if given_data(cfg):
        eval_config(run_cfg, given_data(cfg))


def given_data(cfg: DictConfig) -> dict[str, Any]:
    """The corpus options an evaluation's command line set (``data=NAME``, ``data.KEY=VALUE``); the rest are unset."""
    return {str(key): cfg.data[key] for key in cfg.data if not OmegaConf.is_missing(cfg.data, key)}


def evaluate_run(run_dir: Path, split: str = "test", mc: int | None = None, data: dict[str, Any] | None = None,
                 device: str = "auto", seed: int | None = None, weights: str | None = None) -> Evaluation:
    """Score ``split`` with the run's weights, as training scored its test split.

    ``weights``: ``best`` or ``last`` (None: the run's ``train.test_weights``). ``mc``:
    MC-dropout samples (None: the run's ``train.mc_samples``; 0: none). ``seed`` seeds the
    MC masks (None: the run's seed). ``data`` changes the run's corpus options, or with a
    ``name`` names another corpus (see ``eval_config``).
    """
    check_options(split, weights, mc, device)
    run_dir = Path(run_dir)
    cfg, summary, payload = load_run(run_dir)
    own_weights = run_weights(cfg)
    weights = own_weights if weights is None else weights
    if weights == "best":
        best_state(payload, run_dir / CHECKPOINT)  # held at all: said before any corpus is read
    cfg.device = device
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))

    corpus = _load(cfg)
    other = eval_config(cfg, data) if data else None
    own = other is None or OmegaConf.to_container(other.data, resolve=True) == OmegaConf.to_container(cfg.data,
                                                                                                     resolve=True)
    scored = corpus if own else _load(other)
    tokens = scored.test if split == "test" else scored.valid
    if not own:
        tokens = map_tokens(tokens, scored.itos, corpus.itos)
    dev = build.device(cfg)
    model = build.model(cfg, corpus.vocab_size)
    try:
        scoring, weights_epoch = load_weights(model, cfg, payload, weights, run_dir / CHECKPOINT)
    except RuntimeError as e:
        raise EvalError(f"the saved weights do not fit the run's config and corpus (vocabulary {corpus.vocab_size} "
                        f"words now): {_one_line(e)}") from None
    model.to(dev)
    train_cfg = cfg.train
    batch = (train_cfg.get("test_batch_size") or train_cfg.eval_batch_size) if split == "test" \
        else train_cfg.eval_batch_size
    try:
        batches = batchify(tokens, int(batch)).to(dev)
    except ValueError as e:
        raise EvalError(f"the {split} split of {scored.name}: {_one_line(e)}") from None
    bptt = int(train_cfg.bptt)
    status = (summary or {}).get("status", "unfinished")
    # summary.json's number for this split is of the run's own test weights (test) or of the
    # best-validation epoch (valid): shown beside ours only where it scored the same weights.
    recorded = {"test": ("test_ppl", own_weights), "valid": ("best_val_ppl", "best")}[split]
    comparable = own and weights == recorded[1]
    with scoring:
        loss = evaluate(model, batches, bptt)
        result = Evaluation(
            run_dir=str(run_dir), run_name=str(cfg.get("run_name", run_dir.name)), scheme=str(cfg.scheme.name),
            cell=str(cfg.model.cell), status=status, split=split, weights=weights, weights_epoch=weights_epoch,
            data=scored.name, own_corpus=own, tokens=int(tokens.numel()),
            unk_share=float((tokens == corpus.itos.index(UNK)).float().mean()), vocab_size=corpus.vocab_size,
            loss=loss, ppl=ppl(loss), summary_ppl=(summary or {}).get(recorded[0]) if comparable else None,
            mc_samples=int(train_cfg.get("mc_samples", 0) if mc is None else mc))
        if result.mc_samples:
            sites = mc_sampled_sites(model)
            if not sites:
                result.mc_note = (f"scheme {result.scheme} samples no dropout mask at test time (word dropout is off "
                                  "in MC passes), so MC-dropout would repeat the standard perplexity")
            else:
                torch.manual_seed(int(cfg.seed) if seed is None else seed)
                result.mc_loss = evaluate_mc(model, batches, bptt, result.mc_samples)
                result.mc_ppl = ppl(result.mc_loss)
                if comparable and split == "test":
                    result.summary_mc_ppl = (summary or {}).get("mc_test_ppl")
    return result


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def render(result: Evaluation) -> str:
    """The evaluation as a few aligned lines, the run's own numbers beside the new ones."""
    what = "test" if result.split == "test" else "valid"
    data = f"{result.data} {result.split} split, {result.tokens:,} tokens"
    if not result.own_corpus:
        data += f", {100 * result.unk_share:.1f} % <unk> under the run's vocabulary of {result.vocab_size:,} words"
    which = "best-validation weights" if result.weights == "best" else "last weights"
    if result.weights_epoch is not None:
        which += f" (epoch {result.weights_epoch})"
    lines = [f"run      {result.run_dir}: {result.run_name} ({result.scheme}, {result.cell}, {result.status}); "
             + which,
             f"data     {data}"]
    rows = [(f"{what} ppl", result.ppl, result.summary_ppl)]
    if result.mc_ppl is not None:
        rows.append((f"MC {what} ppl (K={result.mc_samples})", result.mc_ppl, result.summary_mc_ppl))
    width = max(len(r[0]) for r in rows)
    for label, value, before in rows:
        line = f"{label:<{width}}  {_num(value):>9}"
        if before is not None:
            line += f"   summary.json: {_num(before)}"
        lines.append(line)
    if result.mc_note:
        lines.append(f"MC-dropout: none; {result.mc_note}")
    return "\n".join(lines)
