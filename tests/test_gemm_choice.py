"""The run-time choice of GEMM library (issue 24): measured once per shape and CPU, remembered in a file,
never drawing from the seed's generator, and every choice computing what the reference computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmark.engine import gemm, gemm_choice
from benchmark.model import LanguageModel

BIG = (1000, 1000, 1000)  # 2 GFLOP: above the floor, so a choice is measured


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache file of its own and no decision remembered in this process."""
    path = tmp_path / "choices.json"
    monkeypatch.setenv(gemm_choice.CACHE_ENV, str(path))
    monkeypatch.setattr(gemm_choice, "_chosen", {})
    monkeypatch.setattr(gemm_choice, "_loaded", set())
    return path


def counted(calls: dict, name: str, seconds: float):
    def run():
        calls[name] = calls.get(name, 0) + 1
        time.sleep(seconds)
    return run


def test_the_faster_backend_is_measured_once_and_remembered_in_the_file(fresh):
    calls: dict = {}
    made = []

    def candidates():
        made.append(1)
        return {"onednn": counted(calls, "onednn", 0.004), "blas": counted(calls, "blas", 0.0)}

    assert gemm_choice.pick("linear", BIG, torch.float32, candidates) == "blas"
    timed = gemm_choice.WARMUP + gemm_choice.ROUNDS
    assert calls == {"onednn": timed, "blas": timed} and len(made) == 1
    assert gemm_choice.pick("linear", BIG, torch.float32, candidates) == "blas"
    assert len(made) == 1, "a remembered shape is not measured again"
    saved = json.loads(fresh.read_text())[gemm_choice.cpu_identity()]
    (key, record), = saved.items()
    assert key.startswith("linear 1000x1000x1000 float32 threads=") and record["choice"] == "blas"
    assert record["ms"]["onednn"] > 3.0 > record["ms"]["blas"]


def test_another_shape_or_dtype_is_measured_on_its_own(fresh):
    made = []

    def candidates():
        made.append(1)
        return {"onednn": lambda: None, "blas": lambda: time.sleep(0.003)}

    for shape, dtype in [(BIG, torch.float32), ((1000, 1000, 999), torch.float32), (BIG, torch.bfloat16)]:
        assert gemm_choice.pick("linear", shape, dtype, candidates) == "onednn"
    assert len(made) == 3
    assert len(gemm_choice.choices()) == 3


def test_a_challenger_must_be_clearly_faster():
    """A near tie keeps the default, so measurement noise does not flip the choice between processes."""
    assert gemm_choice.decide({"onednn": 10.0, "blas": 9.8}) == "onednn"
    assert gemm_choice.decide({"onednn": 10.0, "blas": 9.0}) == "blas"
    assert gemm_choice.decide({"onednn": 9.0, "blas": 10.0}) == "onednn"


def test_a_product_too_small_to_time_takes_the_default_unmeasured(fresh):
    def candidates():
        raise AssertionError("a tiny product must not be measured")

    assert gemm_choice.pick("linear", (20, 64, 16), torch.float32, candidates) == "onednn"
    assert not fresh.exists()


def test_a_new_process_reuses_the_choice_without_measuring(fresh):
    gemm_choice.pick("weight_grad", BIG, torch.float32,
                     lambda: {"onednn": lambda: time.sleep(0.004), "blas": lambda: None})
    code = (f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"  # the thread count is in the key
            "from benchmark.engine import gemm_choice as g\n"
            "def boom(): raise SystemExit('measured again')\n"
            f"print(g.pick('weight_grad', {BIG}, torch.float32, boom))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, gemm_choice.CACHE_ENV: str(fresh)})
    assert (out.returncode, out.stdout.strip()) == (0, "blas"), out.stderr


def test_a_corrupt_cache_is_measured_again_and_rewritten(fresh, capsys):
    fresh.write_text("{not json")
    assert gemm_choice.pick("linear", BIG, torch.float32,
                            lambda: {"onednn": lambda: time.sleep(0.004), "blas": lambda: None}) == "blas"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable" in err[0] and str(fresh) in err[0]
    assert json.loads(fresh.read_text())[gemm_choice.cpu_identity()]


def test_an_unwritable_cache_warns_once_and_still_chooses(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(gemm_choice.CACHE_ENV, str(blocker / "choices.json"))  # its parent is a file
    monkeypatch.setattr(gemm_choice, "_chosen", {})
    monkeypatch.setattr(gemm_choice, "_loaded", set())
    monkeypatch.setattr(gemm_choice, "_warned", set())
    for n in (1000, 1001):
        assert gemm_choice.pick("linear", (n, 1000, 1000), torch.float32,
                                lambda: {"onednn": lambda: time.sleep(0.004), "blas": lambda: None}) == "blas"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot keep GEMM choices" in err[0]


def test_forced_backend_and_an_unknown_one():
    with gemm_choice.forced("blas"):
        assert gemm_choice.pick("linear", BIG, torch.float32, lambda: pytest.fail("forced: no measurement")) == "blas"
    with pytest.raises(ValueError, match="unknown GEMM backend 'mkl'; use one of onednn, blas, looped, batched"):
        with gemm_choice.forced("mkl"):
            pass


@pytest.mark.skipif(not gemm.use_onednn(torch.zeros(1)), reason="this torch has no oneDNN prepacked linear")
def test_measuring_draws_nothing_from_the_seed(fresh):
    """The first step measures its products (widths above the floor, the untied gates' ways among them);
    the second remembers them.
    Both see the same masks under one seed, so a measurement never shifts a run's random draws."""
    def once():
        torch.manual_seed(0)
        model = LanguageModel(50, 224, 224, 1, cell="lstm", scheme="variational", dropout=0.3).train()
        tokens = torch.randint(50, (12, 24))
        logits, _ = model(tokens)
        logits.sum().backward()
        return logits.detach(), model.rnn.weight_hh_l0.grad.clone()

    first = once()
    kinds = {key.split()[0] for key in gemm_choice.choices()}
    assert {"recurrent_gates", "gate_input_grads", "gate_weight_grads"} <= kinds, "the widths were chosen to be measured"
    second = once()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("way", gemm_choice.GATE_WAYS)
@pytest.mark.parametrize("gate_major", [False, True])
def test_untied_gates_weight_gradients_agree_both_ways(way, gate_major):
    """Each gate's weight gradient under its own input mask (Gal & Ghahramani's untied masks), looped
    or batched, is what autograd gives for the same projection (float64 gradcheck, both layouts)."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 5, dtype=torch.double, requires_grad=True)  # (T, B, D)
    w = torch.randn(4 * 6, 5, dtype=torch.double, requires_grad=True)
    masks = (torch.rand(4, 1, 2, 5, dtype=torch.double) > 0.3).double() / 0.7  # (G, T|1, B, D)
    with gemm_choice.forced(way):
        assert torch.autograd.gradcheck(lambda a, b: gemm.project(a, b, None, masks, 4, True, gate_major), (x, w))
        rows = torch.randn(4, 6, 6, dtype=torch.double)  # (G, T*B, H)
        inputs = torch.randn(3, 2, 5, dtype=torch.double)
        expected = torch.cat([rows[g].t() @ (inputs * masks[g]).reshape(6, 5) for g in range(4)])
        assert torch.allclose(gemm.gate_weight_grads(rows, inputs, masks), expected)
