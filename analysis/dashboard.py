"""One command from a sweep to a shared comparison: a W&B report online, pointers offline.

    python -m analysis.dashboard SWEEP_DIR [--project P] [--entity E] [--title T]

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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from runners.tracking import resolve_mode

# What the report plots, by the names runners.tracking logs them under
# (``<split>/<key>``, with ``train_epoch/`` for whole-epoch means) and the summary keys.
SUMMARY_METRICS = (("best_val_ppl", "Best validation perplexity"), ("test_ppl", "Test perplexity"))
CURVES = (("val/ppl", "Validation perplexity", True), ("train_epoch/ppl", "Training perplexity per epoch", True),
          ("train/grad_norm", "Gradient norm before clipping", True))
PROBES = (("probe/growth_per_step", "Carried-state growth per step (1/keep for state dropout)", False),
          ("probe/max_state", "Largest carried-state value", True))
GROUP_BY = ("scheme.name", "model.cell")


class DashboardError(ValueError):
    """A one-line reason the dashboard could not be made."""


def sweep_settings(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's W&B group, project, entity and mode, read from its jobs' resolved configs."""
    configs = sorted(sweep_dir.glob("*/config.yaml"))
    if not sweep_dir.is_dir() or not configs:
        raise DashboardError(f"{sweep_dir} holds no job directories (*/config.yaml); "
                             f"pass a sweep directory such as outputs/sweeps/<timestamp>")
    logger = (yaml.safe_load(configs[0].read_text()) or {}).get("logger") or {}
    if logger.get("name") != "wandb":
        raise DashboardError(f"the jobs in {sweep_dir} ran with logger={logger.get('name')}, so W&B holds nothing "
                             f"of them; the local report is: python -m analysis.report {sweep_dir} --out OUT")
    return {"group": sweep_dir.name, "project": logger.get("project"), "entity": logger.get("entity"),
            "mode": logger.get("mode", "auto")}


def build_report(entity: str, project: str, group: str, title: str | None = None):
    """The W&B report comparing the schemes of one sweep group; nothing is sent until ``save()``.

    Runs are grouped by scheme and cell, so each bar and line is the mean over seeds
    with the spread shown, the same aggregation as the local report's tables.
    """
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str) -> Any:
        return wr.Runset(entity=entity, project=project, name=name, filters=f"Metric('Group') == '{group}'",
                         groupby=list(GROUP_BY))

    bars = [wr.BarPlot(title=label, metrics=[wr.SummaryMetric(key)], groupby_aggfunc="mean",
                       groupby_rangefunc="stddev", title_x="perplexity") for key, label in SUMMARY_METRICS]
    lines = [wr.LinePlot(title=label, y=[key], log_y=log_y, groupby_aggfunc="mean", groupby_rangefunc="minmax")
             for key, label, log_y in CURVES]
    probes = [wr.LinePlot(title=label, y=[key], log_y=log_y, groupby_aggfunc="mean", groupby_rangefunc="minmax")
              for key, label, log_y in PROBES]
    return wr.Report(
        entity=entity, project=project, width="fluid",
        title=title or f"Recurrent dropout schemes: sweep {group}",
        description="Perplexity, learning curves and state stability by scheme x cell (rnn-dropout-bench).",
        blocks=[
            wr.H1("Perplexity by scheme and cell"),
            wr.P("Mean over seeds, bars show one standard deviation. Diverged runs have no perplexity."),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=bars + [wr.RunComparer(diff_only="split")]),
            wr.H1("Learning curves"),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=lines),
            wr.H1("Stability probes"),
            wr.P("After every epoch the recurrent stack runs 200 steps with masks on. A carried state that grows "
                 "by 1/keep per step (GRU with state dropout, Moon's cell dropout) ends in a divergence."),
            wr.PanelGrid(runsets=[runset("sweep " + group)], panels=probes),
        ])


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
    parser = argparse.ArgumentParser(prog="python -m analysis.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. outputs/sweeps/<timestamp>")
    parser.add_argument("--project", help="W&B project (default: the jobs' logger.project)")
    parser.add_argument("--entity", help="W&B entity (default: the jobs' logger.entity, else your default)")
    parser.add_argument("--title", help="the report's title")
    args = parser.parse_args(argv)
    try:
        settings = sweep_settings(args.sweep_dir)
        settings.update({k: v for k, v in (("project", args.project), ("entity", args.entity)) if v})
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
