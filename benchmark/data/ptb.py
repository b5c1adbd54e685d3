"""Mikolov's Penn Treebank: the language-modelling benchmark of Zaremba et al. (2014).

Mikolov et al. (2010, 2011) preprocessed sections 0-24 of the Penn Treebank WSJ text
(Marcus et al. 1993): lower case, numbers as ``N``, punctuation removed, the 10k most
frequent words kept and the rest written as ``<unk>``. Splits: sections 0-20 train
(929k tokens), 21-22 valid (73k), 23-24 test (82k), counting one ``<eos>`` per sentence.
The text is already capped, so ``vocab_size`` defaults to no cap (10,000 words with
``<eos>``). The files are not shipped: point ``data.path`` at a directory holding
``ptb.{train,valid,test}.txt``, or fetch them with
``python -m benchmark.data.download ptb --dir DIR``.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.corpus import Corpus
from benchmark.data.sources import Source
from benchmark.data.remote import load_source


def load(cache_dir: Path | None = None, path: str | Path | None = None, download: bool = False,
         vocab_size: int | None = None, size: int | None = None, source: Source | None = None) -> Corpus:
    """Corpus ``ptb`` from ``path``; ``download=True`` fetches missing files first (``source``: the table entry)."""
    return load_source("ptb", cache_dir, path, download, vocab_size, size, source)
