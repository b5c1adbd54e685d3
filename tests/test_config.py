"""The Hydra config tree agrees with the library, and every preset composes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from analysis.store_format import resolve_reference

from benchmark.engine import SCHEMES
from runners import build, scheme_configs

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_scheme_group_is_what_the_generator_writes_from_the_registry():
    """A registry entry added, changed or removed without regenerating conf/scheme/ fails here."""
    assert scheme_configs.SCHEME_DIR == CONF / "scheme"
    assert scheme_configs.problem() is None, scheme_configs.problem()
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "scheme").glob("*.yaml")}
    assert list(files) and set(files) == set(SCHEMES)
    for name, body in files.items():
        assert body == {"name": name, **SCHEMES[name].options}, f"conf/scheme/{name}.yaml differs from the registry"


def test_each_scheme_file_and_the_readme_table_state_every_site_it_masks():
    """Issue 27: what a scheme masks is answered in one file, from the plan the engine resolves."""
    semeniuta = (CONF / "scheme" / "semeniuta.yaml").read_text()
    assert "x (step, inverted scaling, tied gate masks), g (step, inverted scaling), out (step" in semeniuta
    moon = (CONF / "scheme" / "moon.yaml").read_text()
    assert "#   lstm: c (sequence, test scaling)\n#   gru: state (sequence, test scaling)" in moon
    assert "feed-forward sites: x (step, inverted scaling), out (step, inverted scaling)" in moon
    assert scheme_configs.readme_problem() is None, scheme_configs.readme_problem()
    assert "| `moon` | LSTM: `c` (sequence, test scaling)<br>GRU: `state` (sequence, test scaling) |" in \
        scheme_configs.readme_table()


def test_the_generator_names_stale_missing_and_extra_files_and_writes_only_what_differs(tmp_path, capsys):
    group = tmp_path / "scheme"
    readme = tmp_path / "README.md"
    readme.write_text((CONF.parent / "README.md").read_text().replace("| `none` | no site |", "| `none` | edited |"))
    assert scheme_configs.main(["--check", "--dir", str(CONF / "scheme"), "--readme", str(readme)]) == 1
    assert "scheme table does not match" in capsys.readouterr().err
    assert scheme_configs.main(["--dir", str(group), "--readme", str(readme)]) == 0
    assert scheme_configs.readme_problem(readme) is None
    assert sorted(p.name for p in group.iterdir()) == sorted(f"{s}.yaml" for s in SCHEMES)  # no temporary left
    assert scheme_configs.main(["--check", "--dir", str(group), "--readme", str(readme)]) == 0
    assert scheme_configs.main(["--dir", str(group), "--readme", str(readme)]) == 0 and "wrote 0 of" in capsys.readouterr().out

    (group / "naive.yaml").write_text((group / "naive.yaml").read_text().replace("step", "sequence"))
    (group / "moon.yaml").unlink()
    (group / "gone.yaml").write_text(scheme_configs.render(SCHEMES["none"]).replace("none", "gone"))
    (group / "mine.yaml").write_text("name: naive\ngranularity: batch\n")  # a user's own variant
    capsys.readouterr()
    assert scheme_configs.main(["--check", "--dir", str(group), "--readme", str(readme)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("run python -m runners.scheme_configs"), err
    assert "stale: naive.yaml; missing: moon.yaml; extra: gone.yaml, mine.yaml" in err

    assert scheme_configs.main(["--dir", str(group), "--readme", str(readme)]) == 0
    out, err = capsys.readouterr()
    assert "moon.yaml, naive.yaml" in out and "mine.yaml" in err  # the user's file is named and kept
    assert sorted(p.name for p in group.iterdir()) == sorted([*(f"{s}.yaml" for s in SCHEMES), "mine.yaml"])
    assert scheme_configs.differences(group) == {"stale": [], "missing": [], "extra": ["mine.yaml"]}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_composes_and_passes_the_checks_on_both_cells(scheme):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for cell in ("lstm", "gru"):
            cfg = compose("config", overrides=[f"scheme={scheme}", f"model={cell}"])
            build.check_config(cfg)
            model = build.model(cfg, vocab_size=50)
            assert model.rnn.scheme == scheme and model.cell == cell


def _sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists of a preset's own sweep (``hydra.sweeper.params``), expanded as ``run.py -m``
    expands them: Hydra's public override parser with its config loader (so ``glob(*)`` lists the
    group's options), one job per combination. Call inside ``initialize_config_dir``."""
    from itertools import product

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    axes = [[f"{o.get_key_element()}={v}" for v in (o.sweep_string_iterator() if o.is_sweep_override()
                                                    else [o.get_value_element_as_str()])]
            for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])]
    return [list(job) for job in product(*axes)] if axes else []


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_and_each_job_of_its_sweep_composes_and_passes_the_checks(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = _sweep_jobs(experiment)
        for job in jobs:
            cfg = compose("config", overrides=[f"experiment={experiment}", *job])
            build.check_config(cfg)
            model = build.model(cfg, vocab_size=50)
            assert model.rnn.scheme == cfg.scheme.name



@pytest.mark.parametrize("experiment", ["quickstart", "synthetic"])
def test_presets_that_compare_every_scheme_sweep_exactly_the_registry(experiment):
    """Issue 16: no preset lists the schemes; ``scheme: glob(*)`` expands to the scheme group,
    which the generator keeps equal to the registry, so a new scheme is swept by itself."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        jobs = _sweep_jobs(experiment)
    swept = [o.split("=", 1)[1] for job in jobs for o in job if o.startswith("scheme=")]
    cells = {o for job in jobs for o in job if o.startswith("model=")} or {None}
    assert sorted(set(swept)) == sorted(SCHEMES), "conf/scheme/ differs from the registry: run python -m runners.scheme_configs"
    assert len(swept) == len(jobs) == len(SCHEMES) * len(cells)  # every scheme once per cell


def test_a_generated_scheme_file_joins_the_preset_sweeps_without_editing_them(tmp_path):
    """What a new registry entry does once its file is generated: the quickstart's sweep has it."""
    import shutil
    from dataclasses import replace

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "scheme" / "brand_new.yaml").write_text(scheme_configs.render(replace(SCHEMES["naive"], name="brand_new")))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        jobs = _sweep_jobs("quickstart")
    assert sorted({o for job in jobs for o in job if o.startswith("scheme=")}) == sorted(
        f"scheme={s}" for s in [*SCHEMES, "brand_new"])


PUBLISHED = {  # preset -> (config selecting a variant, test perplexity the paper reports)
    "zaremba_small": ([], 114.5), "zaremba_medium": ([], 82.7), "zaremba_large": ([], 78.4),
    "gal_medium": (["scheme.gate_masks=untied"], 79.7), "gal_large": (["scheme.gate_masks=untied"], 75.2),
    "awd_lstm": ([], 58.8),
}


def reference(cfg) -> dict | None:
    """The published numbers a job of ``cfg`` records in its summary (``JobSummary.reference``)."""
    return resolve_reference(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("experiment", sorted(PUBLISHED))
def test_paper_presets_carry_their_published_numbers(experiment):
    overrides, test_ppl = PUBLISHED[experiment]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    ref = reference(cfg)
    assert ref["test_ppl"] == test_ppl and ref["source"]
    assert cfg.data.name == "ptb"


# Which weights each preset's source tests: main.lua, Gal's v3 script and drop-rnn run their test
# after the training loop on the weights they end with; AWD-LSTM's main.py reloads its best model.
# moon follows main.lua's recipe. The suite's own comparisons and studies keep the default, best.
TESTED_WEIGHTS = {"zaremba_small": "last", "zaremba_medium": "last", "zaremba_large": "last", "gal_medium": "last",
                  "gal_large": "last", "semeniuta": "last", "moon": "last", "awd_lstm": "best"}


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_tests_the_weights_its_source_tests(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for job in _sweep_jobs(experiment) or [[]]:
            cfg = compose("config", overrides=[f"experiment={experiment}", *job])
            assert build.train_config(cfg).test_weights == TESTED_WEIGHTS.get(experiment, "best"), job


def _plan(cfg):
    from benchmark.engine import resolve

    return resolve(cfg.scheme.name, cfg.model.cell, build.dropout_rates(cfg), **build.scheme_options(cfg))


def test_gal_medium_runs_the_papers_medium_rates():
    """Gal & Ghahramani 2016, Sec. 5.1: "0.2 and 0.35 respectively for the medium model", the
    first the tied embedding and recurrent rate, the second the tied input and output rate."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for masks in ("untied", "tied"):
            plan = _plan(compose("config", overrides=["experiment=gal_medium", f"scheme.gate_masks={masks}"]))
            assert plan.rates == {"emb": 0.2, "x": 0.35, "h_in": 0.2, "out": 0.35}, masks


def test_semeniuta_trains_each_cell_with_drop_rnns_rate_and_clip_without_a_sweep():
    """drop-rnn main.py: lr {'lstm': 1, 'gru': 0.1}, clip {'lstm': 10, 'gru': 20}, also for ``model=gru`` alone."""
    from omegaconf import OmegaConf

    expected = {"lstm": (1.0, 10.0), "gru": (0.1, 20.0)}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for cell, (lr, clip) in expected.items():
            cfg = compose("config", overrides=["experiment=semeniuta", f"model={cell}"])
            build.check_config(cfg)
            train_cfg = build.train_config(cfg)
            assert (cfg.model.cell, train_cfg.lr, train_cfg.clip) == (cell, lr, clip)
            saved = OmegaConf.to_container(cfg, resolve=True)["train"]  # what the run's config.yaml holds
            assert (saved["lr"], saved["clip"]) == (lr, clip)
        default = build.train_config(compose("config", overrides=["experiment=semeniuta"]))
        assert (default.lr, default.clip) == expected["lstm"]
        assert sorted(job for jobs in _sweep_jobs("semeniuta") for job in jobs) == ["model=gru", "model=lstm"]


def test_moon_keeps_zarembas_feed_forward_dropout_beside_its_memory_mask():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for cell, memory in (("lstm", "c"), ("gru", "state")):
            plan = _plan(compose("config", overrides=["experiment=moon", f"model={cell}"]))
            assert plan.rates == {"x": 0.5, "out": 0.5, memory: 0.25}, cell
            assert plan.sites["x"].granularity == plan.sites["out"].granularity == "step"
            assert plan.sites["x"].scaling == "inverted"
            assert (plan.sites[memory].granularity, plan.sites[memory].scaling) == ("sequence", "test")


def test_gal_presets_pick_the_reference_of_their_gate_masks_and_evaluate_with_mc():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        untied = compose("config", overrides=["experiment=gal_large", "scheme.gate_masks=untied"])
        tied = compose("config", overrides=["experiment=gal_large", "scheme.gate_masks=tied"])
    assert reference(untied)["mc_test_ppl"] == 73.4 and reference(tied)["test_ppl"] == 75.0
    assert untied.train.mc_samples == 100


def test_the_stability_study_covers_its_cases():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        seen = set()
        for job in _sweep_jobs("gru_explosion"):
            cfg = compose("config", overrides=["experiment=gru_explosion", *job])
            seen.add((cfg.scheme.name, cfg.model.cell, bool(cfg.scheme.get("drop_cell", False))))
    assert seen == {("state_dropout", "gru", False), ("state_dropout", "lstm", False), ("state_dropout", "lstm", True),
                    ("variational", "gru", False), ("variational", "lstm", False),
                    ("semeniuta", "gru", False), ("semeniuta", "lstm", False)}


def test_tied_weights_share_one_matrix_and_need_equal_sizes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["model.tie_weights=true"])
        model = build.model(cfg, vocab_size=50)
        assert model.decoder.weight is model.embedding.embedding.weight
        bad = compose("config", overrides=["model.tie_weights=true", "model.emb_size=100"])
    with pytest.raises(build.ConfigError, match="tie_weights needs"):
        build.check_config(bad)


F32 = f"{build.FLOAT32_MAX:.3g} (the largest float32: the weights' type)"


@pytest.mark.parametrize("override, message", [
    ("model.hidden_size=abc", "model.hidden_size=abc must be an integer"),
    ("model.init_scale=big", "model.init_scale=big must be a number"),
    ("model.tie_weights=3", "model.tie_weights=3 must be true or false"),
    ("model.num_layers=0", "model.num_layers=0 must be at least 1"),
    ("model.cell=rnn", "model.cell=rnn is unknown; choose one of: lstm, gru"),
    ("data.size=abc", "data.size=abc must be an integer or null"),
    ("data.vocab_size=-3", "data.vocab_size=-3 must be at least 1"),
    ("seed=abc", "seed=abc must be an integer"),
    ("threads=0", "threads=0 must be at least 1"),
    ("hardware=tpu", "hardware=tpu is unknown; choose one of: any, gpu"),
    ("device=tpu", "device=tpu is unknown; choose one of: auto, cpu, cuda, cuda:N"),
    ("train.loss_reduction=mean", "train.loss_reduction=mean is unknown; choose one of: sum_steps, mean_tokens"),
    ("train.schedule=cosine", "train.schedule=cosine is unknown; choose one of: step, plateau"),
    ("train.lr=-1", f"train.lr=-1 must be a positive finite number, at most {F32}"),
    ("train.clip=-1", f"train.clip=-1 must be a positive finite number, at most {F32}"),
    ("train.clip=0", f"train.clip=0 must be a positive finite number, at most {F32}"),
    # issue 26: each of these was a traceback or accepted silently
    ("train.lr=1e308", f"train.lr=1e+308 must be a positive finite number, at most {F32}"),
    ("train.lr=inf", f"train.lr=inf must be a positive finite number, at most {F32}"),
    ("train.lr=nan", f"train.lr=nan must be a positive finite number, at most {F32}"),
    ("model.init_scale=-1", "model.init_scale=-1 must be a positive finite number: the half-width of "
                            "U(-init_scale, init_scale)"),
    ("model.init_scale=nan", "model.init_scale=nan must be a positive finite number: the half-width of "
                             "U(-init_scale, init_scale)"),
    ("train.probe_steps=-1", "train.probe_steps=-1 must be 0 (no probes) or a number of time steps"),
    ("train.probe_batch=0", "train.probe_batch=0 must be at least 1"),
    ("logger.mode=bogus", "logger.mode=bogus is unknown; choose one of: auto, offline, online, disabled"),
    ("train.lr_decay=1.5", "train.lr_decay=1.5 must be in (0, 1]: the factor the rate is multiplied by"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be 0 or more"),
    ("train.test_weights=final", "train.test_weights=final is unknown; choose one of: best, last"),
])
def test_the_schema_names_the_key_and_what_it_allows(override, message):
    """The model and data groups are checked against the library's own schemas (ModelConfig, the corpus loader)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[override])
    with pytest.raises(build.ConfigError) as caught:
        build.check_config(cfg)
    assert str(caught.value) == message


def test_every_data_option_in_conf_matches_its_loaders_schema():
    """conf/data/*.yaml and the loaders' signatures agree, so the defaults themselves pass the schema."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for data in sorted(p.stem for p in (CONF / "data").glob("*.yaml")):
            build.check_data(compose("config", overrides=[f"data={data}"]))


def test_a_synthetic_option_of_the_wrong_type_is_named():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", "data.topic_stay=high"])
    with pytest.raises(build.ConfigError, match=r"^data.topic_stay=high must be a number$"):
        build.check_config(cfg)


def test_the_composed_groups_hold_every_key_of_the_librarys_schemas():
    """Hydra refuses a key the composed config does not have (struct mode), so each group's
    config must hold every key its library schema takes: ``train.nonmono=3`` is valid because
    ``conf/train/zaremba.yaml`` lists it, not because a schema lets it through."""
    from runners.hydra_app import group_options

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config")
    assert set(cfg.train) == set(build.schema_of(build.TrainConfig))
    assert set(cfg.model) <= set(build.schema_of(build.ModelConfig)) and {"cell", "hidden_size"} <= set(cfg.model)
    for group in ("scheme", "model", "data", "experiment", "case", "logger", "train"):
        assert group_options(group) == sorted(p.stem for p in (CONF / group).glob("*.yaml")), group


def _refusal(overrides: list[str], config_dir: Path = CONF, config_name: str = "config") -> str:
    """Hydra's own refusal of ``overrides``, composed for real, as the suite's one line."""
    from hydra.errors import HydraException

    from runners.hydra_app import CommandLine, one_line

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        with pytest.raises(HydraException) as refused:
            compose(config_name, overrides=overrides)
    return one_line(refused.value, CommandLine(overrides=overrides), CONF, config_name)


@pytest.mark.parametrize("overrides, message", [
    (["scheme=bogus"], "scheme=bogus is unknown; choose one of: moon, naive, none, semeniuta, state_dropout, "
                       "variational, weightdrop, zoneout"),
    (["trian.epochs=3"], "trian.epochs is not a config key (did you mean train?); top-level keys: case, data, "),
    (["experimen=quickstart"], "experimen is not a config key (did you mean experiment?)"),
    (["train.epochz=3"], "train.epochz is not a config key (did you mean train.epochs?); train has: ar, "),
    (["paths.outptu_dir=x"], "paths.outptu_dir is not a config key (did you mean paths.output_dir?); paths has: "
                             "cache_dir, output_dir"),
    # the scheme a preset picks through the preset it includes (study_ptb_medium -> zaremba_medium -> naive)
    (["experiment=study_ptb_medium", "scheme.gate_masks=tied"],
     "scheme.gate_masks does not apply to scheme=naive (its keys: granularity, name, scaling); scheme options that "
     "take it: variational"),
    (["hydra.launcher.n_jobs=2"], "hydra.launcher.n_jobs does not apply to hydra/launcher=basic (its keys: _target_); "
                                  "hydra/launcher options that take it: joblib, local_parallel"),
])
def test_hydras_refusals_read_as_one_line_with_what_is_allowed(overrides, message):
    assert _refusal(overrides).startswith(message)


def test_a_config_dir_on_the_search_path_adds_its_options_and_keys_to_the_refusals(tmp_path):
    """What a refusal lists is what Hydra composes from: here the suite's conf/ and a user's directory."""
    (tmp_path / "scheme").mkdir()
    (tmp_path / "scheme" / "mine.yaml").write_text("name: naive\ngranularity: batch\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "lab.yaml").write_text("# @package _global_\ndefaults:\n  - override /scheme: mine\n"
                                                    "lab_key: 1\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert "choose one of: mine, moon, naive, " in _refusal([searchpath, "scheme=bogus"])
    assert _refusal([searchpath, "experiment=lab", "lab_ky=2"]).startswith("lab_ky is not a config key (did you mean "
                                                                           "lab_key?)")
    assert _refusal([searchpath, "experiment=lab", "scheme.drop_cell=true"]).startswith(
        "scheme.drop_cell does not apply to scheme=mine (its keys: granularity, name)")
    assert "mine" not in _refusal(["scheme=bogus"]), "the suite's own tree is unchanged"
