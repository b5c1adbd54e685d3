"""The site table: one record per mask site, read by every part of the engine.

Why a table: a site is defined by a handful of facts (how wide its mask is, where in the
stack it acts, whether it acts between time steps, whether its masked value is carried
on, how its mask is drawn and what it does at evaluation). The mask sampler, the plan's
layer placement, the choice between the native kernel and the time loop, and the summary a
run records all read these records; none of them branches on a site's name. Adding a site
means one record here plus its place in the two reference steps and the two hand-written
segments (``lstm.py``, ``gru.py``).

The table is in the order masks are drawn (fixed, so the hand-written segment and the
reference loop consume the RNG identically). A layer's input is masked by ``x`` or by
``between``, never both, so the two sit first: with one rate for every site, a scheme with
``between`` draws exactly what it drew with ``x`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

CELLS: tuple[str, ...] = ("lstm", "gru")

# Where a site's mask acts; ``DropoutPlan.layer_sites`` places sites by these values.
PLACEMENTS: tuple[str, ...] = (
    "embedding",      # outside the stack (the language model applies it)
    "module_input",   # the module's input; also the inner boundaries unless the plan has an inner_input site
    "inner_input",    # a layer's input when it is the output of the layer below
    "recurrence",     # inside the step
    "weight",         # the recurrent weight U itself
    "module_output",  # the module's output (the last layer only)
)

# What part of the network a site regularises, by its placement (issue 22): ``ff``, the
# feed-forward connections every scheme can share (a layer's input, the boundaries between
# layers, the output); ``rec``, the recurrent mechanism that tells schemes apart (inside the
# step, or U itself); ``emb``, word types. A dropout mapping may name a group for its sites.
GROUPS: Mapping[str, str] = MappingProxyType({
    "embedding": "emb", "module_input": "ff", "inner_input": "ff", "module_output": "ff",
    "recurrence": "rec", "weight": "rec",
})


@dataclass(frozen=True)
class SiteSpec:
    """Everything the engine knows about one mask site.

    ``width``: what the mask is as wide as (``input``: the layer's input; ``hidden``: the
    layer's width; ``weight``: U's shape; ``embedding``: one entry per word type).
    ``in_recurrence``: acts between time steps, so the native kernel cannot run it while it
    samples. ``carried``: the masked value is carried to the next step, so under inverted
    scaling a kept unit is multiplied by 1/keep at every step (the compounding that makes the
    GRU explode, tensorflow issue 11650). ``draw``: ``dropout`` (Bernoulli(keep), divided by
    keep under inverted scaling) or ``keep_previous`` (zoneout's Bernoulli(p), 1 = keep the
    previous value, Krueger et al. 2016; evaluated as its expectation). ``gate_masks``: may take one mask per
    gate (Gal & Ghahramani 2016's untied variant). ``fixed_granularity``: one draw per
    forward call by definition. ``memory_mask``: when the LSTM also masks its memory ``c``
    with a mask of its own (key ``"<site>.c"``): ``always``, or the name of the option that
    asks for it. ``carries``: the carried value a carried site's mask is on, ``h`` or the LSTM
    memory ``c``.
    """

    name: str
    doc: str
    width: str
    placement: str
    in_recurrence: bool = False
    carried: bool = False
    draw: str = "dropout"
    gate_masks: bool = False
    fixed_granularity: str | None = None
    memory_mask: str | None = None
    carries: str = "h"
    cells: tuple[str, ...] = CELLS

    @property
    def group(self) -> str:
        """``ff``, ``rec`` or ``emb``: the part of the network the site regularises (``GROUPS``)."""
        return GROUPS[self.placement]

    def eval_rule(self, scaling: str) -> str:
        """What the site does in evaluation: ``identity``, ``scale_by_keep`` or ``expectation``."""
        if self.draw == "keep_previous":
            return "expectation"
        return "scale_by_keep" if scaling == "test" else "identity"

    def compounds(self, scaling: str) -> bool:
        """Whether a kept unit grows by 1/keep per step while training (carried and rescaled)."""
        return self.carried and self.draw == "dropout" and scaling == "inverted"

    def masks_memory(self, cell: str, options: Mapping[str, object]) -> bool:
        """Whether the LSTM memory gets a mask of its own at this site (``memory_mask``)."""
        return cell == "lstm" and self.memory_mask is not None and (
            self.memory_mask == "always" or bool(options.get(self.memory_mask, False)))

    def masked_carried(self, cell: str, options: Mapping[str, object]) -> tuple[str, ...]:
        """The carried values the mask multiplies (``h``; the LSTM memory ``c``), none when the masked
        value is not carried. A compounding mask grows the value it is on by 1/keep per step only
        where the cell passes that value on unchanged, so which one it is decides whether the
        stability probe, which reads the LSTM's memory, can see the growth."""
        if not self.carried:
            return ()
        return tuple(dict.fromkeys((self.carries, *(("c",) if self.masks_memory(cell, options) else ()))))


SITE_TABLE: tuple[SiteSpec, ...] = (
    SiteSpec("emb", "rows of the embedding matrix: every occurrence of a dropped word type (applied by the "
             "language model)", width="embedding", placement="embedding", fixed_granularity="batch"),
    SiteSpec("x", "each layer's input as it enters W (the module's input included); where the scheme lists "
             "`between`, only the module's input", width="input", placement="module_input", gate_masks=True),
    SiteSpec("between", "a layer's input when it is the output of the layer below (the boundaries inside the "
             "stack); when a scheme lists it, it takes the place of `x` there, same granularity rules as `x`",
             width="input", placement="inner_input", gate_masks=True),
    SiteSpec("h_in", "h_{t-1} as it enters U only; the carried state is untouched", width="hidden",
             placement="recurrence", in_recurrence=True, gate_masks=True),
    SiteSpec("g", "the candidate (g in the LSTM, n in the GRU) before it is mixed into the memory", width="hidden",
             placement="recurrence", in_recurrence=True),
    SiteSpec("c", "the LSTM memory after its update; the masked value is carried on", width="hidden",
             placement="recurrence", in_recurrence=True, carried=True, carries="c", cells=("lstm",)),
    SiteSpec("state", "the carried state after each step; the step's output is the value before the mask, as in "
             "TensorFlow", width="hidden", placement="recurrence", in_recurrence=True, carried=True,
             memory_mask="drop_cell"),
    SiteSpec("zoneout", "per unit, keep h_{t-1} (and c_{t-1}) instead of the new value; eval uses the expectation",
             width="hidden", placement="recurrence", in_recurrence=True, draw="keep_previous", memory_mask="always"),
    SiteSpec("w_hh", "elements of U itself (DropConnect)", width="weight", placement="weight",
             fixed_granularity="batch"),
    SiteSpec("out", "the module's output", width="hidden", placement="module_output"),
)

SITE_SPECS: Mapping[str, SiteSpec] = MappingProxyType({s.name: s for s in SITE_TABLE})
SITES: tuple[str, ...] = tuple(SITE_SPECS)
SITE_DOCS: Mapping[str, str] = MappingProxyType({s.name: s.doc for s in SITE_TABLE})
CELL_SITES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {cell: tuple(s.name for s in SITE_TABLE if cell in s.cells) for cell in CELLS}
)
