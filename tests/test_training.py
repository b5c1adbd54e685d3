"""The training loop: batching, the LR schedule, learning, divergence and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.data import Corpus, batchify, segments, load_corpus
from benchmark.model import LanguageModel
from benchmark.train import TrainConfig, train

CPU = torch.device("cpu")


def test_batchify_makes_parallel_columns_and_segments_shift_targets():
    data = batchify(torch.arange(23), 4)  # 5 rows of 4 columns; the tail 20..22 is dropped
    assert data.shape == (5, 4)
    assert data[:, 1].tolist() == [5, 6, 7, 8, 9]  # column b continues the stream
    segs = list(segments(data, 3))
    assert [s[0].shape[0] for s in segs] == [3, 1]
    for inputs, targets in segs:
        assert torch.equal(targets[:-1], inputs[1:])


def test_zaremba_schedules_give_the_published_sequences():
    """Zaremba et al.'s code: lr * lr_decay ** max(i + 1 - max_epoch, 0) for 0-based epoch i."""
    from benchmark.optim import epoch_lr

    small = TrainConfig(lr=1.0, lr_decay=0.5, decay_after=4)
    assert [epoch_lr(e, small) for e in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    medium = TrainConfig(lr=1.0, lr_decay=0.8, decay_after=6)
    assert [round(epoch_lr(e, medium), 6) for e in range(5, 10)] == [1, 1, 0.8, 0.64, 0.512]
    large = TrainConfig(lr=1.0, lr_decay=1 / 1.15, decay_after=14)
    assert epoch_lr(14, large) == 1 and abs(epoch_lr(55, large) - 1.15 ** -41) < 1e-12
    assert epoch_lr(30, TrainConfig(optimizer="ntasgd", lr=30)) == 30  # NT-ASGD keeps its rate


def _run(corpus, seed=0, poison=False, **kw):
    torch.manual_seed(seed)
    model = LanguageModel(corpus.vocab_size, 16, 16, 1, "lstm", kw.pop("scheme", "none"), kw.pop("dropout", 0.0))
    if poison:
        with torch.no_grad():
            model.rnn.weight_hh_l0[0, 0] = math.nan
    events = []
    result = train(model, corpus, TrainConfig(batch_size=4, eval_batch_size=4, bptt=10, log_interval=10, **kw), CPU,
                   log=events.append, progress=False)
    return result, events


def test_training_learns_and_is_reproducible_from_the_seed(cache_dir):
    corpus = load_corpus("kjv", cache_dir=cache_dir, size=2000)
    result, events = _run(corpus, epochs=3)
    val = [e["ppl"] for e in events if e["split"] == "val"]
    train_ppl = [e["ppl"] for e in events if e.get("scope") == "epoch"]
    assert result.status == "finished" and len(val) == 3
    assert train_ppl[-1] < train_ppl[0] < corpus.vocab_size, "training perplexity should fall"
    assert min(val) < 0.7 * corpus.vocab_size, "validation should be far better than uniform"
    assert result.best_val_ppl == min(val)
    again, events_again = _run(corpus, epochs=3)
    assert [e["loss"] for e in events] == [e["loss"] for e in events_again]
    other, _ = _run(corpus, seed=1, epochs=3)
    assert other.best_val_ppl != result.best_val_ppl


def test_every_event_carries_the_run_store_fields(cache_dir):
    corpus = load_corpus("kjv", cache_dir=cache_dir, size=2000)
    _, events = _run(corpus, epochs=2)
    for e in events:
        assert {"epoch", "step", "split", "loss", "ppl"} <= e.keys()
        assert e["split"] in ("train", "val", "test")
    assert [e["split"] for e in events][-1] == "test"
    steps = [e["step"] for e in events]
    assert steps == sorted(steps)


def test_a_blow_up_ends_as_diverged_with_its_step():
    # A NaN in the recurrent weight poisons the first forward: the job must stop there, cleanly.
    corpus = Corpus("toy", torch.randint(0, 30, (800,)), torch.randint(0, 30, (200,)),
                    torch.randint(0, 30, (200,)), tuple(f"w{i}" for i in range(30)))
    result, events = _run(corpus, epochs=2, poison=True)
    assert result.status == "diverged"
    assert result.diverged_step == 1
    assert events[-1]["event"] == "diverged" and events[-1]["step"] == result.diverged_step
    assert result.test_ppl is None and not any(e["split"] == "test" for e in events)
    assert math.isnan(events[-1]["loss"])


def test_a_finite_but_absurd_perplexity_is_a_blow_up_not_a_result():
    # Every prediction on one token with a logit gap of 1e4: the loss is finite (~1e4 nats per
    # token), the perplexity astronomically worse than guessing. It must not end "finished".
    corpus = Corpus("toy", torch.randint(1, 30, (800,)), torch.randint(1, 30, (200,)),
                    torch.randint(1, 30, (200,)), tuple(f"w{i}" for i in range(30)))
    torch.manual_seed(0)
    model = LanguageModel(corpus.vocab_size, 16, 16, 1, "lstm", "none", 0.0)
    with torch.no_grad():
        model.decoder.bias[0] = 1e4
    events = []
    result = train(model, corpus, TrainConfig(epochs=2, batch_size=4, eval_batch_size=4, bptt=10, lr=1e-9),
                   CPU, log=events.append, progress=False)
    val = [e for e in events if e["split"] == "val"]
    assert math.isfinite(val[0]["loss"]) and val[0]["ppl"] > 10 * corpus.vocab_size
    assert result.status == "diverged" and result.best_val_ppl is None and result.test_ppl is None
    assert "vocabulary size" in events[-1]["what"]


def _toy_lm(scheme: str, dropout: float) -> tuple[LanguageModel, torch.Tensor]:
    torch.manual_seed(0)
    model = LanguageModel(40, 12, 12, 2, "lstm", scheme, dropout).double()
    data = batchify(torch.randint(0, 40, (600,)), 4)
    return model, data


def test_mc_dropout_without_dropout_is_the_deterministic_evaluation():
    from benchmark.train import evaluate, evaluate_mc

    model, data = _toy_lm("none", 0.5)
    assert abs(evaluate_mc(model, data, 10, samples=3) - evaluate(model, data, 10)) < 1e-9
    assert not model.training, "MC evaluation must leave the model in eval mode"


def test_mc_dropout_with_one_sample_is_one_stochastic_pass_and_more_samples_differ():
    from torch import nn

    from benchmark.train import evaluate, evaluate_mc

    model, data = _toy_lm("variational", 0.5)
    torch.manual_seed(7)
    mc1 = evaluate_mc(model, data, 10, samples=1)
    torch.manual_seed(7)
    model.train()
    model.embedding.eval()  # Gal's MC test: no word dropout
    total, count, hidden, store, seen = 0.0, 0, None, {}, []
    with torch.no_grad(), model.rnn.holding_masks(store):
        for inputs, targets in segments(data, 10):
            logits, hidden = model(inputs, hidden)
            seen.append({k: v.clone() for k, v in model.rnn.last_masks.items()})
            total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    assert abs(mc1 - total / count) < 1e-9
    assert len(seen) > 2 and all(torch.equal(m[k], seen[0][k]) for m in seen for k in seen[0]), \
        "one MC pass must keep its masks over the whole text"
    mc4 = evaluate_mc(model, data, 10, samples=4)
    assert math.isfinite(mc4) and abs(mc4 - evaluate(model, data, 10)) > 1e-6


def test_mc_dropout_turns_word_dropout_off_and_holds_only_masks_fixed_over_time():
    from benchmark.train import evaluate_mc

    model, data = _toy_lm("variational", 0.5)
    calls = []
    model.embedding.register_forward_hook(lambda module, args, out: calls.append(module.training))
    evaluate_mc(model, data, 10, samples=2)
    assert calls and not any(calls), "embedding dropout must be off in every MC pass"
    naive, _ = _toy_lm("naive", 0.5)
    with pytest.raises(ValueError, match="step-granularity"):  # the engine refuses to hold per-step masks
        with naive.rnn.holding_masks({}):
            pass
    assert math.isfinite(evaluate_mc(naive, data, 10, samples=2))  # ... and MC simply redraws them


def test_ar_and_tar_are_awd_lstm_penalties_on_the_last_training_forward():
    torch.manual_seed(0)
    model = LanguageModel(40, 12, 12, 2, "lstm", "weightdrop", {"x": 0.3, "w_hh": 0.5, "out": 0.4})
    model.train()
    model(torch.randint(0, 40, (9, 3)))
    out, raw = model.last_output, model.rnn.last_raw_output  # (T, B, H) each
    assert not torch.equal(out, raw), "the output is the raw output with the `out` mask applied"
    expected = 2.0 * out.pow(2).mean() + 1.0 * (raw[1:] - raw[:-1]).pow(2).mean()
    torch.testing.assert_close(model.activation_regularization(2.0, 1.0), expected)
    assert model.activation_regularization(0.0, 0.0).item() == 0.0


def test_ntasgd_switches_to_averaging_when_validation_stalls_and_variable_bptt_varies_segments(cache_dir):
    """A learning rate far too high stalls validation at once; NT-ASGD must then start averaging."""
    corpus = load_corpus("kjv", cache_dir=cache_dir, size=2000)
    torch.manual_seed(0)
    model = LanguageModel(corpus.vocab_size, 16, 16, 1, "lstm", "weightdrop", 0.3)
    events = []
    cfg = TrainConfig(epochs=5, batch_size=4, eval_batch_size=4, bptt=12, variable_bptt=True, optimizer="ntasgd",
                      lr=30.0, clip=0.25, nonmono=1, log_interval=1, ar=2.0, tar=1.0)
    result = train(model, corpus, cfg, CPU, log=events.append, progress=False)
    assert result.status == "finished"
    switched = [e for e in events if e.get("event") == "averaging"]
    assert len(switched) == 1
    steps_per_epoch = [e["step"] for e in events if e.get("scope") == "epoch"]
    lengths = {b - a for a, b in zip([0, *steps_per_epoch], steps_per_epoch)}
    assert len(lengths) > 1, "variable BPTT should change how many segments an epoch has"


def test_a_model_copies_after_a_training_forward():
    import copy

    torch.manual_seed(0)
    model = LanguageModel(40, 12, 12, 2, "gru", "weightdrop", 0.3)
    model.train()
    model(torch.randint(0, 40, (5, 2)))
    clone = copy.deepcopy(model)
    assert clone.last_output is None and clone.rnn.last_raw_output is None
    for a, b in zip(model.state_dict().values(), clone.state_dict().values()):
        assert torch.equal(a, b)


def test_fixed_segments_keep_the_epoch_rate_even_for_the_short_last_one():
    """Only AWD-LSTM's variable BPTT scales the rate by segment length (Zaremba's code does not)."""
    corpus = Corpus("toy", torch.randint(0, 30, (4 * 26,)), torch.randint(0, 30, (200,)),
                    torch.randint(0, 30, (200,)), tuple(f"w{i}" for i in range(30)))
    torch.manual_seed(0)
    model = LanguageModel(30, 8, 8, 1, "lstm", "none", 0.0)
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.SGD.step = spy
    try:  # 25 rows of BPTT 10: segments of 10, 10 and 5
        train(model, corpus, TrainConfig(epochs=1, batch_size=4, eval_batch_size=4, bptt=10, lr=0.7), CPU,
              progress=False)
    finally:
        torch.optim.SGD.step = original
    assert seen == [0.7, 0.7, 0.7]


def _scored_twice(optimizer: str) -> dict[str, tuple]:
    """The same training (seed 0) twice, testing ``best`` then ``last`` weights, on a corpus
    whose test split is its validation split: a test then repeats one epoch's validation exactly."""
    g = torch.Generator().manual_seed(0)
    valid = torch.randint(0, 30, (200,), generator=g)
    # Random text: only the training split can be memorised, so validation is best early on.
    corpus = Corpus("toy", torch.randint(0, 30, (800,), generator=g), valid, valid.clone(),
                    tuple(f"w{i}" for i in range(30)))
    out = {}
    for weights in ("best", "last"):
        torch.manual_seed(0)
        model = LanguageModel(corpus.vocab_size, 16, 16, 1, "lstm", "none", 0.0)
        events = []
        cfg = TrainConfig(epochs=4, batch_size=4, eval_batch_size=4, bptt=10, optimizer=optimizer, nonmono=1,
                          test_weights=weights)
        result = train(model, corpus, cfg, CPU, log=events.append, progress=False)
        val = [e["loss"] for e in events if e["split"] == "val"]
        (test,) = [e for e in events if e["split"] == "test"]
        out[weights] = (result, val, test, events)
    assert out["best"][1] == out["last"][1], "the setting must change only which weights are tested"
    return out


def test_test_weights_scores_the_best_validation_or_the_last_epochs_weights():
    """main.lua, Gal's and drop-rnn's scripts test the weights after the last epoch; AWD-LSTM
    reloads its best-validation model. ``train.test_weights`` picks, and the result says which."""
    runs = _scored_twice("sgd")
    val = runs["best"][1]
    best_epoch = val.index(min(val)) + 1
    assert best_epoch < len(val), "precondition: validation must be best before the last epoch"
    best, _, best_event, _ = runs["best"]
    last, _, last_event, _ = runs["last"]
    assert best_event["loss"] == min(val) and last_event["loss"] == val[-1] and best.test_ppl != last.test_ppl
    assert (best.test_weights, best.test_epoch) == ("best", best_epoch)
    assert (last.test_weights, last.test_epoch) == ("last", len(val))
    assert (best_event["weights"], best_event["weights_epoch"]) == ("best", best_epoch)
    assert (last_event["weights"], last_event["weights_epoch"]) == ("last", len(val))


def test_the_last_weights_of_ntasgd_are_its_running_average_as_validation_scored_them():
    runs = _scored_twice("ntasgd")
    result, val, test, events = runs["last"]
    assert any(e.get("event") == "averaging" for e in events), "precondition: NT-ASGD must have switched"
    assert test["loss"] == val[-1] and result.test_epoch == len(val)


def test_an_unknown_test_weights_is_refused_before_training():
    corpus = Corpus("toy", torch.randint(0, 30, (800,)), torch.randint(0, 30, (200,)),
                    torch.randint(0, 30, (200,)), tuple(f"w{i}" for i in range(30)))
    model = LanguageModel(corpus.vocab_size, 16, 16, 1, "lstm", "none", 0.0)
    with pytest.raises(ValueError, match="unknown test_weights 'final'; choose one of: best, last"):
        train(model, corpus, TrainConfig(test_weights="final"), CPU, progress=False)
