"""The timing tables, from the JSON the benchmark commands write: the speed table and the Keras comparison.

``python -m benchmark.speed`` and ``python -m benchmark.keras_compare`` measure and write
``speed.json`` / ``keras_compare.json`` (every step, the command, the machine, the settings)
and nothing else; the tables are rendered here, where ``analysis.publish`` writes them
beside their JSON and into the README. Rendering needs neither torch nor keras.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.machine import machine_line
from analysis.publication import Publication, PublishError

SPEED, KERAS = "speed.json", "keras_compare.json"  # what the two commands write into their --out


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _head(title: str, result: dict[str, Any]) -> list[str]:
    """A timing table's title, then the command that measured, how long it timed, and the machine."""
    return [f"# {title}", "", f"Command: `{result['command']}` ({duration(result['wall_s'])} of timing)", "",
            f"Machine: {machine_line(result['machine'])}", ""]


def speed_markdown(result: dict[str, Any]) -> str:
    """``speed.md``: every scheme x cell's training step against native torch.nn, from a ``speed.json``."""
    s = result["settings"]
    lines = [
        *_head("Training-step speed: every scheme x cell vs native torch.nn", result),
        f"{s['layers']} layers, batch {s['batch']}, BPTT {s['bptt']}, vocab {s['vocab']}, dropout {s['dropout']}, "
        f"SGD + clipping {s['clip']}; {s['warmup']} warm-up + {s['repeats']} interleaved rounds. "
        "`x native`: median over rounds of step time / the mean of the two native steps around it "
        "(every scheme runs between two native steps; `none` runs the native kernel too, so its ratio shows the "
        "run's own noise). "
        f"Memory: {result['memory_method']}.",
        "",
        "| width | cell | scheme | path | step ms (median) | tokens/s | x native | peak mem MiB | target | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        mem = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        target = "-" if r["target"] is None else f"<= {r['target']:.2f}"
        lines.append(f"| {r['width']} ({r['hidden']}) | {r['cell']} | {r['scheme']} | {r['path']} | {r['step_ms']:.1f} | "
                     f"{r['tokens_per_s']:.0f} | {r['ratio']:.3f} | {mem} | {target} | {r['status']} |")
    checked = [r for r in result["rows"] if r["target"] is not None]
    over = [f"{r['cell']}/{r['scheme']}" for r in checked if r["status"] == "OVER"]
    lines += ["", f"Targets: {len(checked) - len(over)}/{len(checked)} rows pass"
              + (f"; over target: {', '.join(over)}" if over else "") + ".", "", gemm_line(result)]
    return "\n".join(lines) + "\n"


WAY_NAMES = {"onednn": "oneDNN", "blas": "the BLAS", "looped": "a loop over gates", "batched": "one batched product"}


def gemm_line(result: dict[str, Any]) -> str:
    """Which way ran the segments' products (issue 24): the run-time choices the JSON records, or, for a
    table measured before products were chosen at run time, the fixed rule of that time."""
    choices = result.get("gemm_choices")
    if choices is None:
        return ("Segment products: oneDNN for every product and a loop over gates for untied weight gradients, "
                "the fixed rule when this table was measured (before each product was timed on the CPU).")
    if not choices:
        return "Segment products: none large enough to be timed, so each ran its default way."
    counts: dict[str, int] = {}
    for record in choices.values():
        counts[record["choice"]] = counts.get(record["choice"], 0) + 1
    ways = ", ".join(f"{WAY_NAMES.get(way, way)} for {n}" for way, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f"Segment products: each shape timed both ways on first use on this CPU; {ways} of the "
            f"{len(choices)} shapes (every decision with its timings: `gemm_choices` in the JSON).")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def keras_markdown(result: dict[str, Any]) -> str:
    """``keras_compare.md``: the suite's training step against Keras 3's, from a ``keras_compare.json``."""
    s = result["settings"]
    lines = [
        *_head("Training-step speed: this suite against Keras 3 (torch backend)", result),
        f"{s['layers']}-layer LSTM language model, batch {s['batch']}, BPTT {s['bptt']}, vocab {s['vocab']}, dropout "
        f"{s['dropout']}, SGD lr {s['lr']} with gradient-norm clipping at {s['clip']}; {s['warmup']} warm-up step(s) "
        f"and {s['repeats']} rounds, each once around the cycle suite variational, Keras recurrent_dropout, Keras none, "
        "suite none, back to suite variational (start and direction change between rounds). Suite: "
        f"`LanguageModel(scheme=..., dropout={s['dropout']})` stepped as `benchmark.speed` does. Keras: "
        f"`LSTM(W, dropout=p, recurrent_dropout=p, return_sequences=True)` x {s['layers']}, `Dropout(p)` with one mask "
        "per sequence on the output, `model.train_on_batch`. `keras / suite`: median over rounds of the Keras step "
        "over the suite's step with the same dropout, run back to back. `x no dropout`: median over rounds of the "
        "step over the same library's no-dropout step, run back to back. Step ms: the median of every step timed "
        "(the round's first model runs twice).",
        "",
        "| width | library | dropout | path | step ms (median) | tokens/s | keras / suite | x no dropout |",
        "|---:|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['hidden']} | {r['library']} | {r['dropout']} | {r['path']} | {r['step_ms']:.1f} | "
                     f"{r['tokens_per_s']:.0f} | {_ratio(r['keras_over_suite'])} | {_ratio(r['over_no_dropout'])} |")
    return "\n".join(lines) + "\n"


def _render(json_path: Path, markdown: Callable[[dict[str, Any]], str]) -> Publication:
    """The Markdown beside the JSON (``speed.md``), and the README's copy of it without its title."""
    try:
        text = markdown(json.loads(json_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PublishError(f"cannot render {json_path}: {type(e).__name__}: {e}") from None
    return Publication(files={json_path.with_suffix(".md").name: text}, blocks={"table": text.split("\n", 2)[2]})


def render_speed(results: Path) -> Publication:
    return _render(results / SPEED, speed_markdown)


def render_keras(results: Path) -> Publication:
    return _render(results / KERAS, keras_markdown)
