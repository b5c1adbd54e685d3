"""The training loop: batching, the LR schedule, learning, divergence and reproducibility."""

from __future__ import annotations

import math

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

    small = TrainConfig(lr=1.0, lr_decay=0.5, decay_after=4).optim
    assert [epoch_lr(e, small) for e in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    medium = TrainConfig(lr=1.0, lr_decay=0.8, decay_after=6).optim
    assert [round(epoch_lr(e, medium), 6) for e in range(5, 10)] == [1, 1, 0.8, 0.64, 0.512]
    large = TrainConfig(lr=1.0, lr_decay=1 / 1.15, decay_after=14).optim
    assert epoch_lr(14, large) == 1 and abs(epoch_lr(55, large) - 1.15 ** -41) < 1e-12
    assert epoch_lr(30, TrainConfig(optimizer="ntasgd", lr=30).optim) == 30  # NT-ASGD keeps its rate


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
    total, count, hidden = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets in segments(data, 10):
            logits, hidden = model(inputs, hidden)
            total += nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    assert abs(mc1 - total / count) < 1e-9
    mc4 = evaluate_mc(model, data, 10, samples=4)
    assert math.isfinite(mc4) and abs(mc4 - evaluate(model, data, 10)) > 1e-6
