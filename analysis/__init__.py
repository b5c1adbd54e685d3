"""Analysis: run store -> tidy pandas tables -> figures -> an offline HTML report.

The run store (``config.yaml``, ``metrics.jsonl``, ``summary.json`` per job directory)
is the only contract with the training side, so this package reads files and nothing
else: it never imports torch, Hydra, W&B, ``benchmark`` or ``runners``, and a report
can be built on a laptop from a sweep copied off a cluster.

Modules, one job each:

- ``analysis.collect``: find job directories and read them into DataFrames.
- ``analysis.figures``: learning-curve figures saved as PNG.
- ``analysis.report``: the perplexity table, the HTML page and the command line
  (``python -m analysis.report SWEEP_DIR ... --out OUT_DIR``).

Nothing is imported here, so ``import analysis.collect`` does not pull in matplotlib.
"""
