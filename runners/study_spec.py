"""What a preset's ``study`` block asks for (``StudySpec``), checked before anything runs.

The block names the schemes and cells to compare, the two rate grids (``rates_ff``,
``rates_rec``), the tuning seed and the seeds, and the settings; each scheme is tuned on the
groups its sites belong to (``tuned_groups``). A block that cannot run is a ``StudyError``,
one line naming the key, before the first command starts (``python -m runners.study``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig

from benchmark.engine import SCHEMES
from benchmark.engine.sites import SITE_SPECS
from runners.hydra_app import CONF_DIR, group_options


class StudyError(ValueError):
    """A study that cannot start (no ``study`` block, or a bad one), or a search with nothing to choose from."""


def default_schemes() -> tuple[str, ...]:
    """What ``study.schemes: null`` compares: every registry scheme but ``none``, in registry order."""
    return tuple(name for name in SCHEMES if name != "none")


def tuned_groups(scheme: str, cell: str) -> tuple[str, ...]:
    """The rate groups a scheme is tuned on: ``ff`` and, when it has a recurrent site, ``rec``.

    ``none`` has neither; ``naive`` is the feed-forward footing alone.
    """
    if scheme == "none":
        return ()
    own = {SITE_SPECS[name].group for name in SCHEMES[scheme].sites_for(cell)}
    return ("ff", "rec") if "rec" in own else ("ff",)


def _rates(block: Any, key: str) -> tuple[float, ...]:
    given = list(block.get(key) or ())
    values = tuple(float(r) for r in given if isinstance(r, (int, float)) and not isinstance(r, bool))
    if (not values or len(values) != len(given) or any(not 0.0 <= r < 1.0 for r in values)
            or len(set(values)) != len(values)):
        raise StudyError(f"study.{key} must be a non-empty list of distinct rates in [0, 1), got {list(values)}")
    return values


@dataclass(frozen=True)
class StudySpec:
    """What a preset's ``study`` block asks for, checked.

    ``settings`` maps a setting's name to the overrides that make it; the first is the one
    the rates are tuned in, every setting re-runs the tuned rates with every seed.
    """

    name: str
    schemes: tuple[str, ...]
    cells: tuple[str, ...]
    rates_ff: tuple[float, ...]
    rates_rec: tuple[float, ...]
    tuning_seed: int
    seeds: tuple[int, ...]
    settings: dict[str, tuple[str, ...]]
    mc_samples: int = 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "StudySpec":
        block = cfg.get("study")
        if block is None:
            presets = [p for p in group_options("experiment")
                       if "study" in (yaml.safe_load((CONF_DIR / "experiment" / f"{p}.yaml").read_text()) or {})]
            raise StudyError(f"this configuration defines no study; choose a preset that does: "
                             f"{', '.join('experiment=' + p for p in presets)}")
        if block.get("rates") is not None:
            raise StudyError("study.rates is the one-rate design; a study tunes two rates: "
                             "set study.rates_ff and study.rates_rec")
        schemes = block.get("schemes")
        settings = block.get("settings") or {}
        spec = cls(name=str(block.name), schemes=default_schemes() if schemes is None else tuple(schemes),
                   cells=tuple(block.cells), rates_ff=_rates(block, "rates_ff"), rates_rec=_rates(block, "rates_rec"),
                   tuning_seed=int(block.tuning_seed), seeds=tuple(int(s) for s in block.seeds),
                   settings={str(k): tuple(str(o) for o in (v or ())) for k, v in settings.items()},
                   mc_samples=int(block.get("mc_samples") or 0))
        allowed = group_options("scheme")
        for scheme in spec.schemes:
            if scheme not in allowed or scheme == "none":
                raise StudyError(f"study.schemes has {scheme!r}; choose from: "
                                 f"{', '.join(s for s in allowed if s != 'none')} (none is always compared)")
        for cell in spec.cells:
            if cell not in group_options("model"):
                raise StudyError(f"study.cells has {cell!r}; choose from: {', '.join(group_options('model'))}")
        if len(spec.seeds) < 2 or len(set(spec.seeds)) != len(spec.seeds) or spec.tuning_seed in spec.seeds:
            raise StudyError(f"study.seeds must be at least 2 distinct seeds without study.tuning_seed "
                             f"({spec.tuning_seed}), got {list(spec.seeds)}")
        if not spec.settings or any(not re.fullmatch(r"[A-Za-z0-9_]+", name) for name in spec.settings):
            raise StudyError(f"study.settings must map at least one name (letters, digits, _) to its overrides, "
                             f"got {list(spec.settings)}")
        if spec.mc_samples < 0:
            raise StudyError(f"study.mc_samples must be 0 (off) or a number of samples, got {spec.mc_samples}")
        return spec

    @property
    def tuning_setting(self) -> str:
        return next(iter(self.settings))

    def grid(self, scheme: str, cell: str) -> dict[str, tuple[float, ...]]:
        """``{group: rates}`` the scheme is searched over: the same points for every scheme."""
        return {group: self.rates_ff if group == "ff" else self.rates_rec for group in tuned_groups(scheme, cell)}

    def describe(self) -> dict[str, Any]:
        return {"schemes": list(self.schemes), "cells": list(self.cells), "rates_ff": list(self.rates_ff),
                "rates_rec": list(self.rates_rec), "tuning_seed": self.tuning_seed, "seeds": list(self.seeds),
                "settings": {k: list(v) for k, v in self.settings.items()}, "mc_samples": self.mc_samples,
                "emb": "left out for every scheme"}
