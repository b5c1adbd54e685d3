"""Bad requests fail at construction with one line naming the fault and what is allowed;
the registry is the one place schemes are listed, and a dropout float reaches every site."""

from __future__ import annotations

import math

import pytest

from benchmark.engine import CELL_SITES, GRU, LSTM, SCHEMES, SITES, resolve

ALL_SCHEMES = ["none", "naive", "variational", "moon", "semeniuta", "weightdrop", "zoneout", "state_dropout"]


def error_of(cls, **kw) -> str:
    with pytest.raises(ValueError) as info:
        cls(3, 4, **kw)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_unknown_scheme_lists_every_scheme():
    message = error_of(LSTM, scheme="bogus")
    assert "'bogus'" in message
    assert message.endswith("choose one of: " + ", ".join(ALL_SCHEMES))


def test_unknown_site_lists_the_sites():
    message = error_of(LSTM, scheme="variational", dropout={"hidden": 0.3})
    assert "'hidden'" in message and all(site in message for site in SITES)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, math.nan, math.inf, "0.3", None, True])
def test_rates_outside_zero_one_are_rejected(rate):
    message = error_of(GRU, scheme="naive", dropout=rate)
    assert "[0, 1)" in message and "dropout" in message
    message = error_of(GRU, scheme="naive", dropout={"x": rate})
    assert "[0, 1)" in message and "'x'" in message


def test_a_site_the_cell_does_not_have():
    message = error_of(GRU, scheme="moon", dropout={"c": 0.3})
    assert "'c'" in message and "GRU" in message
    assert message.endswith("its sites: " + ", ".join(CELL_SITES["gru"]))
    assert "c," not in message.split("its sites:")[1]


def test_a_site_the_scheme_does_not_use():
    message = error_of(LSTM, scheme="naive", dropout={"h_in": 0.3})
    assert "'h_in'" in message and "'naive'" in message and message.endswith("its sites: x, out")


@pytest.mark.parametrize(
    "cls,kw,fragments",
    [
        (LSTM, {"scheme": "naive", "gate_masks": "untied"}, ["'gate_masks'", "granularity, scaling"]),
        (LSTM, {"scheme": "state_dropout", "granularity": "step"}, ["'step'", "sequence, batch"]),
        (LSTM, {"scheme": "variational", "gate_masks": "half"}, ["'half'", "untied, tied"]),
        (LSTM, {"scheme": "semeniuta", "scaling": "none"}, ["'none'", "inverted, test"]),
        (GRU, {"scheme": "state_dropout", "drop_cell": True}, ["drop_cell", "GRU"]),
        (LSTM, {"scheme": "zoneout", "scaling": "test"}, ["'scaling'", "granularity"]),
        (LSTM, {"bidirectional": True}, ["bidirectional", "False"]),
        (LSTM, {"proj_size": 2}, ["proj_size", "0"]),
        (LSTM, {"impl": "cuda"}, ["'cuda'", "auto, segment"]),
    ],
)
def test_bad_options(cls, kw, fragments):
    message = error_of(cls, **kw)
    assert all(fragment in message for fragment in fragments), message


def test_registry_lists_every_scheme_with_its_data():
    assert list(SCHEMES) == ALL_SCHEMES
    for name, scheme in SCHEMES.items():
        assert scheme.name == name and scheme.source and scheme.summary
        for cell in scheme.cells:
            assert set(scheme.sites_for(cell)) <= set(CELL_SITES[cell])
    assert SCHEMES["moon"].sites_for("lstm") == {"c": "sequence"}
    assert SCHEMES["moon"].sites_for("gru") == {"state": "sequence"}
    assert SCHEMES["naive"].sites_for("gru") == {"x": "step", "out": "step"}
    assert SCHEMES["weightdrop"].sites_for("lstm")["w_hh"] == "batch"
    assert {n for n, s in SCHEMES.items() if "emb" in s.sites_for("lstm")} == {"variational", "weightdrop"}
    assert SCHEMES["state_dropout"].state_output == "pre_mask"


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_one_float_reaches_every_site_the_scheme_uses(name):
    for cell in ("lstm", "gru"):
        plan = resolve(name, cell, 0.35)
        assert plan.rates == {site: 0.35 for site in SCHEMES[name].sites_for(cell)}


def test_the_language_model_reads_the_embedding_rate():
    assert LSTM(3, 4, scheme="variational", dropout=0.4).emb_p == 0.4
    assert LSTM(3, 4, scheme="weightdrop", dropout={"emb": 0.1, "w_hh": 0.5}).emb_p == 0.1
    assert LSTM(3, 4, scheme="naive", dropout=0.4).emb_p == 0.0


def test_options_resolve_granularity_only_on_the_schemes_own_sites():
    plan = resolve("semeniuta", "lstm", 0.2, granularity="sequence")
    assert {s: c.granularity for s, c in plan.sites.items()} == {"x": "step", "g": "sequence", "out": "step"}
    plan = resolve("variational", "gru", 0.2, granularity="batch", gate_masks="tied")
    assert plan.sites["emb"].granularity == "batch" and plan.sites["h_in"].gate_masks == "tied"
