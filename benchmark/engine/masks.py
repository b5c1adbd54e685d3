"""Dropout primitives: rate checks, mask shapes, mask sampling, word-type embedding dropout.

Why one sampler for everything: the native-kernel path, the hand-written segments and the
reference loop must draw the *same* masks from the same RNG calls, so that under one seed
they can be compared exactly (lmnt-com/haste keeps a pure reference beside every fast
path). Masks are therefore drawn here, outside every path, and handed in.

Conventions (shared by ``LSTM.last_masks``):

* a dropout mask holds the factor a value is multiplied by: ``{0, 1/keep}`` under
  ``inverted`` scaling, ``{0, 1}`` under ``test`` scaling;
* a zoneout mask holds ``d`` with ``P(d=1) = p``: 1 means "keep the previous value";
* shapes reveal the granularity: ``step`` -> ``(T, B, D)``, ``sequence`` -> ``(B, D)``,
  ``batch`` -> ``(1, D)``; untied gate masks get a leading gate axis ``(G, ...)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.engine.sites import SITE_SPECS, SITE_TABLE

GRANULARITIES: tuple[str, ...] = ("step", "sequence", "batch")
SCALINGS: tuple[str, ...] = ("inverted", "test")

Mask = Tensor | float


def check_rate(p: Any, what: str) -> float:
    """Return ``p`` as a float in [0, 1) or raise a one-line ValueError naming ``what``.

    1.0 is rejected on purpose: inverted scaling would divide by a keep-probability of 0,
    and a zoneout rate of 1 would never update the state.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise ValueError(f"{what} must be a number in [0, 1), got {p!r}")
    value = float(p)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {p!r}")
    return value


def mask_shape(granularity: str, steps: int, batch: int, width: int, gates: int = 0) -> tuple[int, ...]:
    """Shape of one mask: one draw per (step, sample, unit), per (sample, unit) or per unit.

    ``gates > 0`` adds a leading gate axis: one independent mask per gate ("untied",
    Gal & Ghahramani 2016, Keras ``implementation=1``).
    """
    if granularity == "step":
        base: tuple[int, ...] = (steps, batch, width)  # (T, B, D)
    elif granularity == "sequence":
        base = (batch, width)  # (B, D): fixed over time, one per sample
    elif granularity == "batch":
        base = (1, width)  # (1, D): shared by the whole mini-batch
    else:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of: {', '.join(GRANULARITIES)}")
    return (gates, *base) if gates else base


def bernoulli_mask(shape: tuple[int, ...], prob: float, like: Tensor) -> Tensor:
    """A {0, 1} mask with ``P(1) = prob``, in ``like``'s dtype and device: ``uniform < prob``.

    Why not ``bernoulli_``: on a CPU it costs about twice as much as drawing the uniforms
    and comparing them, and a step-granularity scheme draws several (T, B, H) masks per
    segment. The uniforms are float32 whatever ``like``'s dtype, so ``prob`` resolves to
    2^-24 on every dtype (a half-precision uniform would round it to 2^-11).
    """
    mask = torch.rand(shape, device=like.device).lt_(prob)  # float32 {0., 1.}, in place
    return mask if like.dtype == torch.float32 else mask.to(like.dtype)


def dropout_mask(shape: tuple[int, ...], p: float, scaling: str, like: Tensor) -> Tensor:
    """Bernoulli(keep) mask, divided by keep under ``inverted`` scaling."""
    keep = 1.0 - p
    mask = bernoulli_mask(shape, keep, like)
    if scaling == "inverted":
        mask.div_(keep)
    return mask


def zoneout_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """Bernoulli(p) mask, 1 = keep the previous value (Krueger et al. 2016); never rescaled."""
    return bernoulli_mask(shape, p, like)


def draw_layer_masks(
    sites: Mapping[str, Any],
    training: bool,
    *,
    steps: int,
    batch: int,
    input_width: int,
    hidden: int,
    gates: int,
    weight_hh_shape: tuple[int, ...],
    options: Mapping[str, Any],
    cell: str,
    like: Tensor,
) -> dict[str, Mask]:
    """Every mask one layer needs for one forward call, drawn before the layer runs.

    ``sites`` maps a site name to its ``schemes.SiteConfig`` (rate, granularity, scaling,
    gate masks): the sites acting on this layer (``DropoutPlan.layer_sites``). What each
    mask is comes from the site's record (``sites.SITE_SPECS``): its width (``input``: the
    layer's input; ``weight``: U's shape; else the layer's own width), how it is drawn and
    whether the LSTM memory gets a mask of its own (key ``"<site>.c"``). Returns
    ``{key: mask}`` in the table's order. In eval, a dropout site under ``test`` scaling
    yields the float ``keep`` (multiply by the keep-probability, as the drop-rnn code does),
    zoneout yields the float ``p`` (the expectation, Krueger et al. 2016), and an inverted
    dropout site yields nothing. Sites with rate 0 take the fast path: nothing is drawn.
    """
    masks: dict[str, Mask] = {}
    for spec in SITE_TABLE:
        cfg = sites.get(spec.name)
        if cfg is None or cfg.rate == 0.0:
            continue
        p = cfg.rate
        keys = [spec.name]
        if spec.masks_memory(cell, options):
            keys.append(f"{spec.name}.c")  # zoneout: separate draws for h and c; state: TF < 1.4's drop_cell
        width = {"input": input_width, "hidden": hidden}.get(spec.width)
        for key in keys:
            rule = spec.eval_rule(cfg.scaling)
            if not training:
                if rule == "scale_by_keep":
                    masks[key] = 1.0 - p
                elif rule == "expectation":
                    masks[key] = p
            elif spec.width == "weight":
                # DropConnect: one mask on the weight's elements per forward call (AWD-LSTM).
                masks[key] = dropout_mask(weight_hh_shape, p, cfg.scaling, like)  # (G*H, H)
            else:
                untied = spec.gate_masks and cfg.gate_masks == "untied"
                shape = mask_shape(cfg.granularity, steps, batch, width, gates if untied else 0)
                if spec.draw == "keep_previous":
                    masks[key] = zoneout_mask(shape, p, like)
                else:
                    masks[key] = dropout_mask(shape, p, cfg.scaling, like)
    return masks


def input_mask(masks: Mapping[str, Any], sites: Mapping[str, Any] | None = None) -> tuple[Any, bool]:
    """The mask on the layer's input (the site as wide as the input: ``x`` or ``between``) and whether it is untied.

    ``sites`` (the layer's site configs) tells untied masks apart; without it the mask is taken as tied.
    """
    for key, mask in masks.items():
        if SITE_SPECS[key.split(".")[0]].width == "input":
            untied = sites is not None and isinstance(mask, Tensor) and sites[key].gate_masks == "untied"
            return mask, untied
    return None, False


def dropped_weight_hh(weight_hh: Tensor, masks: Mapping[str, Any]) -> Tensor:
    """``U`` with its DropConnect mask applied when a ``weight`` site drew one (fresh each call; grad reaches U)."""
    for key, mask in masks.items():
        if SITE_SPECS[key.split(".")[0]].width == "weight":
            return weight_hh * mask  # (G*H, H)
    return weight_hh


def per_step(mask: Mask | None, steps: int, step_axis: int | None) -> list[Mask] | None:
    """Split a mask into the ``steps`` per-step masks the recurrence indexes.

    Done once before the loop so the loop body only indexes a list. ``step_axis`` is the
    time axis of a step-granularity mask (0, or 1 after an untied gate axis); ``None`` for
    masks fixed over the call, which are simply repeated.
    """
    if mask is None:
        return None
    if isinstance(mask, Tensor) and step_axis is not None:
        return list(mask.unbind(step_axis))
    return [mask] * steps


StepMasks = Sequence["Tensor | float"] | None  # one entry per time step, or None when the site is inactive

# The per-step mask lists a segment reads, named after the site table: every site inside the
# recurrence (and ``<site>_c`` for the LSTM memory's own mask), plus ``input``, the layer's input mask.
STEP_FIELDS: tuple[str, ...] = ("input", *(
    name for spec in SITE_TABLE if spec.in_recurrence
    for name in ((spec.name, f"{spec.name}_c") if spec.memory_mask else (spec.name,))))


@dataclass
class SegmentMasks:
    """The per-step masks of one layer and segment: one declared field per ``STEP_FIELDS`` entry.

    Each is a list over steps (a tensor, or a float in eval) or None when inactive. ``input`` is
    the layer's input mask (site ``x`` or ``between``), which the reference step applies and the
    segments apply in their input projection; ``input_untied`` / ``h_in_untied``: the entries are
    ``(G, B|1, D)``, one mask per gate; ``output_pre_mask``: the step outputs the state before the
    ``state`` mask (TensorFlow). The fields are declared, not made on the fly, so every reader can
    be found by name; ``tests/test_engine_masks.py`` holds them to the site table's ``STEP_FIELDS``.
    """

    input: StepMasks = None
    h_in: StepMasks = None
    g: StepMasks = None
    c: StepMasks = None
    state: StepMasks = None
    state_c: StepMasks = None
    zoneout: StepMasks = None
    zoneout_c: StepMasks = None
    input_untied: bool = False
    h_in_untied: bool = False
    output_pre_mask: bool = False

    @property
    def untied(self) -> bool:
        """One ``h_in`` mask per gate (a float in eval is one factor for every gate)."""
        return self.h_in is not None and self.h_in_untied and isinstance(self.h_in[0], Tensor)


def segment_masks(masks: Mapping[str, Mask], sites: Mapping[str, Any], steps: int, output_pre_mask: bool) -> SegmentMasks:
    """A layer's drawn masks (``draw_layer_masks``) as the per-step lists the recurrence indexes."""
    lists: dict[str, list[Mask]] = {}
    flags = {"input_untied": False, "h_in_untied": False}
    for key, mask in masks.items():
        site = key.split(".")[0]
        spec, cfg = SITE_SPECS[site], sites[site]
        if not (spec.in_recurrence or spec.width == "input"):
            continue
        untied = isinstance(mask, Tensor) and cfg.gate_masks == "untied"
        step_axis = (1 if untied else 0) if cfg.granularity == "step" else None
        field = "input" if spec.width == "input" else key.replace(".", "_")
        lists[field] = per_step(mask, steps, step_axis)
        if f"{field}_untied" in flags:
            flags[f"{field}_untied"] = untied
    return SegmentMasks(**lists, **flags, output_pre_mask=output_pre_mask)


def embedding_dropout(
    weight: Tensor,
    words: Tensor,
    p: float,
    training: bool,
    scaling: str = "inverted",
    padding_idx: int | None = None,
) -> Tensor:
    """Embed ``words`` with whole word *types* dropped: ``(...,) -> (..., E)``.

    Drops rows of the embedding matrix, so every occurrence of a dropped word in the
    batch is zero — Gal & Ghahramani 2016 (sec. 4.2, "word embedding dropout") and
    AWD-LSTM's ``embedded_dropout`` (Merity et al. 2017). One draw per word type and
    forward call (``batch`` granularity). Instead of materialising ``weight * mask``
    (a V x E copy per call, as AWD does) the (V, 1) row mask is gathered per token, which
    gives the same values and gradients.
    """
    p = check_rate(p, "embedding dropout rate")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")
    embedded = F.embedding(words, weight, padding_idx)  # (..., E)
    if p == 0.0:
        return embedded
    if training:
        row_mask = dropout_mask((weight.size(0), 1), p, scaling, weight)  # (V, 1)
        return embedded * F.embedding(words, row_mask)  # (..., 1) broadcast over E
    if scaling == "test":
        return embedded * (1.0 - p)
    return embedded


class EmbeddingDropout(nn.Module):
    """An ``nn.Embedding`` whose word types are dropped in training (see ``embedding_dropout``).

    Wraps the embedding instead of copying its weight so that weight tying with a decoder
    keeps working. The rate is fixed at construction and the module checks
    ``self.training`` itself (fastai's contract for dropout primitives).
    """

    def __init__(self, embedding: nn.Embedding, p: float, scaling: str = "inverted") -> None:
        super().__init__()
        self.embedding = embedding
        self.p = check_rate(p, "embedding dropout rate")
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")
        self.scaling = scaling

    def forward(self, words: Tensor) -> Tensor:
        return embedding_dropout(
            self.embedding.weight, words, self.p, self.training, self.scaling, self.embedding.padding_idx
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, scaling={self.scaling!r}"
