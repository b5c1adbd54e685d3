"""From a resolved config to the library's objects, with every value checked first.

All checks happen here, before any training, so a bad value costs the user one line
and no compute: ``ConfigError`` carries a one-line message that names the key and the
values it allows. ``job(cfg)`` checks a job's config and reads it once into a
``BuiltJob``: the runner takes everything from there and never walks the config again.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.data import Corpus, DataError, load_corpus
from benchmark.data.registry import corpus_loader
from benchmark.engine import resolve
from benchmark.model import CELLS, INITS, LanguageModel, ModelConfig
from benchmark.optim import OPTIMIZERS, SCHEDULES
from benchmark.train import LOSS_REDUCTIONS, TEST_WEIGHTS, TrainConfig


HARDWARE = ("any", "gpu")  # what a preset is sized for; see conf/config.yaml


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
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def schema_of(source: Any) -> dict[str, Any]:
    """Field name -> type, from a dataclass or from a function's keyword arguments.

    The schemas are the library's own (``TrainConfig``, ``ModelConfig``, each corpus's
    loader), so what a config may set is written down in one place only.
    """
    hints = typing.get_type_hints(source)
    return {k: v for k, v in hints.items() if k not in ("return", "cache_dir")}


def _allows(kind: Any, value: Any) -> bool:
    if kind is Any:
        return True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def check_types(section: str, values: Any, schema: dict[str, Any]) -> None:
    """Each value against the type its schema declares: one line naming the key and what it takes."""
    prefix = f"{section}." if section else ""
    for name, value in values.items():
        if name not in schema:
            raise ConfigError(f"{prefix}{name} is not a config key; {section or 'the config'} has: "
                              f"{', '.join(sorted(schema))}")
        hint = schema[name]
        allowed = [t for t in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType)
                               else (hint,))]
        if value is None and type(None) in allowed:
            continue
        if not any(_allows(t, value) for t in allowed if t is not type(None)):
            wanted = " or ".join(_type_name(t) for t in allowed if t is not type(None))
            if type(None) in allowed:
                wanted += " or null"
            raise ConfigError(f"{prefix}{name}={value} must be {wanted}")


# The weights are float32: a learning rate or clip above this cannot multiply a gradient
# without overflow (torch raises from inside the optimizer step).
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _at_least(key: str, value: Any, low: int) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{key}={value} must be at least {low}")


def check_model(cfg: DictConfig) -> None:
    """``model.*``: known keys, right types, a known cell and init, positive sizes, tying that fits."""
    check_types("model", cfg.model, schema_of(ModelConfig))
    m = cfg.model
    if m.cell not in CELLS:
        raise ConfigError(f"model.cell={m.cell} is unknown; choose one of: {', '.join(CELLS)}")
    init = m.get("init", ModelConfig.init)
    if init not in INITS:
        raise ConfigError(f"model.init={init} is unknown; choose one of: {', '.join(INITS)}")
    for key in ("emb_size", "hidden_size", "num_layers", "last_layer_size"):
        _at_least(f"model.{key}", m.get(key), 1)
    scale = m.get("init_scale")
    if scale is not None and not 0 < float(scale) < math.inf:
        raise ConfigError(f"model.init_scale={scale} must be a positive finite number: the half-width of "
                          f"U(-init_scale, init_scale)")
    last = m.get("last_layer_size")
    last_key, last = ("model.last_layer_size", last) if last is not None else ("model.hidden_size", m.hidden_size)
    if m.get("tie_weights") and m.emb_size != last:
        raise ConfigError(f"model.tie_weights needs model.emb_size == the last layer's width ({last_key}), got "
                          f"{m.emb_size} and {last}")


def check_data(cfg: DictConfig) -> None:
    """``data.*``: the corpus exists and every option is one its loader takes, of the right type."""
    try:
        loader = corpus_loader(cfg.data.name)
    except DataError as e:
        raise ConfigError(f"data.name={cfg.data.name}: {e}") from None
    options = {k: v for k, v in cfg.data.items() if k != "name"}
    check_types("data", options, schema_of(loader))
    for key in ("size", "vocab_size", "train_tokens", "valid_tokens", "test_tokens", "num_states", "num_topics"):
        if key in options:
            _at_least(f"data.{key}", options[key], 1)


def check_top_level(cfg: DictConfig) -> None:
    """The run-wide keys that are not groups: seed, threads, flush_denormal, hardware, device."""
    check_types("", {"seed": cfg.seed, "threads": cfg.threads, "flush_denormal": cfg.get("flush_denormal", True)},
                {"seed": int, "threads": int | None, "flush_denormal": bool})
    _at_least("threads", cfg.threads, 1)
    if cfg.hardware not in HARDWARE:
        raise ConfigError(f"hardware={cfg.hardware} is unknown; choose one of: {', '.join(HARDWARE)}")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device} is unknown; choose one of: auto, cpu, cuda, cuda:N")
    if cfg.device != "auto" and str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} was asked for but no CUDA device is available; use device=auto or cpu")


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: raises ``ConfigError`` naming the key."""
    rates = dropout_rates(cfg)
    for site, rate in (rates.items() if isinstance(rates, dict) else [(None, rates)]):
        key = "dropout" if site is None else f"dropout.{site}"
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 <= rate < 1:
            raise ConfigError(f"{key}={rate} is outside [0, 1): a dropout rate is a probability below 1")
    check_top_level(cfg)
    check_model(cfg)
    check_data(cfg)
    try:  # the engine is the one authority on schemes, sites and options
        resolve(cfg.scheme.name, cfg.model.cell, rates, **scheme_options(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    check_types("train", cfg.train, schema_of(TrainConfig))
    for key in ("epochs", "batch_size", "eval_batch_size", "bptt", "log_interval"):
        if int(cfg.train[key]) < 1:
            raise ConfigError(f"train.{key}={cfg.train[key]} must be at least 1")
    for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss_reduction", LOSS_REDUCTIONS),
                         ("test_weights", TEST_WEIGHTS)):
        if cfg.train[key] not in allowed:
            raise ConfigError(f"train.{key}={cfg.train[key]} is unknown; choose one of: {', '.join(allowed)}")
    for key in ("lr", "clip"):
        if not 0 < float(cfg.train[key]) <= FLOAT32_MAX:
            raise ConfigError(f"train.{key}={cfg.train[key]} must be a positive finite number, at most "
                              f"{FLOAT32_MAX:.3g} (the largest float32: the weights' type)")
    if not 0 < float(cfg.train.lr_decay) <= 1:
        raise ConfigError(f"train.lr_decay={cfg.train.lr_decay} must be in (0, 1]: the factor the rate is multiplied by")
    for key in ("weight_decay", "ar", "tar", "decay_after"):
        if float(cfg.train[key]) < 0:
            raise ConfigError(f"train.{key}={cfg.train[key]} must be 0 or more")
    if int(cfg.train.mc_samples) < 0:
        raise ConfigError(f"train.mc_samples={cfg.train.mc_samples} must be 0 (off) or a number of samples")
    if int(cfg.train.probe_steps) < 0:
        raise ConfigError(f"train.probe_steps={cfg.train.probe_steps} must be 0 (no probes) or a number of time steps")
    _at_least("train.probe_batch", int(cfg.train.probe_batch), 1)
    check_logger(cfg)


LOGGER_MODES = ("auto", "offline", "online", "disabled")


def check_logger(cfg: DictConfig) -> None:
    """``logger.mode``: W&B's own check of a bad mode is a pydantic warning, and the run goes on untracked."""
    logger = cfg.get("logger") or {}
    if logger.get("name") == "wandb" and logger.get("mode", "auto") not in LOGGER_MODES:
        raise ConfigError(f"logger.mode={logger.get('mode')} is unknown; choose one of: {', '.join(LOGGER_MODES)}")


@dataclass(frozen=True)
class BuiltJob:
    """One job's config, checked and read into the library's types once (``job(cfg)``).

    ``config`` is the resolved config as plain data: what ``config.yaml``, the checkpoint's
    fingerprint and the W&B run record. The rest is what the runner makes and runs from it.
    """

    config: dict[str, Any]
    name: str  # run_name
    seed: int
    data: str
    data_options: dict[str, Any]  # the corpus loader's keyword arguments
    cache_dir: Path
    scheme: str
    scheme_options: dict[str, Any]  # everything in the scheme group but its name
    rates: float | dict  # ``dropout``: one rate for every site the scheme uses, or {site or group: rate}
    model_config: ModelConfig
    train: TrainConfig
    device: torch.device
    threads: int | None
    flush_denormal: bool
    hardware: str  # what the preset is sized for (HARDWARE)
    logger: dict[str, Any]
    runs_dir: Path  # where single runs go (``paths.output_dir``/runs): an unfinished twin is looked for there

    def corpus(self) -> Corpus:
        return load_corpus(self.data, cache_dir=self.cache_dir, **self.data_options)

    def model(self, vocab_size: int) -> LanguageModel:
        m = self.model_config
        return LanguageModel(vocab_size, m.emb_size, m.hidden_size, m.num_layers, cell=m.cell, scheme=self.scheme,
                             dropout=self.rates, init_scale=m.init_scale, tie_weights=m.tie_weights, init=m.init,
                             last_layer_size=m.last_layer_size, **self.scheme_options)


def job(cfg: DictConfig) -> BuiltJob:
    """A job's config, checked (``ConfigError``, one line), then read once."""
    check_config(cfg)
    return read(OmegaConf.to_container(cfg, resolve=True))


def read(config: dict[str, Any]) -> BuiltJob:
    """A resolved config read into a ``BuiltJob``, unchecked: a run's own ``config.yaml`` was checked
    when it trained (``python -m runners.evaluate`` reads one)."""
    scheme, data = dict(config["scheme"]), dict(config["data"])
    return BuiltJob(config=config, name=config["run_name"], seed=int(config["seed"]), data=data.pop("name"),
                    data_options=data, cache_dir=Path(config["paths"]["cache_dir"]), scheme=scheme.pop("name"),
                    scheme_options=scheme, rates=config["dropout"], model_config=ModelConfig(**config["model"]),
                    train=TrainConfig(**config["train"]), device=_device(config["device"]),
                    threads=config.get("threads"), flush_denormal=config.get("flush_denormal", True),
                    hardware=config.get("hardware", "any"), logger=dict(config.get("logger") or {}),
                    runs_dir=Path(config["paths"]["output_dir"]) / "runs")


def _device(name: str) -> torch.device:
    """``auto`` takes the GPU when there is one, so the same command runs on a laptop and a cluster."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# One piece at a time, from a run's config: what ``python -m runners.evaluate`` needs.
def device(cfg: DictConfig) -> torch.device:
    return _device(cfg.device)


def corpus(cfg: DictConfig) -> Corpus:
    return read(OmegaConf.to_container(cfg, resolve=True)).corpus()


def model(cfg: DictConfig, vocab_size: int) -> LanguageModel:
    return read(OmegaConf.to_container(cfg, resolve=True)).model(vocab_size)


def train_config(cfg: DictConfig) -> TrainConfig:
    return TrainConfig(**cfg.train)
