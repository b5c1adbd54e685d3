"""The recurrent dropout engine: one LSTM/GRU engine, every scheme a set of mask sites.

Public surface:

* ``LSTM``, ``GRU`` — ``torch.nn.LSTM`` / ``torch.nn.GRU`` drop-ins with ``scheme=`` and
  ``dropout=`` (one float for every site, or ``{site: rate}``) and scheme options;
  ``hidden_size`` is an int or one width per layer (then the state is per-layer lists);
* ``SCHEMES`` — the one registry, ``name -> Scheme`` (sites, granularity, options, source);
* ``SITES`` / ``SITE_DOCS`` — the mask sites and what each masks (``x`` the layers' input,
  ``between`` the boundaries inside the stack when a scheme lists it, ``out`` the output, ...);
* ``resolve`` — validate a request into the ``DropoutPlan`` the modules run;
* ``embedding_dropout`` / ``EmbeddingDropout`` — word-type dropout for the ``emb`` site,
  which the language model applies (the recurrent modules do not).

Layout: ``masks`` (dropout primitives, mask sampling), ``schemes`` (registry, validation),
``cells`` (step math and the reference loop), ``kernels`` (the native fused kernel),
``rnn`` (the modules).
"""

from benchmark.engine.masks import GRANULARITIES, SCALINGS, EmbeddingDropout, embedding_dropout
from benchmark.engine.rnn import GRU, LSTM
from benchmark.engine.schemes import (
    CELL_SITES,
    GATE_MASKS,
    SCHEMES,
    SITE_DOCS,
    SITES,
    DropoutPlan,
    Scheme,
    Site,
    SiteConfig,
    resolve,
)

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
    "DropoutPlan",
    "EmbeddingDropout",
    "Scheme",
    "Site",
    "SiteConfig",
    "embedding_dropout",
    "resolve",
]
