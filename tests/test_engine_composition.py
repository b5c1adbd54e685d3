"""Feed-forward composition (issue 22): every scheme on naive's footing, plus its recurrent part.

A dropout mapping may name the groups of the site table (``ff``, ``rec``, ``emb``) or sites;
every scheme but ``none`` may take naive's feed-forward sites it does not list. These tests
read the resolved plan (what a run records in ``summary.json``), then check that the
composed masks act where the oracle from the papers' equations says, on every path.
"""

from __future__ import annotations

import pytest
import torch

from benchmark.engine import GRU, LSTM, SCHEMES, resolve
from benchmark.engine.sites import SITE_SPECS
from test_engine_reference import B, D, H, T, TOL, oracle
from test_engine_segments import TOL as SEGMENT_TOL
from test_engine_segments import assert_same, inputs, make, run

TWO_RATE = [name for name in SCHEMES if name not in ("none", "naive")]


def described(scheme: str, cell: str, dropout) -> dict:
    return resolve(scheme, cell, dropout).describe()["sites"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scheme", TWO_RATE)
def test_two_rates_reach_the_feed_forward_sites_and_the_schemes_own_recurrent_sites(scheme, cell):
    sites = described(scheme, cell, {"ff": 0.45, "rec": 0.2})
    own = SCHEMES[scheme].sites_for(cell)
    for name, site in sites.items():
        assert site["group"] == SITE_SPECS[name].group
        expected = {"ff": 0.45, "rec": 0.2, "emb": 0.0}[site["group"]]
        assert site["rate"] == expected, name
        if site["group"] == "ff":
            # the scheme's own granularity where it has the site, naive's per-step mask where it has none
            assert site["granularity"] == (own[name] if name in own else "step")
            if name not in own:
                assert (site["scaling"], site["gate_masks"]) == ("inverted", "tied" if name == "x" else None)
    assert {"x", "out"} <= set(sites)
    assert [n for n, s in sites.items() if s["group"] == "rec"] == [n for n in own if SITE_SPECS[n].group == "rec"]


def test_variational_keeps_its_per_sequence_untied_input_masks_on_the_shared_footing():
    sites = described("variational", "lstm", {"ff": 0.5, "rec": 0.25})
    assert (sites["x"]["granularity"], sites["x"]["gate_masks"]) == ("sequence", "untied")
    assert sites["emb"]["rate"] == 0.0  # word-type dropout is left out of the shared footing


def test_naive_is_the_footing_alone_and_none_takes_nothing():
    assert resolve("naive", "gru", {"ff": 0.3}).rates == {"x": 0.3, "out": 0.3}
    assert resolve("naive", "gru", {"ff": 0.3, "rec": 0.0}).rates == {"x": 0.3, "out": 0.3}
    assert resolve("none", "gru", {"ff": 0.0, "rec": 0.0}).rates == {}
    with pytest.raises(ValueError, match=r"^dropout group 'rec' reaches no site of scheme 'naive' on a GRU; its sites: x, out$"):
        resolve("naive", "gru", {"ff": 0.3, "rec": 0.2})
    with pytest.raises(ValueError, match=r"group 'ff' reaches no site of scheme 'none'"):
        resolve("none", "lstm", {"ff": 0.3})


def test_a_site_named_on_its_own_wins_over_its_group():
    assert resolve("moon", "lstm", {"ff": 0.5, "out": 0.2, "rec": 0.3}).rates == {"x": 0.5, "c": 0.3, "out": 0.2}


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_each_schemes_default_definition_is_unchanged(scheme, cell):
    """A float still means the scheme's own sites only: nothing is borrowed unless asked for."""
    plan = resolve(scheme, cell, 0.3)
    assert list(plan.sites) == [n for n in SITE_SPECS if n in SCHEMES[scheme].sites_for(cell)]


def test_moon_takes_feed_forward_dropout_from_the_constructor():
    """The issue's example, refused before: Moon's memory dropout with dropout on the layer inputs."""
    torch.manual_seed(0)
    module = LSTM(8, 8, 2, scheme="moon", dropout={"c": 0.3, "x": 0.2})
    module(torch.randn(5, 3, 8))
    keys = set(module.last_masks)
    assert {(0, "x"), (1, "x"), (0, "c"), (1, "c")} <= keys and not any(site == "out" for _, site in keys)
    assert module.last_masks[(0, "x")].shape == (5, 3, 8)  # naive's per-step mask


def test_a_borrowed_site_the_scheme_cannot_take_is_refused_with_what_it_can():
    with pytest.raises(ValueError, match=r"its sites: c \(and the feed-forward sites x, out\)$"):
        resolve("moon", "lstm", {"h_in": 0.2})


COMPOSED = [(cell, scheme, {"ff": 0.4, "rec": 0.3}) for cell in ("lstm", "gru")
            for scheme in ("moon", "zoneout", "state_dropout", "semeniuta", "variational", "weightdrop")]


@pytest.mark.parametrize("cell,scheme,dropout", COMPOSED)
def test_composed_training_forward_matches_the_gate_level_oracle(cell, scheme, dropout):
    torch.manual_seed(0)
    module = (LSTM if cell == "lstm" else GRU)(D, H, scheme=scheme, dropout=dropout).double()
    x = torch.randn(T, B, D, dtype=torch.double)
    h0, c0 = torch.randn(1, B, H, dtype=torch.double), torch.randn(1, B, H, dtype=torch.double)
    out, state = module(x, (h0, c0) if cell == "lstm" else h0)
    h, c = state if cell == "lstm" else (state, None)
    masks = {key: m for (layer, key), m in module.last_masks.items()}
    assert {"x", "out"} <= set(masks)
    gran = {site: cfg.granularity for site, cfg in module.plan.sites.items()}
    with torch.no_grad():
        e_out, e_h, e_c = oracle(cell, module, x, h0[0], c0[0] if cell == "lstm" else None, masks, gran,
                                 module.plan.state_output == "pre_mask")
    torch.testing.assert_close(out, e_out, **TOL)
    torch.testing.assert_close(h[0], e_h, **TOL)
    if cell == "lstm":
        torch.testing.assert_close(c[0], e_c, **TOL)


@pytest.mark.parametrize("cell,scheme,dropout", COMPOSED)
def test_composed_segment_matches_the_reference_values_and_gradients(cell, scheme, dropout):
    results = [run(make(cell, impl, scheme=scheme, dropout=dropout), cell, *inputs(cell, 2))
               for impl in ("auto", "reference")]
    assert any(site == "x" for _, site in results[0][4])
    assert_same(*results, **SEGMENT_TOL)
