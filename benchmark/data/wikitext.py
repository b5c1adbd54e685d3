"""WikiText-2 (Merity, Xiong, Bradbury and Socher 2016, "Pointer Sentinel Mixture Models").

Why it is here: PTB's preprocessing throws away case, numbers and punctuation, and its
10k vocabulary is small; WikiText-2 is Wikipedia's Good and Featured articles with all
three kept, about twice PTB's training size (2.09M tokens) and a 33,278-word vocabulary,
and it is the second corpus of AWD-LSTM (Merity et al. 2017). We use the tokenised
version (``wiki.*.tokens``, rare words already ``<unk>``), one ``<eos>`` per line,
blank lines included, as Merity et al.'s loader does; ``vocab_size`` defaults to no cap.
Fetch with ``python -m benchmark.data.download wikitext2 --dir DIR``.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.corpus import Corpus
from benchmark.data.sources import Source
from benchmark.data.remote import load_source


def load(cache_dir: Path | None = None, path: str | Path | None = None, download: bool = False,
         vocab_size: int | None = None, size: int | None = None, source: Source | None = None) -> Corpus:
    """Corpus ``wikitext2`` from ``path``; ``download=True`` fetches missing files first."""
    return load_source("wikitext2", cache_dir, path, download, vocab_size, size, source)
