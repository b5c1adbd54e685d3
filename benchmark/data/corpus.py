"""The ``Corpus`` every training job consumes, and its on-disk cache.

A corpus is three 1-D token-id tensors (train, valid, test) and the vocabulary that
maps ids back to words. Building one from text is cheap but not free (the KJV corpus
is ~820k words), so the tensors are cached under a key that covers every option that
changes them: an edited option never reads a stale cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

UNK = "<unk>"
EOS = "<eos>"
# Bump when preprocessing changes, so caches written by an older version are not reused.
CACHE_FORMAT = 1


class DataError(ValueError):
    """A corpus cannot be built: missing file, bad option. The message is one line."""


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits and the vocabulary (``itos[i]`` is word ``i``)."""

    name: str
    train: torch.Tensor  # (N_train,) int64
    valid: torch.Tensor  # (N_valid,) int64
    test: torch.Tensor  # (N_test,) int64
    itos: tuple[str, ...]
    # The perplexity of the true generator on valid/test, where it is known (the synthetic
    # corpus): the floor no model can beat in expectation. None for real text.
    bayes_valid_ppl: float | None = None
    bayes_test_ppl: float | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def describe(self) -> str:
        text = (
            f"{self.name}: vocab {self.vocab_size}, tokens train {len(self.train):,} "
            f"valid {len(self.valid):,} test {len(self.test):,}"
        )
        if self.bayes_test_ppl is not None:
            text += f", Bayes-optimal ppl valid {self.bayes_valid_ppl:.2f} test {self.bayes_test_ppl:.2f}"
        return text


def build_vocab(train_words: list[str], max_size: int | None) -> tuple[str, ...]:
    """Most frequent training words, capped at ``max_size`` entries including ``<unk>``.

    ``max_size=None`` keeps every training word: PTB and WikiText ship already capped,
    with ``<unk>`` written in the text, so capping them again would change the benchmark.

    Ties are broken alphabetically so the vocabulary is a pure function of the text.
    ``<eos>`` always gets an id (it ends every line), ``<unk>`` is always present
    because the capped-off tail and words unseen in training map to it, as in
    Mikolov's PTB preprocessing.
    """
    if max_size is not None and max_size < 3:
        raise DataError(f"vocab_size={max_size} is too small; it must be at least 3")
    counts: dict[str, int] = {}
    for w in train_words:
        counts[w] = counts.get(w, 0) + 1
    counts.pop(UNK, None)
    counts.pop(EOS, None)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return (EOS, UNK, *(ranked if max_size is None else ranked[: max_size - 2]))


# Above this share of <unk> in an evaluation split, its perplexity says more about the
# vocabulary than about the model: a 3-word vocabulary scores every word as <unk> (issue 26).
HIGH_UNK_SHARE = 0.5


def unk_share(tokens: torch.Tensor, itos: tuple[str, ...]) -> float:
    """The share of ``tokens`` that is ``<unk>`` (0 for an empty split)."""
    return float((tokens == itos.index(UNK)).float().mean()) if len(tokens) else 0.0


def check_has_words(name: str, splits: dict[str, tuple[list[str], str]]) -> None:
    """Each split holds at least one word besides ``<eos>``, or a one-line error naming the split.

    A training file of empty lines trained on ``<eos>`` alone and ended "diverged" for a
    finite perplexity (issue 26); an empty split has nothing to score.
    """
    for split, (words, where) in splits.items():
        if not any(w != EOS for w in words):
            what = "is empty" if not words else "holds no words, only empty lines"
            raise DataError(f"corpus {name!r}: the {split} split ({where}) {what}; every split needs text")


def encode(words: list[str], itos: tuple[str, ...]) -> torch.Tensor:
    """Word list -> int64 ids, out-of-vocabulary words mapped to ``<unk>``."""
    stoi = {w: i for i, w in enumerate(itos)}
    unk = stoi[UNK]
    return torch.tensor([stoi.get(w, unk) for w in words], dtype=torch.int64)


def cache_key(parts: dict) -> str:
    """A short stable digest of everything that determines a corpus's tensors."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(cache_dir: Path | None, name: str, key_parts: dict, build: Callable[[], Corpus]) -> Corpus:
    """Return the corpus from ``cache_dir`` if present under this key, else build and store it.

    The file is written to a temporary name and renamed, so a killed job or two jobs of
    a parallel sweep building the same corpus never leave a half-written cache behind.
    An unreadable cache file is derived data: it is rebuilt, not trusted.
    """
    if cache_dir is None:
        return build()
    cache_dir = Path(cache_dir).expanduser()
    path = cache_dir / f"{name}-{cache_key(key_parts)}.pt"
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return Corpus(name, blob["train"], blob["valid"], blob["test"], tuple(blob["itos"]),
                          bayes_valid_ppl=blob.get("bayes_valid_ppl"), bayes_test_ppl=blob.get("bayes_test_ppl"))
        except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt below
            pass
    corpus = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Serialised in memory, then written with plain file I/O: a full disk is then an OSError
    # (ENOSPC) naming itself, which the job reports in one line, where torch.save's own
    # writer says only "unexpected pos" (issue 26; the checkpoint writes the same way).
    buffer = io.BytesIO()
    torch.save({"train": corpus.train, "valid": corpus.valid, "test": corpus.test, "itos": list(corpus.itos),
                "bayes_valid_ppl": corpus.bayes_valid_ppl, "bayes_test_ppl": corpus.bayes_test_ppl}, buffer)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.name, suffix=".tmp")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
        except OSError as e:  # name the cache, not the job directory the caller would guess
            raise OSError(e.errno, e.strerror, str(path)) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return corpus
