"""The synthetic HMM language: an exact forward algorithm, a true floor, determinism, the cache."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from benchmark.data import DataError, load_corpus
from benchmark.data.corpus import EOS, UNK
from benchmark.data.synthetic import HMM, bayes_ppl, forward_log_probs, make_hmm, predictive, sample

GENERATOR = dict(num_states=12, num_topics=3, vocab_size=40, words_per_state=5, successors=2, eos_prob=0.1,
                 topic_stay=0.9, zipf=1.0, emission_alpha=0.5, transition_alpha=1.0)
TINY = dict(GENERATOR, train_tokens=3000, valid_tokens=1500, test_tokens=1500)


def tiny_hmm(seed: int = 0) -> HMM:
    """3 states, 4 words, dense: every path has positive probability."""
    g = torch.Generator().manual_seed(seed)
    rows = lambda *shape: (lambda x: x / x.sum(-1, keepdim=True))(torch.rand(*shape, generator=g, dtype=torch.float64) + 0.05)  # noqa: E731
    return HMM(rows(3), rows(3, 3), rows(3, 4))


def brute_force_prob(hmm: HMM, xs: list[int]) -> float:
    """p(x_1..x_n) by summing the joint over all S^n state paths."""
    total = 0.0
    for path in itertools.product(range(hmm.num_states), repeat=len(xs)):
        p = hmm.start[path[0]].item() * hmm.emit[path[0], xs[0]].item()
        for t in range(1, len(xs)):
            p *= hmm.trans[path[t - 1], path[t]].item() * hmm.emit[path[t], xs[t]].item()
        total += p
    return total


def test_forward_matches_brute_force_enumeration():
    hmm = tiny_hmm()
    xs = [2, 0, 3, 3, 1, 0]
    logp = forward_log_probs(hmm, torch.tensor(xs))
    prefix = [brute_force_prob(hmm, xs[: t + 1]) for t in range(len(xs))]
    # Each conditional is the ratio of consecutive prefix probabilities.
    expected = [math.log(prefix[0])] + [math.log(prefix[t] / prefix[t - 1]) for t in range(1, len(xs))]
    assert logp.dtype == torch.float64
    assert torch.allclose(logp, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert math.isclose(logp.sum().item(), math.log(brute_force_prob(hmm, xs)), abs_tol=1e-12)
    assert math.isclose(bayes_ppl(hmm, torch.tensor(xs)), math.exp(-sum(expected) / len(xs)), rel_tol=1e-12)


def test_predictive_distributions_match_brute_force():
    hmm = tiny_hmm(1)
    xs = [1, 1, 0, 2, 3, 2]
    pred = predictive(hmm, torch.tensor(xs))
    assert torch.allclose(pred.sum(1), torch.ones(len(xs), dtype=torch.float64), atol=1e-12)
    for t in range(len(xs)):
        before = brute_force_prob(hmm, xs[:t]) if t else 1.0
        for w in range(4):
            assert math.isclose(pred[t, w].item(), brute_force_prob(hmm, xs[:t] + [w]) / before, abs_tol=1e-12)


def test_forward_is_stable_over_long_streams():
    c = load_corpus("synthetic", **{**TINY, "test_tokens": 20_000})
    assert math.isfinite(c.bayes_test_ppl) and 1.0 < c.bayes_test_ppl < c.vocab_size


def score(pred: torch.Tensor, tokens: torch.Tensor) -> float:
    """Perplexity of next-word distributions ``pred`` (N, V) on ``tokens``."""
    return math.exp(-pred[torch.arange(len(tokens)), tokens].log().mean().item())


def test_the_true_predictor_reaches_the_floor_and_others_do_not():
    c = load_corpus("synthetic", seed=3, **TINY)
    hmm = make_hmm(3, **GENERATOR)
    test, V = c.test, c.vocab_size
    true = predictive(hmm, test)
    assert math.isclose(score(true, test), c.bayes_test_ppl, rel_tol=1e-9)
    # Other predictors, fitted on the training split, all score worse.
    counts = torch.bincount(c.train, minlength=V).double() + 0.1
    unigram = (counts / counts.sum()).expand(len(test), V)
    big = torch.full((V, V), 0.1, dtype=torch.float64)
    big.index_put_((c.train[:-1], c.train[1:]), torch.ones(len(c.train) - 1, dtype=torch.float64), accumulate=True)
    bigram = (big / big.sum(1, keepdim=True))[torch.cat([torch.tensor([0]), test[:-1]])]
    blurred = 0.9 * true + 0.1 * unigram
    sharpened = true ** 1.5 / (true ** 1.5).sum(1, keepdim=True)
    flattened = true ** 0.8 / (true ** 0.8).sum(1, keepdim=True)
    floor = c.bayes_test_ppl
    for name, pred in [("unigram", unigram), ("bigram", bigram), ("blurred", blurred), ("sharpened", sharpened),
                       ("flattened", flattened)]:
        assert score(pred, test) > floor * 1.01, name
    assert score(bigram, test) < score(unigram, test)  # there is structure to learn


def test_same_seed_same_corpus_other_seed_other_corpus(tmp_path):
    a = load_corpus("synthetic", seed=1, **TINY)
    b = load_corpus("synthetic", seed=1, **TINY)
    other = load_corpus("synthetic", seed=2, **TINY)
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert a.bayes_test_ppl == b.bayes_test_ppl and a.itos == b.itos
    assert not torch.equal(a.train, other.train) and a.bayes_test_ppl != other.bayes_test_ppl
    assert not torch.equal(a.valid, a.test[: len(a.valid)])  # the splits are distinct streams


def test_the_caller_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_corpus("synthetic", seed=5, **TINY)
    assert torch.equal(torch.rand(3), expected)


def test_cached_with_its_floor(tmp_path):
    a = load_corpus("synthetic", cache_dir=tmp_path, seed=4, **TINY)
    (path,) = tmp_path.glob("synthetic-*.pt")
    stamp = path.stat().st_mtime_ns
    b = load_corpus("synthetic", cache_dir=tmp_path, seed=4, **TINY)
    assert path.stat().st_mtime_ns == stamp
    assert torch.equal(a.test, b.test) and b.bayes_test_ppl == a.bayes_test_ppl is not None
    assert b.bayes_valid_ppl == a.bayes_valid_ppl is not None
    assert "Bayes-optimal ppl" in b.describe()
    load_corpus("synthetic", cache_dir=tmp_path, seed=4, **{**TINY, "words_per_state": 6})
    assert len(list(tmp_path.glob("synthetic-*.pt"))) == 2


def test_looks_like_sentences_over_its_own_vocabulary():
    c = load_corpus("synthetic", seed=0, **TINY)
    eos, unk = c.itos.index(EOS), c.itos.index(UNK)
    assert c.vocab_size == TINY["vocab_size"] and not (c.train == unk).any()
    sentences = (c.train == eos).sum().item()
    assert 3000 / 30 < sentences < 3000 / 4  # mean length ~1/eos_prob
    assert c.train.max() < c.vocab_size and c.train.min() >= 0


def test_sampling_follows_the_generator():
    hmm = tiny_hmm(2)
    xs = sample(hmm, 20_000, seed=0)
    # Marginal word frequencies approach those of the chain run from its start distribution.
    pred = predictive(hmm, xs[:1])  # p(x_1)
    freq = torch.bincount(xs, minlength=4).double() / len(xs)
    stationary = hmm.start.clone()
    for _ in range(200):
        stationary = stationary @ hmm.trans
    assert torch.allclose(freq, stationary @ hmm.emit, atol=0.02) and pred.shape == (1, 4)


@pytest.mark.parametrize("bad", [dict(num_states=10, num_topics=3), dict(eos_prob=0.0),
                                 dict(words_per_state=100), dict(train_tokens=10)])
def test_bad_options_are_one_line_errors(bad):
    with pytest.raises(DataError) as e:
        load_corpus("synthetic", **{**TINY, **bad})
    assert "\n" not in str(e.value) and "data." in str(e.value)
