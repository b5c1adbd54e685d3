"""The library: data, the recurrent dropout engine, the language model and training.

Nothing here imports Hydra, ``runners`` or ``analysis``: the library is usable from a
notebook or another project with plain Python arguments.
"""

from benchmark.engine import GRU, LSTM, SCHEMES, EmbeddingDropout, embedding_dropout, resolve

__all__ = ["GRU", "LSTM", "SCHEMES", "EmbeddingDropout", "embedding_dropout", "resolve"]
