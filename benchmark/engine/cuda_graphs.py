"""The segments' time loops on CUDA, captured once as CUDA graphs and replayed.

Why: a segment's step is one GEMM and about ten element-wise operations forward, a dozen
backward. On a CPU they are worth their cost; on a GPU every one is a kernel launch of a few
microseconds around a few microseconds of work, so a Python loop of them runs far behind
cuDNN's persistent kernels. A CUDA graph records the whole loop (every launch of every step)
once and replays it as one launch, which removes the per-step launch and Python overhead
while running the very same code as on the CPU.

How: ``run_steps(fn, tensors, masks, flags)`` calls ``fn(*tensors, masks, *flags)``. On CUDA
it looks up a graph for the call's signature (shapes, dtypes, strides, which masks are
present and how, the flags), capturing it on first use: the inputs are copied into static
buffers, ``fn`` is warmed up on a side stream and then captured reading them. Each replay
copies the new inputs in, replays, and clones the outputs (so a later replay cannot
overwrite what autograd saved). Per-step mask lists are compacted first: a mask fixed over
the segment is one tensor, a per-step mask one stacked (T, ...) tensor.

The masks are drawn outside the graph (``masks.py``), so the RNG is not part of it and the
graphed path draws exactly what the others draw. ``ENABLED`` turns the graphs off; with
``capture=False`` a ``GraphCache`` runs the same static-buffer plumbing without capturing,
which is how the CPU tests exercise it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from benchmark.engine.masks import STEP_FIELDS, SegmentMasks

ENABLED = True
WARMUP_CALLS = 2  # before capture, on a side stream, as the CUDA graphs documentation asks
MASK_FIELDS: tuple[str, ...] = STEP_FIELDS[1:]  # not the input mask: the segments apply it in their projection


def compact_masks(m: SegmentMasks) -> tuple[tuple, list[Tensor]]:
    """``(kinds, tensors)``: each per-step mask list as one tensor (fixed over the segment) or one stacked tensor."""
    kinds, tensors = [], []
    for name in MASK_FIELDS:
        steps = getattr(m, name)
        if steps is None:
            kinds.append(None)
        elif not isinstance(steps[0], Tensor):
            kinds.append(("float", float(steps[0])))  # eval: one factor for every step
        elif all(s is steps[0] for s in steps):
            kinds.append(("fixed",))
            tensors.append(steps[0])
        else:
            kinds.append(("per_step",))
            tensors.append(torch.stack(list(steps)))  # (T, ...)
    return (tuple(kinds), m.h_in_untied, m.output_pre_mask), tensors


def expand_masks(layout: tuple, tensors: Sequence[Tensor], steps: int) -> SegmentMasks:
    """The ``SegmentMasks`` that ``compact_masks`` compacted, reading ``tensors``."""
    kinds, h_in_untied, output_pre_mask = layout
    given = iter(tensors)
    fields: dict[str, Any] = {}
    for name, kind in zip(MASK_FIELDS, kinds):
        if kind is None:
            fields[name] = None
        elif kind[0] == "float":
            fields[name] = [kind[1]] * steps
        elif kind[0] == "fixed":
            fields[name] = [next(given)] * steps
        else:
            fields[name] = list(next(given).unbind(0))
    return SegmentMasks(h_in_untied=h_in_untied, output_pre_mask=output_pre_mask, **fields)


def _signature(t: Tensor | None) -> tuple | None:
    return None if t is None else (tuple(t.shape), t.stride(), t.dtype, str(t.device))


class _Entry:
    """One captured (or, without capture, merely staged) ``call`` of a loop function on static inputs."""

    def __init__(self, inputs: list[Tensor | None], call: Callable, capture: bool) -> None:
        self.static = [None if t is None else torch.empty_like(t).copy_(t) for t in inputs]
        self.call, self.graph, self.outputs = call, None, None
        if capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    call(self.static)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.outputs = call(self.static)

    def __call__(self, inputs: list[Tensor | None]) -> Any:
        for static, t in zip(self.static, inputs):
            if static is not None:
                static.copy_(t)
        if self.graph is None:
            outputs = self.call(self.static)
        else:
            self.graph.replay()
            outputs = self.outputs
        return tree_map(lambda o: o.clone() if isinstance(o, Tensor) else o, outputs)


class GraphCache:
    """Graphs of one loop function, one per call signature."""

    def __init__(self, fn: Callable, capture: bool = True) -> None:
        self.fn, self.capture = fn, capture
        self.entries: dict[tuple, _Entry] = {}

    def __call__(self, tensors: Sequence[Tensor | None], m: SegmentMasks, flags: tuple, steps: int) -> Any:
        layout, mask_tensors = compact_masks(m)
        inputs = [*tensors, *mask_tensors]
        key = (tuple(_signature(t) for t in inputs), layout, flags, steps)
        entry = self.entries.get(key)
        if entry is None:
            count = len(tensors)

            def call(static: list[Tensor | None]) -> Any:
                return self.fn(*static[:count], expand_masks(layout, static[count:], steps), *flags)

            entry = self.entries[key] = _Entry(inputs, call, self.capture)
        return entry(inputs)


_caches: dict[Callable, GraphCache] = {}


def graphs_apply(t: Tensor) -> bool:
    """Whether a loop on ``t`` runs as a CUDA graph: on CUDA, when enabled and not already capturing."""
    return ENABLED and t.is_cuda and not torch.cuda.is_current_stream_capturing()


def run_steps(fn: Callable, tensors: Sequence[Tensor | None], m: SegmentMasks, flags: tuple = ()) -> Any:
    """``fn(*tensors, m, *flags)``, as a replayed CUDA graph on CUDA (see the module doc)."""
    if not graphs_apply(tensors[0]):
        return fn(*tensors, m, *flags)
    cache = _caches.get(fn)
    if cache is None:
        cache = _caches[fn] = GraphCache(fn)
    return cache(tensors, m, flags, tensors[0].size(-3))  # the first tensor is (..., T, B, X)
