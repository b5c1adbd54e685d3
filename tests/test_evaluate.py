"""``python -m runners.evaluate run=RUN_DIR``: a finished run scored again from its checkpoint, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY, cli_env

RUN = [*TINY, "train.epochs=1", "logger=none", "threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny real runs (a dropout scheme and none), started from a directory of their own
    with a relative corpus cache, as a user in their project directory would."""
    origin = tmp_path_factory.mktemp("origin")
    made = {}
    # "last": three epochs at lr 2 over-fit the slice (validation best at epoch 1), tested with the
    # weights after the last epoch, as the Zaremba, Gal and drop-rnn presets test them.
    for name, scheme, extra in (("variational", "variational", []), ("none", "none", []),
                                ("last", "variational", ["train.epochs=3", "train.lr=2", "train.test_weights=last"])):
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), f"scheme={scheme}", *RUN, *extra,
                               "paths.cache_dir=cache", f"hydra.run.dir=runs/{name}"], cwd=origin,
                              env=cli_env(origin), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        made[name] = origin / "runs" / name
    return made


def evaluate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m runners.evaluate ...`` (Hydra overrides) from ``cwd``, not the repository."""
    return subprocess.run([sys.executable, "-m", "runners.evaluate", *args], cwd=cwd, env=cli_env(cwd),
                          capture_output=True, text=True, timeout=300)


def result(run: Path, *args: str, cwd: Path) -> dict:
    proc = evaluate(f"run={run}", *args, "json=true", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_test_perplexity_is_the_one_in_summary_json(runs, tmp_path):
    summary = json.loads((runs["variational"] / "summary.json").read_text())
    got = result(runs["variational"], cwd=tmp_path)
    assert got["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)
    assert got["summary_ppl"] == summary["test_ppl"] and got["own_corpus"] and got["split"] == "test"
    assert not (tmp_path / "cache").exists(), "the run's relative cache is read where the run was started"


def test_the_validation_split_gives_the_best_validation_perplexity(runs, tmp_path):
    summary = json.loads((runs["variational"] / "summary.json").read_text())
    got = result(runs["variational"], "split=valid", cwd=tmp_path)
    assert got["ppl"] == pytest.approx(summary["best_val_ppl"], rel=1e-6)


def test_a_run_that_tested_its_last_weights_is_scored_with_them_and_with_the_best_on_request(runs, tmp_path):
    run = runs["last"]
    summary = json.loads((run / "summary.json").read_text())
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [e for e in val if e["split"] == "val"]
    best_epoch = min(val, key=lambda e: e["loss"])["epoch"]
    assert best_epoch != val[-1]["epoch"] == 3, "precondition: validation must be best before the last epoch"
    assert (summary["test_weights"], summary["test_epoch"]) == ("last", 3)

    got = result(run, cwd=tmp_path)
    assert (got["weights"], got["weights_epoch"]) == ("last", 3) and got["summary_ppl"] == summary["test_ppl"]
    assert got["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)
    last_valid = result(run, "split=valid", cwd=tmp_path)
    assert last_valid["ppl"] == pytest.approx(val[-1]["ppl"], rel=1e-6) and last_valid["summary_ppl"] is None

    best_valid = result(run, "split=valid", "weights=best", cwd=tmp_path)
    assert (best_valid["weights"], best_valid["weights_epoch"]) == ("best", best_epoch)
    assert best_valid["ppl"] == pytest.approx(summary["best_val_ppl"], rel=1e-6) == best_valid["summary_ppl"]
    best_test = result(run, "weights=best", cwd=tmp_path)
    assert best_test["summary_ppl"] is None and best_test["ppl"] != pytest.approx(summary["test_ppl"], rel=1e-6)
    text = evaluate(f"run={run}", cwd=tmp_path).stdout.splitlines()[0]
    assert text.endswith("; last weights (epoch 3)"), text


def test_text_output_shows_both_numbers_and_mc_dropout(runs, tmp_path):
    summary = json.loads((runs["variational"] / "summary.json").read_text())
    proc = evaluate(f"run={runs['variational']}", "mc=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run ") and "variational" in lines[0] and "finished" in lines[0]
    assert lines[0].endswith("; best-validation weights (epoch 1)"), lines[0]
    test_line = next(line for line in lines if line.startswith("test ppl"))
    assert f"{summary['test_ppl']:.2f}" in test_line and f"summary.json: {summary['test_ppl']:.2f}" in test_line
    mc_line = next(line for line in lines if line.startswith("MC test ppl (K=3)"))
    assert float(mc_line.split()[-1]) > 1


def test_mc_dropout_is_seeded_and_differs_from_the_standard_estimate(runs, tmp_path):
    first = result(runs["variational"], "mc=2", "seed=5", cwd=tmp_path)
    again = result(runs["variational"], "mc=2", "seed=5", cwd=tmp_path)
    assert first["mc_ppl"] == again["mc_ppl"] and first["mc_ppl"] != first["ppl"]


def test_mc_dropout_is_declined_where_the_scheme_samples_nothing(runs, tmp_path):
    got = result(runs["none"], "mc=3", cwd=tmp_path)
    assert got["mc_ppl"] is None and "samples no dropout mask" in got["mc_note"]
    summary = json.loads((runs["none"] / "summary.json").read_text())
    assert got["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)


def test_another_corpus_is_mapped_into_the_runs_vocabulary(runs, tmp_path):
    """A longer training prefix builds a larger vocabulary: mapped back by word, the test
    tokens are the run's own again, so the perplexity is too; a foreign text is mostly <unk>."""
    summary = json.loads((runs["variational"] / "summary.json").read_text())
    same = result(runs["variational"], "data.size=2500", cwd=tmp_path)
    assert not same["own_corpus"] and same["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6)

    text = tmp_path / "text"
    text.mkdir()
    for split in ("train", "valid", "test"):
        (text / f"{split}.txt").write_text("and the lord said unto moses\nzebra quantum foo bar\n" * 30)
    other = result(runs["variational"], "data=text", f"data.path={text}", cwd=tmp_path)
    assert other["data"] == "text" and other["tokens"] == 30 * 12 and not other["own_corpus"]
    assert 0.3 < other["unk_share"] < 0.6  # zebra quantum foo bar (4 of 12 tokens), maybe more in a tiny vocab
    assert other["ppl"] > 1 and other["summary_ppl"] is None


def _no_checkpoint(run: Path, tmp: Path) -> Path:
    copy = tmp / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    (copy / "checkpoint.pt").unlink()
    return copy


def _corrupt(run: Path, tmp: Path) -> Path:
    copy = tmp / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("eval"))
    data = (copy / "checkpoint.pt").read_bytes()
    (copy / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    return copy


@pytest.mark.parametrize("case, args, needle", [
    ("no run", lambda run, tmp: [], "run is not set: name the run to score, e.g. python -m runners.evaluate run="),
    ("not a run", lambda run, tmp: [f"run={tmp}"], "is not a run directory"),
    ("missing", lambda run, tmp: [f"run={tmp / 'nowhere'}"], "is not a directory"),
    ("no weights", lambda run, tmp: [f"run={_no_checkpoint(run, tmp)}"], "has no saved weights"),
    ("corrupt", lambda run, tmp: [f"run={_corrupt(run, tmp)}"], "is corrupt or not a checkpoint"),
    ("split", lambda run, tmp: [f"run={run}", "split=train"], "split=train is unknown; choose one of: test, valid"),
    ("weights", lambda run, tmp: [f"run={run}", "weights=final"],
     "weights=final is unknown; choose one of: best, last"),
    ("corpus", lambda run, tmp: [f"run={run}", "data=bogus"], "data=bogus is unknown; choose one of: kjv,"),
    ("option", lambda run, tmp: [f"run={run}", "data.sizee=3"],
     "data.sizee is not a config key (did you mean data.size?); data has: "),
    ("option type", lambda run, tmp: [f"run={run}", "data.size=abc"], "data.size=abc must be an integer or null"),
    ("mc", lambda run, tmp: [f"run={run}", "mc=-1"], "mc=-1 must be 0"),
    ("mc type", lambda run, tmp: [f"run={run}", "mc=many"], "mc=many must be an integer or null"),
    ("key", lambda run, tmp: [f"run={run}", "splt=valid"], "splt is not a config key (did you mean split?)"),
    ("device", lambda run, tmp: [f"run={run}", "device=tpu"], "device=tpu is unknown; choose one of: auto, cpu"),
])
def test_bad_input_is_one_line_and_status_2(runs, tmp_path, case, args, needle):
    run = runs["variational"]
    before = sorted(p.name for p in run.iterdir())
    proc = evaluate(*args(run, tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert needle in proc.stderr and proc.stdout == ""
    # nothing made where it should not be: no folder for a path that is not a run, no eval/ for bad options,
    # none left by an evaluation that failed once it had started (a corrupt checkpoint)
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "eval").exists()
    assert not (tmp_path / "copy" / "eval").exists(), case
    assert sorted(p.name for p in run.iterdir()) == before, case


def test_each_evaluation_records_itself_in_the_runs_eval_folder_and_nowhere_else(runs, tmp_path):
    """Hydra's output folder for an evaluation is ``<run>/eval/<time>/``: its config and log beside
    the run's own files, which stay as they were; the working directory gets nothing."""
    run = tmp_path / "run"
    shutil.copytree(runs["variational"], run, ignore=shutil.ignore_patterns("eval"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    proc = evaluate(f"run={run}", "split=valid", "json=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (folder,) = (run / "eval").iterdir()
    assert json.loads((folder / "evaluation.json").read_text()) == json.loads(proc.stdout)
    overrides = (folder / ".hydra" / "overrides.yaml").read_text()
    assert f"run={run}" in overrides and "split=valid" in overrides and (folder / "evaluate.log").is_file()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_hydra_composes_the_evaluation_as_it_composes_training(runs, tmp_path):
    """The same override syntax: ``--cfg job`` shows the composed config, ``-m`` sweeps an option."""
    proc = evaluate(f"run={runs['variational']}", "data=text", "data.path=/some/text", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert (shown["data"]["name"], shown["data"]["path"], shown["split"]) == ("text", "/some/text", "test")
    proc = evaluate("-m", f"run={runs['variational']}", "mc=0,2", "json=true", f"hydra.sweep.dir={tmp_path / 's'}",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["mc_samples"] for r in results] == [0, 2] and results[1]["mc_ppl"] > 1


def test_with_a_logger_the_result_is_a_wandb_eval_run_in_the_training_runs_group(runs, tmp_path):
    """``logger=wandb``: real W&B, offline, read back as a user would; job type ``eval``, the group the
    run's sweep logged to (``wandb_group`` in its summary), the run's config and the scores."""
    from test_cli import leet_records

    run = tmp_path / "run"
    shutil.copytree(runs["variational"], run, ignore=shutil.ignore_patterns("eval"))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "wandb_group": "quickstart-2026-01-05_10-00-00"}))
    proc = evaluate(f"run={run}", "logger=wandb", "mc=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (offline,) = run.glob("eval/*/wandb/offline-run-*")
    records = leet_records(offline)
    (wandb_run,) = [r["run"] for r in records if r["type"] == "run"]
    assert wandb_run["job_type"] == "eval" and wandb_run["run_group"] == "quickstart-2026-01-05_10-00-00"
    assert wandb_run["display_name"] == "variational-lstm-s0-eval"
    config = wandb_run["config"]["update"]
    assert config["scheme"]["name"] == "variational" and config["eval"]["mc"] == 2
    scores = {}
    for record in records:
        if record["type"] == "summary":
            scores.update(record["summary"]["update"])
    assert scores["ppl"] == pytest.approx(summary["test_ppl"], rel=1e-6) and scores["mc_ppl"] > 1
    assert scores["run_status"] == "finished" and scores["split"] == "test"
