"""Read a W&B project (or one sweep's group) into a ``Runs``, inverting ``runners.tracking``.

The scores come from each run's summary (the tracker copies ``summary.json`` there), the
curves from its full history, and the rows are built by ``analysis.runs`` as for the
local store, so both sources give the same columns. ``wandb`` is imported only when a
project is read: reading a local store must not need W&B.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from analysis.runs import ID_COLUMNS, Note, Runs, events_frame, run_row, runs_frame

# W&B: ``runners.tracking.wandb_key`` prefixes, in the order the training loop writes a
# step's events, and the (split, scope) each stands for.
WANDB_PREFIXES = {"train": ("train", "interval"), "train_epoch": ("train", "epoch"),
                  "val": ("val", None), "probe": ("probe", None), "test": ("test", None)}


def _plain(value: Any) -> Any:
    """W&B's summary sub-dicts (mapping-like objects) as plain dicts, recursively."""
    if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _unwrap_config(config: Any) -> dict[str, Any]:
    """``run.config`` without W&B's own keys and ``{"value": ...}`` wrappers (older API)."""
    plain = _plain(config) or {}
    out = {}
    for key, value in plain.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[key] = value
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def history_events(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Metrics events from W&B history rows, inverting ``runners.tracking``.

    The tracker logs each event's numbers under ``<prefix>/<key>`` at the event's step,
    with ``epoch`` beside them; W&B merges the events of one step into one history row,
    so a row is split back into one event per prefix. Lists (the probe's per-step state
    norms) reach W&B only as a chart, so ``state_norm``/``cell_norm`` stay empty here.
    """
    events: list[dict[str, Any]] = []
    for row in rows:
        step = row.get("_step")
        for prefix, (split, scope) in WANDB_PREFIXES.items():
            values = {key[len(prefix) + 1:]: value for key, value in row.items()
                      if key.startswith(prefix + "/") and (_number(value) or value is None)}
            values = {k: v for k, v in values.items() if "/" not in k}
            if not any(v is not None for v in values.values()):
                continue
            event = {"epoch": row.get("epoch"), "step": step, "split": split, **values}
            if scope is not None:
                event["scope"] = scope
            events.append(event)
    return events


def _wandb_run(run: Any, where: str, skipped: list[Note], warnings: list[Note]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One W&B run's row and events, or None when it never wrote a final status."""
    label = Path(f"wandb:{where}/{run.id}")
    summary = _plain(run.summary) or {}
    state = getattr(run, "state", None)
    if not summary.get("status"):
        why = "still running" if state == "running" else f"state {state}" if state else "no status"
        skipped.append(Note(label, f"no final status in the W&B summary ({why}): unfinished or killed job"))
        return None
    row = run_row(summary, _unwrap_config(run.config))
    row.update(source="wandb", url=str(getattr(run, "url", "") or ""), run_dir=str(label),
               rel_dir=str(run.name or run.id), root=f"wandb:{where}")
    try:
        events = history_events(run.scan_history())
    except Exception as e:  # noqa: BLE001 - a broken history must not lose the run's scores
        warnings.append(Note(label, f"history unreadable ({type(e).__name__}); no learning curves"))
        events = []
    ids = {key: row[key] for key in ID_COLUMNS}
    return row, [{**event, **ids} for event in events]


def collect_wandb(project: str, group: str | None = None, entity: str | None = None,
                  api: Any = None) -> Runs:
    """The runs of a W&B project (one sweep when ``group`` is given) as a ``Runs``.

    Columns are those of ``collect``: the scores come from each run's summary (the
    tracker copies ``summary.json`` there), the curves from its full history.
    ``source`` is ``"wandb"``, ``url`` the run's page, and ``run_dir`` reads
    ``wandb:ENTITY/PROJECT/RUN_ID`` (a key, not a directory). ``project`` may be
    ``ENTITY/PROJECT``. ``api`` is a ``wandb.Api()``, created here when not given.
    """
    if entity is None and "/" in project:
        entity, project = project.split("/", 1)
    if api is None:
        import wandb  # only here: reading a local store must not need W&B

        api = wandb.Api()
    if entity is None:
        entity = getattr(api, "default_entity", None)
    path = f"{entity}/{project}" if entity else project
    rows: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    skipped: list[Note] = []
    warnings: list[Note] = []
    for run in api.runs(path, filters={"group": group} if group else None):
        read = _wandb_run(run, path, skipped, warnings)
        if read is not None:
            rows.append(read[0])
            records.extend(read[1])
    return Runs(runs_frame(rows), events_frame(records), skipped, warnings)
