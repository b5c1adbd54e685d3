"""From a resolved config to the library's objects, with every value checked first.

All checks happen here, before any training, so a bad value costs the user one line
and no compute: ``ConfigError`` carries a one-line message that names the key and the
values it allows.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.data import Corpus, load_corpus
from benchmark.engine import resolve
from benchmark.model import CELLS, LanguageModel
from benchmark.optim import OPTIMIZERS
from benchmark.train import TrainConfig


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line."""


def scheme_options(cfg: DictConfig) -> dict:
    """Everything in the ``scheme`` group but its name: the engine's scheme options."""
    return {k: v for k, v in OmegaConf.to_container(cfg.scheme, resolve=True).items() if k != "name"}


def dropout_rates(cfg: DictConfig) -> float | dict:
    """``dropout``: one rate for every site the scheme uses, or a mapping ``{site: rate}``."""
    value = cfg.dropout
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)


def check_types(section: str, values: DictConfig, schema: type) -> None:
    """Each value against the type its dataclass field declares: one line naming the key.

    The dataclass is the library's own (``TrainConfig``), so the schema lives in one place.
    """
    hints = typing.get_type_hints(schema)
    for name, value in values.items():
        if name not in hints:
            raise ConfigError(f"{section}.{name} is not a config key; {section} has: {', '.join(sorted(hints))}")
        allowed = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
        if value is None and type(None) in typing.get_args(hints[name]):
            continue
        ok = any((t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
                 or (t is int and isinstance(value, int) and not isinstance(value, bool))
                 or (t not in (int, float) and isinstance(value, t)) for t in allowed)
        if not ok:
            wanted = " or ".join(_type_name(t) for t in allowed)
            if type(None) in typing.get_args(hints[name]):
                wanted += " or null"
            raise ConfigError(f"{section}.{name}={value} must be {wanted}")


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: raises ``ConfigError`` naming the key."""
    rates = dropout_rates(cfg)
    for site, rate in (rates.items() if isinstance(rates, dict) else [(None, rates)]):
        key = "dropout" if site is None else f"dropout.{site}"
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 <= rate < 1:
            raise ConfigError(f"{key}={rate} is outside [0, 1): a dropout rate is a probability below 1")
    if cfg.model.get("tie_weights") and cfg.model.emb_size != cfg.model.hidden_size:
        raise ConfigError(f"model.tie_weights needs model.emb_size == model.hidden_size, got "
                          f"{cfg.model.emb_size} and {cfg.model.hidden_size}")
    if cfg.model.cell not in CELLS:
        raise ConfigError(f"model.cell={cfg.model.cell} is unknown; choose one of: {', '.join(CELLS)}")
    try:  # the engine is the one authority on schemes, sites and options
        resolve(cfg.scheme.name, cfg.model.cell, rates, **scheme_options(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device} is unknown; choose one of: auto, cpu, cuda, cuda:N")
    if cfg.device != "auto" and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} was asked for but no CUDA device is available; use device=auto or cpu")
    check_types("train", cfg.train, TrainConfig)
    for key in ("epochs", "batch_size", "eval_batch_size", "bptt", "log_interval"):
        if int(cfg.train[key]) < 1:
            raise ConfigError(f"train.{key}={cfg.train[key]} must be at least 1")
    if cfg.train.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={cfg.train.optimizer} is unknown; choose one of: {', '.join(OPTIMIZERS)}")
    if int(cfg.train.mc_samples) < 0:
        raise ConfigError(f"train.mc_samples={cfg.train.mc_samples} must be 0 (off) or a number of samples")


def device(cfg: DictConfig) -> torch.device:
    """``auto`` takes the GPU when there is one, so the same command runs on a laptop and a cluster."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def corpus(cfg: DictConfig) -> Corpus:
    options = {k: v for k, v in cfg.data.items() if k != "name"}
    return load_corpus(cfg.data.name, cache_dir=Path(cfg.paths.cache_dir), **options)


def model(cfg: DictConfig, vocab_size: int) -> LanguageModel:
    m = cfg.model
    return LanguageModel(vocab_size, m.emb_size, m.hidden_size, m.num_layers, cell=m.cell,
                         scheme=cfg.scheme.name, dropout=dropout_rates(cfg), init_scale=m.init_scale,
                         tie_weights=bool(m.get("tie_weights", False)), **scheme_options(cfg))


def reference(cfg: DictConfig) -> dict | None:
    """The published numbers this job is compared with, if its preset carries them."""
    if not cfg.get("reference"):
        return None
    ref = OmegaConf.to_container(cfg.reference, resolve=True)
    by, values = ref.pop("by", None), ref.pop("values", {})
    if by is not None:
        ref.update(values.get(str(OmegaConf.select(cfg, by)), {}))
    return ref


def train_config(cfg: DictConfig) -> TrainConfig:
    return TrainConfig(**cfg.train)
