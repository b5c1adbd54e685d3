"""The language model's ``init`` and ``last_layer_size`` (AWD-LSTM's model.py, as data).

``init=awd`` is salesforce/awd-lstm-lm's ``init_weights``: embedding and decoder weights
U(-init_scale, init_scale), decoder bias 0, recurrent layers at torch's default
U(-1/sqrt(H_l), 1/sqrt(H_l)). ``last_layer_size`` narrows the last recurrent layer so that
the decoder can be tied to the embedding; the carried state is then per-layer lists, which
truncated BPTT detaches, checkpoints save, and the probes read.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.model import INITS, LanguageModel, ModelConfig, detach_hidden
from benchmark.probes import stability_probe
from runners import build

V = 30


def awd_like(cell="lstm", **kw):
    """A tiny AWD-LSTM shape: 3 layers 12, 12, 6 with a 6-wide embedding."""
    kw = {"init": "awd", "last_layer_size": 6, **kw}
    return LanguageModel(V, 6, 12, 3, cell, "weightdrop",
                         {"emb": 0.1, "x": 0.4, "between": 0.25, "w_hh": 0.5, "out": 0.4}, **kw)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_awd_init_keeps_the_recurrent_default_and_zeroes_the_decoder_bias(cell):
    torch.manual_seed(0)
    model = awd_like(cell, init_scale=0.05)
    assert model.rnn.layer_sizes == (12, 12, 6)
    for layer, width in enumerate((12, 12, 6)):
        bound = 1 / math.sqrt(width)
        values = torch.cat([p.flatten() for p in model.rnn._layer_params(layer)])
        assert values.abs().max() <= bound and values.abs().max() > 0.8 * bound  # not init_scale
    assert torch.equal(model.decoder.bias, torch.zeros(V))
    assert model.embedding.embedding.weight.abs().max() <= 0.05
    assert model.decoder.weight.abs().max() <= 0.05
    assert model.decoder.weight.shape == (V, 6)


def test_uniform_init_is_unchanged():
    torch.manual_seed(0)
    model = LanguageModel(V, 8, 8, 2, "lstm", "naive", 0.2)
    torch.manual_seed(0)
    explicit = LanguageModel(V, 8, 8, 2, "lstm", "naive", 0.2, init="uniform", last_layer_size=8)
    for (name, a), b in zip(model.state_dict().items(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert all(p.abs().max() <= 0.1 for p in model.parameters())
    assert model.decoder.bias.abs().max() > 0  # uniform, not zero
    assert isinstance(model.rnn.hidden_size, int)  # last_layer_size == hidden_size: the stacked form


def test_unknown_init_and_bad_last_layer_size_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^unknown init 'xavier'; choose one of: uniform, awd$"):
        LanguageModel(V, 8, 8, 2, init="xavier")
    with pytest.raises(ValueError, match="^last_layer_size must be a positive integer or None"):
        LanguageModel(V, 8, 8, 2, last_layer_size=0)
    assert INITS == ("uniform", "awd") and ModelConfig().init == "uniform" and ModelConfig().last_layer_size is None


def test_tie_weights_reads_the_last_layers_width():
    torch.manual_seed(0)
    model = awd_like(tie_weights=True)
    assert model.decoder.weight is model.embedding.embedding.weight
    logits, _ = model(torch.randint(0, V, (5, 2)))
    assert logits.shape == (5, 2, V)
    with pytest.raises(ValueError, match=r"tie_weights needs emb_size == the last layer's width .* got 6 and 12$"):
        LanguageModel(V, 6, 12, 3, tie_weights=True)
    with pytest.raises(ValueError, match="got 6 and 7$"):
        LanguageModel(V, 6, 12, 3, tie_weights=True, last_layer_size=7)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_ragged_hidden_state_detaches_and_survives_a_checkpoint_round_trip(cell):
    torch.manual_seed(0)
    model = awd_like(cell)
    tokens = torch.randint(0, V, (7, 3))
    _, hidden = model(tokens)
    hs = hidden[0] if cell == "lstm" else hidden
    assert isinstance(hs, list) and [tuple(h.shape) for h in hs] == [(3, 12), (3, 12), (3, 6)]
    assert all(h.requires_grad for h in hs)
    detached = detach_hidden(hidden)
    assert type(detached) is type(hidden)
    flat = [*detached[0], *detached[1]] if cell == "lstm" else detached
    assert all(not h.requires_grad for h in flat)
    buf = io.BytesIO()
    torch.save({"hidden": detached}, buf)  # as a checkpoint holds Progress.hidden
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["hidden"]
    flat_loaded = [*loaded[0], *loaded[1]] if cell == "lstm" else loaded
    assert all(torch.equal(a, b) for a, b in zip(flat, flat_loaded, strict=True))
    model.eval()
    with torch.no_grad():
        a, _ = model(tokens, detached)
        b, _ = model(tokens, loaded)  # the loaded state carries on exactly
    assert torch.equal(a, b)
    # The stacked form still detaches as before.
    stacked = (torch.ones(2, 3, 4, requires_grad=True) * 2, torch.ones(2, 3, 4, requires_grad=True) * 3)
    out = detach_hidden(stacked)
    assert isinstance(out, tuple) and not out[0].requires_grad and torch.equal(out[1], stacked[1].detach())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stability_probe_runs_on_a_ragged_model(cell):
    torch.manual_seed(0)
    model = awd_like(cell)
    result = stability_probe(model, torch.randint(0, V, (20, 2)))
    assert len(result["state_norm"]) == 20 and all(math.isfinite(v) for v in result["state_norm"])
    assert (result["cell_norm"] is None) == (cell == "gru")
    assert result["max_state"] > 0 and result["growth_per_step"] is not None


def _model_cfg(**model):
    base = {"cell": "lstm", "emb_size": 6, "hidden_size": 12, "num_layers": 3, "init_scale": 0.1,
            "tie_weights": False}
    return OmegaConf.create({"model": {**base, **model}})


def test_check_model_knows_init_and_last_layer_size():
    build.check_model(_model_cfg(init="awd", last_layer_size=6, tie_weights=True))
    build.check_model(_model_cfg())
    with pytest.raises(build.ConfigError) as caught:
        build.check_model(_model_cfg(init="xavier"))
    assert str(caught.value) == "model.init=xavier is unknown; choose one of: uniform, awd"
    with pytest.raises(build.ConfigError) as caught:
        build.check_model(_model_cfg(tie_weights=True))
    assert str(caught.value) == ("model.tie_weights needs model.emb_size == the last layer's width "
                                 "(model.hidden_size), got 6 and 12")
    with pytest.raises(build.ConfigError, match=r"\(model.last_layer_size\), got 6 and 7$"):
        build.check_model(_model_cfg(tie_weights=True, last_layer_size=7))
    with pytest.raises(build.ConfigError, match="^model.last_layer_size=0 must be at least 1$"):
        build.check_model(_model_cfg(last_layer_size=0))
    with pytest.raises(build.ConfigError, match="^model.last_layer_size=abc must be an integer or null$"):
        build.check_model(_model_cfg(last_layer_size="abc"))


def test_training_interrupted_mid_epoch_resumes_a_ragged_model_exactly():
    """Progress carries the per-layer state lists; a checkpoint (torch.save/load) resumes them exactly."""
    from benchmark.data import Corpus
    from benchmark.train import TrainConfig, train

    corpus = Corpus("toy", torch.randint(0, V, (600,)), torch.randint(0, V, (200,)),
                    torch.randint(0, V, (200,)), tuple(f"w{i}" for i in range(V)))
    cfg = TrainConfig(epochs=1, batch_size=4, eval_batch_size=4, bptt=10, log_interval=1)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    events: list[dict] = []
    train(awd_like(tie_weights=True), corpus, cfg, cpu, log=events.append, progress=False)

    torch.manual_seed(0)
    saved: list[bytes] = []
    first: list[dict] = []

    def keep(state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        saved.append(buf.getvalue())

    steps = iter(range(100))
    result = train(awd_like(tie_weights=True), corpus, cfg, cpu, log=first.append, progress=False,
                   on_checkpoint=keep, should_stop=lambda: next(steps) == 3)
    assert result.status == "interrupted"
    state = torch.load(io.BytesIO(saved[-1]), weights_only=True)
    hidden = state["progress"]["hidden"]
    assert [tuple(h.shape) for h in hidden[0]] == [(4, 12), (4, 12), (4, 6)]
    rest: list[dict] = []
    train(awd_like(tie_weights=True), corpus, cfg, cpu, log=rest.append, progress=False, resume=state)
    losses = [e["loss"] for e in events if e["split"] == "train" and e["scope"] == "interval"]
    resumed = [e["loss"] for e in first + rest if e["split"] == "train" and e["scope"] == "interval"]
    assert resumed == losses
