"""The one registry of dropout schemes, each a set of mask sites (data, not subclasses).

Why data: adding a scheme from existing sites must mean one entry here (plus its generated
config and its tests), never a new cell class (README, "Adding a scheme"). The engine in
``rnn.py`` reads a resolved ``DropoutPlan`` and nothing else, and the plan reads the site
table (``sites.py``) for everything it knows about a site.

How rates derive from ``dropout``: a float is applied to *every* site the scheme uses for
the cell (``emb`` included: the language model reads it from ``plan.rate("emb")``); a
mapping sets the sites it names and leaves the scheme's other sites at 0. A mapping names
sites (``{"x": 0.2, "c": 0.3}``) or the groups of the site table (``{"ff": 0.5, "rec": 0.25}``:
``ff`` every feed-forward site, ``rec`` every site of the recurrent mechanism, ``emb`` the
embedding); a site named on its own wins over its group.

Feed-forward composition (issue 22): every scheme but ``none`` may also take ``naive``'s
feed-forward sites it does not list itself (``x`` and ``out``, per step, inverted), when a
mapping gives them a rate. So ``moon`` with ``{"c": 0.3, "ff": 0.5}`` is Moon et al.'s memory
dropout on Zaremba's footing, as Moon's and Semeniuta's papers ran it, while each scheme's
default definition (a float ``dropout``) stays exactly what its paper's entry says. The
study compares every scheme on that shared footing, so its comparison is about the
recurrent part alone.

Layer boundaries: ``x`` masks each layer's input and ``out`` the module's output. A scheme
that also lists ``between`` gives the boundaries *inside* the stack (a layer's input that is
the output of the layer below) their own site, so their rate can differ from the module
input's (AWD-LSTM: ``dropouti`` 0.4 on the first layer's input, ``dropouth`` 0.25 between
layers, ``dropout`` 0.4 on the output). ``DropoutPlan.layer_sites`` says which sites act on
which layer; the engine reads that and never a scheme's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from benchmark.engine.masks import GRANULARITIES, SCALINGS, check_rate
from benchmark.engine.sites import CELL_SITES, CELLS, GROUPS, SITE_DOCS, SITE_SPECS, SITES, SiteSpec

__all__ = ["CELLS", "CELL_SITES", "FEED_FORWARD_SOURCE", "GATE_MASKS", "GROUPS", "SCHEMES", "SITES", "SITE_DOCS",
           "DropoutPlan", "Scheme", "Site", "SiteConfig", "resolve", "scheme_names"]

GATE_MASKS: tuple[str, ...] = ("untied", "tied")
# The scheme whose feed-forward sites every other scheme may take (see the module docstring).
FEED_FORWARD_SOURCE = "naive"
GROUP_NAMES: tuple[str, ...] = tuple(dict.fromkeys(GROUPS.values()))  # emb, ff, rec
OPTION_NAMES: tuple[str, ...] = ("granularity", "gate_masks", "scaling", "drop_cell")


def _one_of(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values) if values else "(none)"


@dataclass(frozen=True)
class Site:
    """One mask site of a scheme: where, at which default granularity, for which cells."""

    name: str
    granularity: str
    cells: tuple[str, ...] = CELLS


@dataclass(frozen=True)
class Scheme:
    """A dropout scheme as data.

    ``options`` holds the defaults of the keyword options the scheme accepts;
    ``granularity_sites`` are the sites the ``granularity`` option sets (the others keep
    their default); ``state_output`` says what a step outputs when the ``state`` site is
    masked: ``"masked"`` (the carried value, e.g. Moon's GRU) or ``"pre_mask"`` (TensorFlow
    ``DropoutWrapper``, where output and state dropout are separate). ``feed_forward``: whether
    the scheme may take ``FEED_FORWARD_SOURCE``'s feed-forward sites it does not list (every
    scheme but ``none``, which stays the model without dropout).
    """

    name: str
    sites: tuple[Site, ...]
    source: str
    summary: str
    options: Mapping[str, Any] = field(default_factory=dict)
    granularity_sites: tuple[str, ...] = ()
    granularity_choices: tuple[str, ...] = GRANULARITIES
    cells: tuple[str, ...] = CELLS
    state_output: str = "masked"
    feed_forward: bool = True

    def sites_for(self, cell: str) -> dict[str, str]:
        """``{site: default granularity}`` of the sites this scheme uses on ``cell``."""
        return {s.name: s.granularity for s in self.sites if cell in s.cells}


_INV = {"scaling": "inverted"}

SCHEMES: Mapping[str, Scheme] = MappingProxyType(
    {
        s.name: s
        for s in (
            Scheme(
                "none",
                (),
                source="baseline",
                summary="no dropout",
                feed_forward=False,
            ),
            Scheme(
                "naive",
                (Site("x", "step"), Site("out", "step")),
                source="Zaremba, Sutskever & Vinyals 2014, Recurrent Neural Network Regularization, arXiv:1409.2329",
                summary="dropout on non-recurrent connections only, a new mask every step",
                options={"granularity": "step", **_INV},
                granularity_sites=("x", "out"),
            ),
            Scheme(
                "variational",
                (Site("emb", "batch"), Site("x", "sequence"), Site("h_in", "sequence"), Site("out", "sequence")),
                source="Gal & Ghahramani 2016, A Theoretically Grounded Application of Dropout in RNNs, arXiv:1512.05287",
                summary="one mask per sample fixed over time at inputs, h_{t-1} entering U, and outputs",
                options={"granularity": "sequence", "gate_masks": "untied", **_INV},
                granularity_sites=("x", "h_in", "out"),
            ),
            Scheme(
                "moon",
                (Site("c", "sequence", ("lstm",)), Site("state", "sequence", ("gru",))),
                source="Moon, Choi, Lee & Song 2015, RNNDROP: a novel dropout for RNNs in ASR, IEEE ASRU",
                summary="a per-sequence mask on the memory after its update, carried on (GRU: on h)",
                # Test-time scaling (issue 13): a {0, 1} mask in training, the memory times keep
                # at evaluation, so nothing compounds while training. ``scaling=inverted`` is
                # the compounding variant: a kept unit is multiplied by 1/keep at every step.
                options={"granularity": "sequence", "scaling": "test"},
                granularity_sites=("c", "state"),
            ),
            Scheme(
                "semeniuta",
                (Site("x", "step"), Site("g", "step"), Site("out", "step")),
                source="Semeniuta, Severyn & Barth 2016, Recurrent Dropout without Memory Loss, arXiv:1603.05118",
                summary="dropout on the candidate (LSTM g, GRU n) before it enters the memory",
                options={"granularity": "step", **_INV},
                granularity_sites=("g",),
            ),
            Scheme(
                "weightdrop",
                (Site("emb", "batch"), Site("x", "sequence"), Site("between", "sequence"), Site("w_hh", "batch"),
                 Site("out", "sequence")),
                source="Merity, Keskar & Socher 2017, Regularizing and Optimizing LSTM Language Models, arXiv:1708.02182",
                summary="DropConnect on weight_hh once per forward, locked dropout on the input, between layers "
                        "and on the output (dropouti, dropouth, dropout)",
                options={"granularity": "sequence", **_INV},
                granularity_sites=("x", "between", "out"),
            ),
            Scheme(
                "zoneout",
                (Site("zoneout", "step"),),
                source="Krueger et al. 2016, Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations, arXiv:1606.01305",
                summary="per unit and step keep h_{t-1} (and c_{t-1}) instead of the new value",
                options={"granularity": "step"},
                granularity_sites=("zoneout",),
            ),
            Scheme(
                "state_dropout",
                (Site("state", "sequence"),),
                source="TensorFlow DropoutWrapper(variational_recurrent=True, state_keep_prob<1); tensorflow/tensorflow#11650",
                summary="the carried state masked and rescaled after every step; drop_cell also masks LSTM c (TF < 1.4)",
                options={"granularity": "sequence", "drop_cell": False, **_INV},
                granularity_sites=("state",),
                granularity_choices=("sequence", "batch"),
                state_output="pre_mask",
            ),
        )
    }
)


@dataclass(frozen=True)
class SiteConfig:
    """A site as the engine applies it: its record in the site table, resolved for one scheme."""

    rate: float
    granularity: str
    scaling: str = "inverted"
    gate_masks: str | None = None  # only for sites whose record allows gate masks (x, between, h_in)

    def describe(self, spec: SiteSpec, cell: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The site as a run records it (``summary.json``'s ``plan``): plain JSON values, for ``cell``
        under the scheme's ``options``."""
        return {
            "rate": self.rate,
            "granularity": self.granularity,
            "scaling": self.scaling,
            "gate_masks": self.gate_masks,
            "group": spec.group,
            "in_recurrence": spec.in_recurrence,
            "carried": spec.carried,
            "masks_carried": list(spec.masked_carried(cell, options)),
            "compounds": spec.compounds(self.scaling),
            "eval": spec.eval_rule(self.scaling),
            "draw": spec.draw,
        }


@dataclass(frozen=True)
class DropoutPlan:
    """A scheme resolved for one cell, rate(s) and options: everything the engine reads."""

    scheme: str
    cell: str
    sites: Mapping[str, SiteConfig]
    options: Mapping[str, Any]
    state_output: str = "masked"

    def rate(self, site: str) -> float:
        """The site's rate, 0.0 for a site the scheme does not use (e.g. ``emb`` for naive)."""
        cfg = self.sites.get(site)
        return cfg.rate if cfg is not None else 0.0

    @property
    def rates(self) -> dict[str, float]:
        return {name: cfg.rate for name, cfg in self.sites.items()}

    @property
    def per_step_sites(self) -> list[str]:
        """Active sites whose masks are redrawn every step: nothing of them can be held over a pass."""
        return [name for name, cfg in self.sites.items() if cfg.granularity == "step" and cfg.rate]

    def layer_sites(self, layer: int, num_layers: int) -> dict[str, SiteConfig]:
        """The sites that act on layer ``layer`` of a ``num_layers`` stack: ``{site: config}``.

        Placed by each site's record: a ``module_output`` site acts on the last layer only
        (one mask per boundary between stacked layers, as in Zaremba's, Gal's and AWD-LSTM's
        code: the upper layer's input mask masks it); a layer's input is masked by the
        ``module_input`` site on layer 0, and on the layers above by the ``inner_input`` site
        when the plan has one, else by the ``module_input`` site; ``embedding`` sites act
        outside the stack.
        """
        placed = {name: SITE_SPECS[name].placement for name in self.sites}
        has_inner = "inner_input" in placed.values()
        keep = {
            "embedding": False,
            "module_input": layer == 0 or not has_inner,
            "inner_input": layer != 0,
            "module_output": layer == num_layers - 1,
        }
        return {name: cfg for name, cfg in self.sites.items() if keep.get(placed[name], True)}

    def needs_loop(self, training: bool) -> bool:
        """Whether this mode needs the time loop instead of the native kernel.

        Sites inside the recurrence act between time steps, which the native kernel cannot
        do; they matter while sampling, and in eval where their rule is not the identity
        (zoneout's expectation, ``test`` scaling's multiply by keep). Untied input masks give
        each gate its own masked input, which the kernel cannot take either.
        """
        for name, cfg in self.sites.items():
            if cfg.rate == 0.0:
                continue
            spec = SITE_SPECS[name]
            if spec.in_recurrence and (training or spec.eval_rule(cfg.scaling) != "identity"):
                return True
            if spec.width == "input" and training and cfg.gate_masks == "untied":
                return True
        return False

    def describe(self) -> dict[str, Any]:
        """The resolved plan as plain JSON: what a run records so analysis need not re-derive it.

        ``sites`` holds every site of the scheme with its rate, granularity, scaling, gate
        masks, whether it acts inside the recurrence, whether its masked value is carried, which
        carried values its mask multiplies (``masks_carried``: ``h``, the LSTM memory ``c``),
        whether it compounds by 1/keep per step, its evaluation rule and how its mask is drawn.
        """
        return {
            "scheme": self.scheme,
            "cell": self.cell,
            "options": dict(self.options),
            "state_output": self.state_output,
            "sites": {name: cfg.describe(SITE_SPECS[name], self.cell, self.options)
                      for name, cfg in self.sites.items()},
        }


def _scheme(scheme: str | Scheme) -> Scheme:
    """A registry scheme by name, or a ``Scheme`` entry as it is (one not registered yet, e.g. while
    its config file is written)."""
    if isinstance(scheme, Scheme):
        return scheme
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of: {_one_of(list(SCHEMES))}")
    return SCHEMES[scheme]


def resolve(scheme: str | Scheme, cell: str, dropout: float | Mapping[str, float] = 0.0, **options: Any) -> DropoutPlan:
    """Validate a scheme request and resolve it into a ``DropoutPlan``.

    Every error is a ``ValueError`` with one line naming what was wrong and what is allowed.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of: {_one_of(CELLS)}")
    spec = _scheme(scheme)
    scheme = spec.name
    if cell not in spec.cells:
        raise ValueError(f"scheme {scheme!r} does not run on a {cell.upper()}; it runs on: {_one_of(spec.cells)}")
    used = spec.sites_for(cell)

    # Options: only those the scheme declares, each from its allowed values.
    for key in options:
        if key not in spec.options:
            raise ValueError(
                f"option {key!r} does not apply to scheme {scheme!r}; its options: {_one_of(list(spec.options))}"
            )
    opts = {**spec.options, **options}
    if "granularity" in opts and opts["granularity"] not in spec.granularity_choices:
        raise ValueError(
            f"granularity {opts['granularity']!r} is not allowed for scheme {scheme!r}; "
            f"choose one of: {_one_of(spec.granularity_choices)}"
        )
    if "gate_masks" in opts and opts["gate_masks"] not in GATE_MASKS:
        raise ValueError(f"gate_masks {opts['gate_masks']!r} is not allowed; choose one of: {_one_of(GATE_MASKS)}")
    if "scaling" in opts and opts["scaling"] not in SCALINGS:
        raise ValueError(f"scaling {opts['scaling']!r} is not allowed; choose one of: {_one_of(SCALINGS)}")
    if "drop_cell" in opts:
        if not isinstance(opts["drop_cell"], bool):
            raise ValueError(f"drop_cell must be True or False, got {opts['drop_cell']!r}")
        if opts["drop_cell"] and cell != "lstm":
            raise ValueError("drop_cell=True needs an LSTM (a GRU has no memory c); allowed for GRU: drop_cell=False")

    # Rates: a float for every used site, or a mapping naming sites or groups of them.
    borrowed = feed_forward_sites(spec, cell)
    if isinstance(dropout, Mapping):
        rates = mapping_rates(scheme, cell, used, borrowed, dropout)
        used = {**used, **{name: borrowed[name] for name in borrowed if rates.get(name)}}
        used = {name: used[name] for name in SITES if name in used}  # the site table's order
    else:
        p = check_rate(dropout, "dropout")
        rates = {name: p for name in used}

    source = SCHEMES[FEED_FORWARD_SOURCE].options
    sites: dict[str, SiteConfig] = {}
    for name, default_granularity in used.items():
        site = SITE_SPECS[name]
        own = name not in borrowed  # a borrowed site keeps the source scheme's granularity and scaling
        site_opts = opts if own else source
        if site.fixed_granularity is not None:
            granularity = site.fixed_granularity
        elif own and name in spec.granularity_sites:
            granularity = opts.get("granularity", default_granularity)
        else:
            granularity = default_granularity
        sites[name] = SiteConfig(
            rate=rates[name],
            granularity=granularity,
            scaling=site_opts.get("scaling", "inverted"),
            gate_masks=site_opts.get("gate_masks", "tied") if site.gate_masks else None,
        )
    return DropoutPlan(
        scheme=scheme,
        cell=cell,
        sites=sites,  # plain dicts, not MappingProxyType: modules must deepcopy and pickle
        options=opts,
        state_output=spec.state_output,
    )


def feed_forward_sites(scheme: str | Scheme, cell: str) -> dict[str, str]:
    """``{site: granularity}`` of ``FEED_FORWARD_SOURCE``'s sites that ``scheme`` may take on ``cell``.

    Only the sites the scheme does not list itself (its own keep their granularity), and none
    for a scheme that takes no feed-forward dropout (``none``).
    """
    spec = _scheme(scheme)
    if not spec.feed_forward or spec.name == FEED_FORWARD_SOURCE:
        return {}
    own = spec.sites_for(cell)
    return {name: g for name, g in SCHEMES[FEED_FORWARD_SOURCE].sites_for(cell).items() if name not in own}


def mapping_rates(scheme: str, cell: str, used: Mapping[str, str], borrowed: Mapping[str, str],
                  dropout: Mapping[str, Any]) -> dict[str, float]:
    """The rate of every site a ``{site or group: rate}`` mapping reaches; unnamed sites get 0.

    Groups first, then sites named on their own, so ``{"ff": 0.5, "out": 0.3}`` gives ``x``
    0.5 and ``out`` 0.3. A group reaches the scheme's own sites of that group and, for
    ``ff``, the borrowed feed-forward sites. A positive rate that would reach no site is an
    error: the user asked for dropout the model would not apply.
    """
    reachable = {**used, **borrowed}
    rates = {name: 0.0 for name in reachable}
    sites_text = _one_of(list(used)) + (f" (and the feed-forward sites {_one_of(list(borrowed))})" if borrowed else "")
    for key in sorted(dropout, key=lambda k: k not in GROUP_NAMES):  # groups before sites
        value = dropout[key]
        if key in GROUP_NAMES:
            rate = check_rate(value, f"dropout rate for group {key!r}")
            members = [name for name in reachable if SITE_SPECS[name].group == key]
            if rate and not members:
                raise ValueError(f"dropout group {key!r} reaches no site of scheme {scheme!r} on a {cell.upper()}; "
                                 f"its sites: {sites_text}")
            rates.update({name: rate for name in members})
            continue
        if key not in SITES:
            raise ValueError(f"unknown site {key!r}; choose one of: {_one_of(SITES)} or a group: {_one_of(GROUP_NAMES)}")
        if key not in CELL_SITES[cell]:
            raise ValueError(f"site {key!r} does not exist on a {cell.upper()}; its sites: {_one_of(CELL_SITES[cell])}")
        if key not in reachable:
            raise ValueError(f"site {key!r} is not used by scheme {scheme!r} on a {cell.upper()}; its sites: {sites_text}")
        rates[key] = check_rate(value, f"dropout rate for site {key!r}")
    return rates


def scheme_names() -> list[str]:
    """Names of all registered schemes, in registry order."""
    return list(SCHEMES)
