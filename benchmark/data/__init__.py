"""Corpora as token-id tensors, and the batching that language-model training uses."""

from benchmark.data.corpus import Corpus, DataError
from benchmark.data.registry import load_corpus
from benchmark.data.batching import batchify, segments

__all__ = ["Corpus", "DataError", "load_corpus", "batchify", "segments"]
