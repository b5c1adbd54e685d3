"""The Hydra config tree agrees with the library, and every preset composes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from benchmark.engine import SCHEMES
from runners import build

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_scheme_group_matches_the_registry():
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "scheme").glob("*.yaml")}
    assert set(files) == set(SCHEMES), "conf/scheme/ and benchmark.engine.SCHEMES list different schemes"
    for name, body in files.items():
        assert body["name"] == name
        options = {k: v for k, v in body.items() if k != "name"}
        assert options == dict(SCHEMES[name].options), f"conf/scheme/{name}.yaml options differ from the registry"


@pytest.mark.parametrize("experiment", [None] + sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_and_preset_composes_and_passes_the_checks(experiment, scheme):
    overrides = [f"scheme={scheme}"] + ([f"experiment={experiment}"] if experiment else [])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for cell in ("lstm", "gru"):
            cfg = compose("config", overrides=[*overrides, f"model={cell}"])
            build.check_config(cfg)
            model = build.model(cfg, vocab_size=50)
            assert model.rnn.scheme == scheme and model.cell == cell
