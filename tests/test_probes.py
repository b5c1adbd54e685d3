"""Stability probes: the engine's trace and the growth rate the report puts beside 1/keep."""

from __future__ import annotations

import pytest
import torch

from benchmark import GRU, LSTM
from benchmark.data import Corpus
from benchmark.model import LanguageModel
from benchmark.probes import growth_per_step, stability_probe
from benchmark.train import TrainConfig, train

H = 8


def test_trace_returns_the_carried_state_that_forward_hands_on():
    torch.manual_seed(0)
    lstm = LSTM(5, H, 2, scheme="variational", dropout=0.3).double()
    x = torch.randn(12, 3, 5, dtype=torch.double)
    torch.manual_seed(1)
    (out, (h_n, c_n)), states = lstm.trace(x)
    torch.manual_seed(1)
    ref_out, (ref_h, ref_c) = lstm(x)  # same masks: the trace is the same forward
    torch.testing.assert_close(out, ref_out)
    for layer in (0, 1):
        h, c = states[layer]
        assert h.shape == c.shape == (12, 3, H)
        torch.testing.assert_close(h[-1], h_n[layer])
        torch.testing.assert_close(c[-1], c_n[layer])
    torch.testing.assert_close(out, states[1][0] * lstm.last_masks[(1, "out")])  # the output is h, then `out`


def test_trace_sees_the_masked_state_that_the_output_hides():
    """Under TF-style state dropout the output is pre-mask; the carried state is masked."""
    torch.manual_seed(0)
    gru = GRU(5, H, scheme="state_dropout", dropout=0.5).double()
    (out, h_n), states = gru.trace(torch.randn(10, 2, 5, dtype=torch.double))
    h, c = states[0]
    assert c is None
    mask = gru.last_masks[(0, "state")]  # (B, H), 0 or 1/keep
    torch.testing.assert_close(h, out * mask)
    torch.testing.assert_close(h[-1], h_n[0])


def test_growth_per_step_recovers_a_geometric_rate():
    norms = 3.0 * 1.25 ** torch.arange(40, dtype=torch.float64)
    assert growth_per_step(norms) == pytest.approx(1.25, rel=1e-9)
    assert growth_per_step(torch.tensor([1.0, float("inf"), 4.0, 8.0, 16.0])) == pytest.approx(2.0, rel=1e-9)
    assert growth_per_step(torch.tensor([0.0, 0.0, 1.0])) is None


def _lm(cell: str, scheme: str, keep: float, **options) -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(30, H, H, 1, cell, scheme, 1 - keep, **options)
    with torch.no_grad():
        if cell == "gru":  # update gate saturated: h carried through z*h, nothing in between
            model.rnn.bias_ih_l0[H : 2 * H] = 10.0
            model.rnn.weight_hh_l0[H : 2 * H] = 0.0
        else:  # forget gate open: c carried
            model.rnn.bias_ih_l0[H : 2 * H] = 10.0
    return model


TOKENS = torch.randint(0, 30, (60, 4), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_probe_measures_the_gru_state_explosion_at_one_over_keep(keep):
    probe = stability_probe(_lm("gru", "state_dropout", keep), TOKENS)
    assert probe["growth_per_step"] == pytest.approx(1 / keep, rel=0.05)
    assert probe["cell_norm"] is None and len(probe["state_norm"]) == 60
    assert probe["state_norm"][-1] > 100 * probe["state_norm"][5]


def test_probe_finds_the_safe_schemes_flat_and_the_pre_1_4_lstm_growing():
    flat = {
        "gru variational": stability_probe(_lm("gru", "variational", 0.5), TOKENS)["growth_per_step"],
        "lstm state": stability_probe(_lm("lstm", "state_dropout", 0.5), TOKENS)["growth_per_step"],
        "lstm semeniuta": stability_probe(_lm("lstm", "semeniuta", 0.5), TOKENS)["growth_per_step"],
    }
    for case, rate in flat.items():
        assert rate < 1.1, f"{case} should not grow geometrically, measured x{rate:.3f} per step"
    cell = stability_probe(_lm("lstm", "state_dropout", 0.5, drop_cell=True), TOKENS)
    assert cell["growth_per_step"] == pytest.approx(2.0, rel=0.1)


def test_the_plan_names_the_state_a_mask_is_on_and_the_probe_grows_at_one_over_keep_exactly_there():
    """The figures draw 1/keep only where the run's plan puts its compounding mask on the state the
    probe reads (the GRU's h, the LSTM's memory c; issue 25). With the gate that passes that state on
    held open, the engine's probe grows by 1/keep in those cases and stays flat in the other."""
    for cell, options, read, grows in (("gru", {}, "h", True), ("lstm", {}, "c", False),
                                       ("lstm", {"drop_cell": True}, "c", True)):
        model = _lm(cell, "state_dropout", 0.5, **options)
        site = model.rnn.plan.describe()["sites"]["state"]
        assert site["compounds"] and (read in site["masks_carried"]) is grows, (cell, options)
        growth = stability_probe(model, TOKENS)["growth_per_step"]
        assert growth == pytest.approx(2.0, rel=0.1) if grows else growth < 1.1, (cell, options, growth)


def test_probes_leave_training_exactly_as_it_was():
    corpus = Corpus("toy", torch.randint(0, 30, (1200,)), torch.randint(0, 30, (400,)),
                    torch.randint(0, 30, (400,)), tuple(f"w{i}" for i in range(30)))
    runs = []
    for probe_steps in (0, 25):
        torch.manual_seed(0)
        model = LanguageModel(30, H, H, 1, "gru", "variational", 0.3)
        events: list[dict] = []
        train(model, corpus, TrainConfig(epochs=2, batch_size=4, eval_batch_size=4, bptt=10, log_interval=5,
                                         probe_steps=probe_steps), torch.device("cpu"), log=events.append,
              progress=False)
        runs.append(events)
    without, with_probes = runs
    probes = [e for e in with_probes if e["split"] == "probe"]
    assert [e["epoch"] for e in probes if e["at"] == "epoch"] == [1, 2] and len(probes[0]["state_norm"]) == 25
    # 1200 tokens / batch 4 / bptt 10: 30 steps an epoch; every step up to 16 is probed, then 32
    assert [e["step"] for e in probes if e["at"] == "step"] == [*range(1, 17), 32]
    assert [e["loss"] for e in without] == [e["loss"] for e in with_probes if e["split"] != "probe"]
