"""One command from a sweep to a shared comparison: a W&B report online, pointers offline.

    python -m analysis.dashboard SWEEP_DIR [--project P] [--entity E] [--title T] [--dry-run]

Online (an API key, or ``WANDB_MODE=online``), it saves a W&B report over the sweep's
group (every job of a sweep logs to the group named after the sweep directory): best
validation and test perplexity by scheme x cell, validation and training curves, and
the stability probes (growth of the carried state per step, its largest value, the
gradient norm). It prints the report's URL.

Offline (the default without an account), nothing can be uploaded, so it says where the
same comparison lives on this machine: ``wandb leet`` over the offline runs, the local
HTML report, and the ``wandb sync`` command that uploads the runs for a later online
call. A failure (not logged in, no network, an unknown project) is one line on stderr
and exit status 2; the sweep itself is never touched.

``--dry-run`` saves nothing and needs neither network nor account: it prints the report's
panels as JSON, with every metric and group-by key in the form W&B will look it up, so a
wrong key shows before a report of empty, ungrouped panels is saved.

Every key is written the way ``wandb_workspaces`` parses it, not as it reads in the
Hydra config: a group key's first dotted part is its section, so the scheme is
``config.scheme.name`` (W&B resolves it to ``scheme.value.name`` in the config section);
``scheme.name`` would name a section ``scheme`` that does not exist and group nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from analysis.store_format import CONFIG, SUMMARY, read_summary
from analysis.wandb_mode import resolve_mode

# What the report plots, by the names runners.tracking logs them under
# (``<split>/<key>``, with ``train_epoch/`` for whole-epoch means) and the summary keys
# (runners.tracking copies summary.json into the run's summary).
SUMMARY_METRICS = (("best_val_ppl", "Best validation perplexity"), ("test_ppl", "Test perplexity"))
# (history key, title, log y axis, x axis): per-epoch curves against ``epoch``, the step
# metric runners.tracking declares for them; per-step values against W&B's own step.
CURVES = (("val/ppl", "Validation perplexity", True, "epoch"),
          ("train_epoch/ppl", "Training perplexity per epoch", True, "epoch"),
          ("train/grad_norm", "Gradient norm before clipping", True, "Step"))
PROBES = (("probe/growth_per_step", "Carried-state growth per step (1/keep for state dropout)", False, "Step"),
          ("probe/max_state", "Largest carried-state value", True, "Step"))
# Runs are grouped by the resolved Hydra config that every job logs as its W&B config.
GROUP_BY = ("config.scheme.name", "config.model.cell")


class DashboardError(ValueError):
    """A one-line reason the dashboard could not be made."""


def sweep_settings(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's W&B group, project, entity and mode, read from its jobs' resolved configs."""
    configs = sorted(sweep_dir.glob(f"*/{CONFIG}"))
    if not sweep_dir.is_dir() or not configs:
        raise DashboardError(f"{sweep_dir} holds no job directories (*/{CONFIG}); "
                             f"pass a sweep directory such as outputs/sweeps/<timestamp>")
    logger = (yaml.safe_load(configs[0].read_text()) or {}).get("logger") or {}
    if logger.get("name") != "wandb":
        raise DashboardError(f"the jobs in {sweep_dir} ran with logger={logger.get('name')}, so W&B holds nothing "
                             f"of them; the local report is: python -m analysis.report {sweep_dir} --out OUT")
    return {"group": wandb_group(sweep_dir), "project": logger.get("project"), "entity": logger.get("entity"),
            "mode": logger.get("mode", "auto")}


def wandb_group(sweep_dir: Path) -> str:
    """The W&B group the sweep's jobs logged to, as they recorded it in ``summary.json``.

    A default sweep folder is a timestamp, and its group is named after the preset that made
    it (``quickstart-<timestamp>``, ``runners.hydra_task.sweep_group``, issue 25); sweeps run
    before jobs recorded the group logged to the folder's name.
    """
    for path in sorted(sweep_dir.glob(f"*/{SUMMARY}")):
        summary = read_summary(path.parent)
        if summary is not None and summary.wandb_group:
            return str(summary.wandb_group)
    return sweep_dir.name


def build_report(entity: str, project: str, group: str, title: str | None = None) -> Any:
    """The W&B report (a ``wandb_workspaces.reports.v2.Report``) comparing the schemes of one
    sweep group; nothing is sent until ``save()``.

    Runs are grouped by scheme and cell, so each bar and line is the mean over seeds
    with the spread shown, the same aggregation as the local report's tables.
    """
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str) -> Any:
        # the group's training runs: its results run (job type "sweep") has no curves to plot
        return wr.Runset(entity=entity, project=project, name=name,
                         filters=f"Metric('Group') == '{group}' and Metric('JobType') == 'train'",
                         groupby=list(GROUP_BY))

    def line(key: str, label: str, log_y: bool, x: str) -> Any:
        return wr.LinePlot(title=label, x=x, y=[key], log_y=log_y, groupby_aggfunc="mean",
                           groupby_rangefunc="minmax")

    bars = [wr.BarPlot(title=label, metrics=[wr.SummaryMetric(key)], groupby_aggfunc="mean",
                       groupby_rangefunc="stddev", title_x="perplexity") for key, label in SUMMARY_METRICS]
    return wr.Report(
        entity=entity, project=project, width="fluid",
        title=title or f"Recurrent dropout schemes: sweep {group}",
        description="Perplexity, learning curves and state stability by scheme x cell (rnn-dropout-bench).",
        blocks=[
            wr.H1("Perplexity by scheme and cell"),
            wr.P("Mean over seeds, bars show one standard deviation. Diverged runs have no perplexity."),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=bars + [wr.RunComparer(diff_only="split")]),
            wr.H1("Learning curves"),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=[line(*c) for c in CURVES]),
            wr.H1("Stability probes"),
            wr.P("After every epoch the recurrent stack runs 200 steps with masks on. A carried state that grows "
                 "by 1/keep per step (a site whose plan says it compounds: the GRU with state dropout, Moon's cell "
                 "dropout with inverted scaling) ends in a divergence."),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=[line(*p) for p in PROBES]),
        ])


def describe_report(report: Any) -> dict[str, Any]:
    """The report as W&B will store it, as plain JSON: each panel with its metrics and
    group-by keys in the backend form ``wandb_workspaces`` sends on ``save()``.

    Read from the library's own serialisation (``_to_model``), not from this module's
    constants, so what is printed is what W&B would look up: a history key for a line
    plot's axes (``_step`` for W&B's step), ``summary_metrics.<key>`` for a summary metric,
    and each group-by key as ``<section>:<name>``, W&B's column notation (a config key
    reads ``config:<top>.value.<rest>``). ``filters`` are the run filters of every panel
    grid (all of them select the sweep's group).
    """
    panels: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    heading = None
    for block in report.blocks:
        kind = type(block).__name__
        if kind == "H1":
            heading = str(block.text)
        if kind != "PanelGrid":
            continue
        runsets = [runset._to_model() for runset in block.runsets]
        group_by = [f"{key.section}:{key.name}" for runset in runsets for key in runset.grouping]
        for runset in runsets:
            for leaf in (runset.filters or {}).get("filters", []):
                item = {"key": f"{leaf['key']['section']}:{leaf['key']['name']}", "op": leaf["op"],
                        "value": leaf["value"]}
                if item not in filters:
                    filters.append(item)
        for panel in block.panels:
            model = panel._to_model()
            config = model.config
            panels.append({"section": heading, "type": model.view_type,
                           "title": getattr(config, "chart_title", None), "x": getattr(config, "x_axis", None),
                           "metrics": list(getattr(config, "metrics", None) or []), "group_by": group_by})
    return {"title": report.title, "entity": report.entity or None, "project": report.project,
            "filters": filters, "panels": panels}


def dry_run(settings: dict[str, Any], title: str | None) -> dict[str, Any]:
    """``describe_report`` of the report ``save_online`` would save, without network or account.

    The report is built with no entity: given one, ``wandb_workspaces`` looks the project
    up on W&B to serialise a run set. The entity it would be saved under is reported
    beside the panels instead (``null``: the account's default entity).
    """
    plan = describe_report(build_report("", settings["project"], settings["group"], title))
    return {**plan, "entity": settings["entity"]}


def offline_message(sweep_dir: Path) -> str:
    """Where the comparison lives when nothing can be uploaded."""
    report = sweep_dir / "report" / "index.html"
    job = next(iter(sorted(p.parent for p in sweep_dir.glob("*/wandb"))), sweep_dir / "<job>")
    made = report if report.exists() else f"not written yet: python -m analysis.report {sweep_dir} --out {report.parent}"
    return "\n".join([
        "W&B is offline here (no API key, or WANDB_MODE=offline), so no online report was made.",
        f"  local report:      {made}",
        f"  browse the runs:   wandb leet {job / 'wandb'}",
        f"  inspect one run:   wandb leet inspect --summary {job / 'wandb'}/offline-run-*",
        f"  upload the sweep:  wandb sync {sweep_dir}/*/wandb/offline-run-*   then run this command again online",
    ])


def save_online(settings: dict[str, Any], title: str | None) -> str:
    """Save the report to W&B and return its URL."""
    try:
        import wandb

        entity = settings["entity"] or wandb.Api().default_entity
        report = build_report(entity, settings["project"], settings["group"], title)
        report.save()
    except Exception as e:  # noqa: BLE001 - any W&B failure becomes the one-line error
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DashboardError(f"W&B refused the report ({type(e).__name__}: {first}); check `wandb login` and the "
                             f"network, or use the local report") from None
    return report.url


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 with one line on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. outputs/sweeps/<timestamp>")
    parser.add_argument("--project", help="W&B project (default: the jobs' logger.project)")
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.entity, else your default)")
    parser.add_argument("--title", help="the report's title")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the report's panels as JSON (metrics and group-by keys as W&B resolves them) "
                             "and save nothing; needs no network or account")
    args = parser.parse_args(argv)
    try:
        settings = sweep_settings(args.sweep_dir)
        settings.update({k: v for k, v in (("project", args.project), ("entity", args.entity)) if v})
        if args.dry_run:
            print(json.dumps(dry_run(settings, args.title), indent=2))
            return 0
        if resolve_mode(settings["mode"]) != "online":
            print(offline_message(args.sweep_dir))
            return 0
        print(f"report: {save_online(settings, args.title)}")
        return 0
    except DashboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
