"""Analysis: run store (or W&B) -> tidy pandas tables -> figures -> an offline HTML report.

The run store (``config.yaml``, ``metrics.jsonl``, ``summary.json`` per job directory,
``analysis.store_format``) and the JSON the benchmark commands write are the only contracts
with the training side, so this package reads files and nothing else: it never imports torch, Hydra, ``benchmark`` or ``runners``, imports W&B only to
read a project, and a report can be built on a laptop from a sweep copied off a cluster.

Modules, one job each:

- ``analysis.store_format``: the run store's contract (file names, ``JobSummary``, event keys),
  which the runners write to; standard library only.
- ``analysis.runs``: the tidy schema (``Runs``: one row per run, one per event) both readers fill.
- ``analysis.store_reader``: find job directories and read them into a ``Runs``; the cache key.
- ``analysis.wandb_reader``: read a W&B project or group into the same ``Runs``.
- ``analysis.parquet_cache``: the tables as parquet files, written atomically.
- ``analysis.collect``: ``python -m analysis.collect``, parquet tables from either source.
- ``analysis.tables``: the scheme x cell table (``python -m analysis.tables``).
- ``analysis.probes``: the stability probes read into one record per run (growth, compounding site).
- ``analysis.plotting``, ``analysis.figures``, ``analysis.stability``: the figures.
- ``analysis.cli_args``: the command-line helpers the collect, tables and report commands share.
- ``analysis.report``: the HTML page and report.md (``python -m analysis.report``), with
  ``analysis.provenance`` (commands and configs), ``analysis.report_html``,
  ``analysis.report_markdown`` and ``analysis.report_text``; CSS and JS in ``analysis/assets/``.
- ``analysis.dashboard``: a W&B report online, pointers offline; ``analysis.wandb_mode``
  decides online or offline for it and for the runners' tracker.
- ``analysis.publish``: the one publisher (``python -m analysis.publish``): every published table
  rendered from a results directory's committed inputs, written beside them and into the README's
  marked blocks, and checked; ``analysis.publication`` (what a renderer returns, the blocks),
  ``analysis.machine`` (the one machine line) and the renderers ``analysis.timing_tables`` (speed,
  Keras), ``analysis.sweep_table`` (a sweep's table) and ``analysis.study_report`` (a study's answer,
  tables and page, with ``analysis.study_figures``, ``analysis.stats``, ``analysis.study_tables`` and
  ``analysis.study_text``).

Nothing is imported here, so ``import analysis.store_reader`` does not pull in matplotlib.
"""
