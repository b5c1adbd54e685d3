"""The recurrent dropout engine: one LSTM/GRU engine, every scheme a set of mask sites.

Public surface:

* ``LSTM``, ``GRU`` — ``torch.nn.LSTM`` / ``torch.nn.GRU`` drop-ins with ``scheme=`` and
  ``dropout=`` (one float for every site, or ``{site: rate}``) and scheme options;
  ``hidden_size`` is an int or one width per layer (then the state is per-layer lists);
* ``SCHEMES`` — the one registry, ``name -> Scheme`` (sites, granularity, options, source);
* ``SITE_TABLE`` / ``SITES`` / ``SITE_DOCS`` — the mask sites, one record each (width, placement,
  whether it acts inside the recurrence and compounds, how it is drawn and evaluated);
* ``resolve`` — validate a request into the ``DropoutPlan`` the modules run;
* ``embedding_dropout`` / ``EmbeddingDropout`` — word-type dropout for the ``emb`` site,
  which the language model applies (the recurrent modules do not).

Layout: ``sites`` (the site table), ``schemes`` (registry, validation, the resolved plan),
``masks`` (dropout primitives, mask sampling), ``lstm`` / ``gru`` (per cell: the reference step,
the hand-written segment, the layer runner), ``segment`` (what the two segments share),
``gemm`` (the segments' matrix products), ``native`` (the native kernel), ``rnn`` (the modules).
"""

from benchmark.engine.masks import GRANULARITIES, SCALINGS, EmbeddingDropout, embedding_dropout
from benchmark.engine.rnn import GRU, LSTM
from benchmark.engine.schemes import GATE_MASKS, SCHEMES, DropoutPlan, Scheme, Site, SiteConfig, resolve
from benchmark.engine.sites import CELL_SITES, SITE_DOCS, SITE_TABLE, SITES, SiteSpec

__all__ = [
    "CELL_SITES",
    "GATE_MASKS",
    "GRANULARITIES",
    "GRU",
    "LSTM",
    "SCALINGS",
    "SCHEMES",
    "SITES",
    "SITE_DOCS",
    "SITE_TABLE",
    "DropoutPlan",
    "EmbeddingDropout",
    "Scheme",
    "Site",
    "SiteConfig",
    "SiteSpec",
    "embedding_dropout",
    "resolve",
]
