"""A synthetic language with a known optimum: text sampled from a hidden Markov model.

Why: on real text nobody knows how far a model is from the best possible perplexity,
so "dropout closes the gap" can only be measured between models. Text sampled from a
hidden Markov model (HMM) has an exactly computable likelihood (the forward algorithm;
Rabiner 1989), so the Bayes-optimal perplexity of the test split,

    exp( -1/N * sum_t log p(x_t | x_1..x_{t-1}) ),

with each word predicted by the true generator from the *whole* preceding test stream,
is known. No model can beat it in expectation; over-fitting shows as the distance above
it, and a regulariser's effect as how much of that distance it removes.

The generator is built to be learnable *and* over-fittable; a first version (32
states, 2,000 Zipf words, each state emitting broadly) was nearly all noise: LSTMs sat
40 points above the floor with and without dropout alike. Here:

- **Topics.** The states form ``num_topics`` groups, each with its own end state that
  emits ``<eos>``. After an ``<eos>`` the next sentence stays in the topic with
  probability ``topic_stay``, so the topic carries across sentences: structure beyond
  any n-gram window that a recurrent state can hold.
- **Sparse, peaked emissions.** Every other state emits from only ``words_per_state``
  words, drawn with Zipf-law (exponent ``zipf``) preference for frequent words, so
  function-like words are shared by many states (the state is ambiguous from one word)
  and rare words are specific; the probabilities within a state are Dirichlet
  (``emission_alpha``; small is peaked).
- **Sparse transitions.** A state moves to its end state with probability
  ``eos_prob`` (sentences of ~1/eos_prob words) or else to one of ``successors`` states
  of its topic, weights Dirichlet(``transition_alpha``): a grammar-like skeleton.
- **Small training split** relative to the vocabulary, so a large model can memorise
  it: the regime where dropout matters.

Each split is an independent sample started from the start distribution (a new topic,
uniformly, as after an ``<eos>``), so the floor of each split is computed from its own
first token on. The language model evaluated by ``train.py`` batches the stream into
columns and never predicts a column's first token; the difference to the floor is a
handful of tokens in ten thousand.

The vocabulary is the generator's own (``<eos>``, ``<unk>`` (never emitted, kept so
every corpus has one) and ``w0``, ``w1``, ...): no word of valid/test is mapped to
``<unk>``, so a model's perplexity and the floor score exactly the same events.
Everything is a deterministic function of ``seed`` and the options, and cached.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.data.corpus import EOS, UNK, Corpus, DataError, cached

# Bump when the generator changes, so caches of an older generator are not reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class HMM:
    """A discrete HMM over word ids: ``start`` (S,), ``trans`` (S, S), ``emit`` (S, V), rows sum to 1, float64."""

    start: torch.Tensor
    trans: torch.Tensor
    emit: torch.Tensor

    @property
    def num_states(self) -> int:
        return self.start.numel()


def forward_log_probs(hmm: HMM, tokens: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_1..x_{t-1}) for every t, by the normalised forward recursion (float64).

    ``alpha`` is the filtering distribution p(state_t | x_1..x_t); normalising it every
    step (Rabiner 1989, "scaling") keeps it in range over any length, and the
    normalisers are exactly the conditional probabilities of each word.
    """
    tokens = tokens.long()
    columns = hmm.emit.T[tokens]  # (N, S): p(x_t | state) for every t, gathered at once
    out = torch.empty(tokens.numel(), dtype=torch.float64)
    prior = hmm.start
    for t in range(tokens.numel()):
        joint = prior * columns[t]
        c = joint.sum()
        out[t] = c
        prior = (joint / c) @ hmm.trans
    return out.log()


def predictive(hmm: HMM, tokens: torch.Tensor) -> torch.Tensor:
    """(N, V): p(x_t = w | x_1..x_{t-1}) for every t: the true next-word distributions."""
    tokens = tokens.long()
    priors = torch.empty(tokens.numel(), hmm.num_states, dtype=torch.float64)
    prior = hmm.start
    for t in range(tokens.numel()):
        priors[t] = prior
        joint = prior * hmm.emit[:, tokens[t]]
        prior = (joint / joint.sum()) @ hmm.trans
    return priors @ hmm.emit


def bayes_ppl(hmm: HMM, tokens: torch.Tensor) -> float:
    """The true generator's perplexity on ``tokens``: the floor no model beats in expectation."""
    return math.exp(-forward_log_probs(hmm, tokens).mean().item())


def _dirichlet(alpha: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Dirichlet(alpha) rows over the last dimension, from the (seeded, forked) global RNG."""
    g = torch.distributions.Gamma(torch.full(shape, float(alpha), dtype=torch.float64), 1.0).sample()
    g = g.clamp_min(1e-300)
    return g / g.sum(-1, keepdim=True)


def make_hmm(seed: int, num_states: int, vocab_size: int, num_topics: int, words_per_state: int,
             successors: int, eos_prob: float, topic_stay: float, zipf: float, emission_alpha: float,
             transition_alpha: float) -> HMM:
    """The random generator described in the module docstring; word ids index ``vocabulary(vocab_size)``."""
    per_topic = num_states // num_topics
    content = per_topic - 1  # content states per topic; the last state of each topic emits <eos>
    n_words = vocab_size - 2  # ids 0, 1 are <eos>, <unk>
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Emissions: each content state has a sparse support of Zipf-preferred words.
        zipf_weights = 1.0 / torch.arange(1, n_words + 1, dtype=torch.float64) ** zipf
        emit = torch.zeros(num_states, vocab_size, dtype=torch.float64)
        trans = torch.zeros(num_states, num_states, dtype=torch.float64)
        topic_start = torch.zeros(num_topics, num_states, dtype=torch.float64)
        for k in range(num_topics):
            base = k * per_topic
            end = base + content
            emit[end, 0] = 1.0
            starts = base + torch.randperm(content)[: min(successors, content)]
            topic_start[k, starts] = _dirichlet(transition_alpha, (starts.numel(),))
            for i in range(base, end):
                words = torch.multinomial(zipf_weights, words_per_state, replacement=False) + 2
                emit[i, words] = _dirichlet(emission_alpha, (words_per_state,))
                nxt = base + torch.randperm(content)[: min(successors, content)]
                trans[i, nxt] = (1.0 - eos_prob) * _dirichlet(transition_alpha, (nxt.numel(),))
                trans[i, end] += eos_prob
        for k in range(num_topics):
            end = k * per_topic + content
            others = [j for j in range(num_topics) if j != k]
            trans[end] = topic_stay * topic_start[k]
            if others:
                trans[end] += (1.0 - topic_stay) * topic_start[others].mean(0)
            else:
                trans[end] = topic_start[k]
        start = topic_start.mean(0)
    return HMM(start, trans, emit)


def sample(hmm: HMM, n: int, seed: int) -> torch.Tensor:
    """``n`` word ids from the chain started at ``hmm.start``; deterministic in ``seed``.

    The state walk is sequential, so it runs over Python lists of each state's few
    successors (bisect on cumulative weights); emissions are then drawn all at once.
    """
    g = torch.Generator().manual_seed(seed)
    u_state = torch.rand(n, generator=g, dtype=torch.float64).tolist()
    u_word = torch.rand(n, 1, generator=g, dtype=torch.float64)

    def table(row: torch.Tensor) -> tuple[list[int], list[float]]:
        idx = row.nonzero().flatten()
        return idx.tolist(), row[idx].cumsum(0).tolist()

    tables = [table(hmm.trans[s]) for s in range(hmm.num_states)]
    start_ids, start_cum = table(hmm.start)
    states = [0] * n
    ids, cum = start_ids, start_cum
    for t in range(n):
        j = min(bisect.bisect_right(cum, u_state[t] * cum[-1]), len(ids) - 1)
        s = ids[j]
        states[t] = s
        ids, cum = tables[s]
    # Emissions: each state's support (padded) and cumulative weights.
    width = int((hmm.emit > 0).sum(1).max())
    support = torch.zeros(hmm.num_states, width, dtype=torch.int64)
    cumw = torch.full((hmm.num_states, width), 2.0, dtype=torch.float64)
    for s in range(hmm.num_states):
        idx = hmm.emit[s].nonzero().flatten()
        support[s, : idx.numel()] = idx
        cumw[s, : idx.numel()] = hmm.emit[s, idx].cumsum(0) / hmm.emit[s, idx].sum()
    st = torch.tensor(states, dtype=torch.int64)
    j = torch.searchsorted(cumw[st], u_word, right=True).clamp_max(width - 1).squeeze(1)
    # Padded slots have cumulative weight 2 > any u, so j never lands on them unless rounding
    # leaves u above the last real cumulative weight; step back to the last real word then.
    counts = (hmm.emit > 0).sum(1)[st]
    j = torch.minimum(j, counts - 1)
    return support[st, j]


def vocabulary(vocab_size: int) -> tuple[str, ...]:
    return (EOS, UNK, *(f"w{i}" for i in range(vocab_size - 2)))


def load(cache_dir: Path | None = None, seed: int = 0, num_states: int = 128, vocab_size: int = 1000,
         num_topics: int = 8, words_per_state: int = 16, successors: int = 3, eos_prob: float = 0.1,
         topic_stay: float = 0.9, zipf: float = 0.7, emission_alpha: float = 0.3, transition_alpha: float = 1.0,
         train_tokens: int = 20_000, valid_tokens: int = 5_000, test_tokens: int = 5_000) -> Corpus:
    """Corpus ``synthetic``: HMM text with ``bayes_valid_ppl`` and ``bayes_test_ppl`` set.

    The defaults were tuned so that a 1x256 LSTM over-fits (seed 0: floor 15.2 on valid,
    14.9 on test; unigram 205, interpolated bigram 58; a 1x256 LSTM trained with Adam
    reaches 27.1 without dropout, its training perplexity falling below the floor, and
    26.1 and still falling with naive dropout 0.5 after 18 epochs). With only ~30 SGD
    steps per epoch, Zaremba's SGD (lr 1, batch 20) is far too slow here (193 after 18
    epochs): train it with ``train.optimizer=adam train.lr=0.002``.
    """
    per_topic = num_states // max(num_topics, 1)
    checks = [
        (num_topics >= 1 and num_states % num_topics == 0 and per_topic >= 2,
         f"data.num_states={num_states} must be a multiple of data.num_topics={num_topics}, with at least 2 "
         "states per topic (one of them emits <eos>)"),
        (vocab_size >= 3, f"data.vocab_size={vocab_size} must be at least 3"),
        (1 <= words_per_state <= vocab_size - 2,
         f"data.words_per_state={words_per_state} must be between 1 and vocab_size - 2 = {vocab_size - 2}"),
        (successors >= 1, f"data.successors={successors} must be at least 1"),
        (0.0 < eos_prob < 1.0, f"data.eos_prob={eos_prob} must be in (0, 1)"),
        (0.0 <= topic_stay <= 1.0, f"data.topic_stay={topic_stay} must be in [0, 1]"),
        (emission_alpha > 0 and transition_alpha > 0, "data.emission_alpha and data.transition_alpha must be > 0"),
        (zipf >= 0, f"data.zipf={zipf} must be >= 0"),
        (min(train_tokens, valid_tokens, test_tokens) >= 100, "data.train/valid/test_tokens must each be >= 100"),
    ]
    for ok, message in checks:
        if not ok:
            raise DataError(message)
    params = dict(num_states=num_states, vocab_size=vocab_size, num_topics=num_topics,
                  words_per_state=words_per_state, successors=successors, eos_prob=eos_prob, topic_stay=topic_stay,
                  zipf=zipf, emission_alpha=emission_alpha, transition_alpha=transition_alpha)

    def build() -> Corpus:
        hmm = make_hmm(seed, **params)
        # Distinct streams for the splits, all derived from the one seed.
        train, valid, test = (sample(hmm, n, seed * 3 + i + 1_000_003) for i, n in
                              enumerate((train_tokens, valid_tokens, test_tokens)))
        return Corpus("synthetic", train, valid, test, vocabulary(vocab_size),
                      bayes_valid_ppl=bayes_ppl(hmm, valid), bayes_test_ppl=bayes_ppl(hmm, test))

    key = {"generator": GENERATOR_VERSION, "seed": seed, **params, "train_tokens": train_tokens,
           "valid_tokens": valid_tokens, "test_tokens": test_tokens}
    return cached(cache_dir, "synthetic", key, build)
