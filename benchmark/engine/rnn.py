"""``LSTM`` and ``GRU``: drop-in ``torch.nn.LSTM`` / ``torch.nn.GRU`` with a dropout scheme.

One engine for both cells and every scheme: the scheme is resolved into a ``DropoutPlan``
(``schemes.py``, reading the site table in ``sites.py``), each layer's masks are drawn up
front (``masks.py``), and each layer runs on one of three paths of its cell's file
(``lstm.py``, ``gru.py``): the native kernel (``native.py``) when every active site acts
outside the recurrence, the hand-written segment when one acts inside it, or the plain
autograd reference (``impl="reference"``, and ``trace``). All paths draw the same masks in
the same order, so under one seed they agree exactly.

Parameters carry ``nn.LSTM``'s names and shapes and are registered directly on the
module, so a ``state_dict`` moves between this module and ``torch.nn`` unchanged.

Widths: ``hidden_size`` is an int (every layer that wide, ``nn.LSTM``'s contract, the state
stacked ``(L, B, H)``) or a sequence of one width per layer (AWD-LSTM's 1150, 1150, 400:
the last layer as wide as the embedding, so the decoder can be tied). Layer ``l`` then has
``H_l`` units and reads the ``H_{l-1}`` outputs of the layer below (layer 0 reads
``input_size``), and the state, which cannot be stacked, is a list of per-layer ``(B, H_l)``
tensors (the LSTM's the tuple ``(list of h, list of c)``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from benchmark.engine import gru, lstm, native
from benchmark.engine.masks import Mask, draw_layer_masks
from benchmark.engine.schemes import DropoutPlan, resolve
from benchmark.engine.sites import SITE_SPECS

# ``auto``: the native kernel where the plan allows, else the hand-written segment; ``segment``:
# always the segment; ``reference``: always the plain autograd reference (what the others are tested against).
IMPLS: tuple[str, ...] = ("auto", "segment", "reference")
RUNNERS = {"lstm": lstm.run_layer, "gru": gru.run_layer}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def layer_widths(hidden_size: int | Sequence[int], num_layers: int) -> tuple[int, ...]:
    """``hidden_size`` as one width per layer; a one-line ValueError naming it when it is neither form."""
    if _positive_int(hidden_size):
        return (hidden_size,) * num_layers
    if isinstance(hidden_size, (str, bytes)) or not isinstance(hidden_size, Sequence):
        raise ValueError(f"hidden_size must be a positive integer or a sequence of num_layers positive integers, "
                         f"got {hidden_size!r}")
    widths = tuple(hidden_size)
    if len(widths) != num_layers or not all(_positive_int(w) for w in widths):
        raise ValueError(f"hidden_size as a sequence must hold num_layers={num_layers} positive integers "
                         f"(one width per layer), got {hidden_size!r}")
    return widths


class _DropoutRNN(nn.Module):
    """The shared engine. Subclasses set ``_cell`` ("lstm"/"gru") and ``_gates``."""

    _cell: str
    _gates: int
    _mode: str  # cuDNN mode name

    def __init__(
        self,
        input_size: int,
        hidden_size: int | Sequence[int],
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float | Mapping[str, float],
        bidirectional: bool,
        proj_size: int,
        *,
        scheme: str,
        impl: str,
        device: Any,
        dtype: Any,
        options: dict[str, Any],
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("num_layers", num_layers)):
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # One width per layer; an int keeps nn.LSTM's contract (the state stacked (L, B, H)),
        # a sequence gives the per-layer state lists, even when its widths are equal.
        self.layer_sizes: tuple[int, ...] = layer_widths(hidden_size, num_layers)
        self.per_layer_state = not _positive_int(hidden_size)
        if bidirectional:
            raise ValueError("bidirectional=True is not supported; allowed: bidirectional=False")
        if proj_size:
            raise ValueError(f"proj_size={proj_size!r} is not supported; allowed: proj_size=0")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of: {', '.join(IMPLS)}")
        self.input_size = input_size
        self.hidden_size: int | tuple[int, ...] = self.layer_sizes if self.per_layer_state else hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.impl = impl
        self.plan: DropoutPlan = resolve(scheme, self._cell, dropout, **options)
        # Masks of the last training forward, keyed (layer, site); see ``last_masks`` below.
        self.last_masks: dict[tuple[int, str], Tensor] = {}
        self._trace: dict[int, list] | None = None  # set only inside ``trace``
        # The last layer's output before the ``out`` mask in the last training forward
        # (time-major); AWD-LSTM's temporal activation regularisation is computed on it.
        self.last_raw_output: Tensor | None = None
        # While set (``holding_masks``), each layer's masks are drawn once and reused by every
        # later forward call: one sampled model for a whole pass over a text (MC dropout).
        self._held_masks: dict[int, dict[str, Mask]] | None = None

        factory = {"device": device, "dtype": dtype}
        self._layer_names: list[list[str]] = []
        for layer in range(num_layers):
            hidden = self.layer_sizes[layer]
            gate_size = self._gates * hidden
            shapes = {
                f"weight_ih_l{layer}": (gate_size, self._input_width(layer)),
                f"weight_hh_l{layer}": (gate_size, hidden),
            }
            if self.bias:
                shapes[f"bias_ih_l{layer}"] = (gate_size,)
                shapes[f"bias_hh_l{layer}"] = (gate_size,)
            for name, shape in shapes.items():
                self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
            self._layer_names.append(list(shapes))
        self.reset_parameters()
        self.flatten_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """``nn.LSTM``'s initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter.

        With per-layer widths, ``H`` is each layer's own width ``H_l`` (what a stack of
        single-layer ``nn.LSTM``s of those widths gets, as AWD-LSTM builds it), so every
        parameter of layer ``l`` is U(-1/sqrt(H_l), 1/sqrt(H_l)). Parameters are drawn in
        registration order, layer by layer, as ``nn.LSTM`` does.
        """
        for layer in range(self.num_layers):
            bound = 1.0 / math.sqrt(self.layer_sizes[layer])
            for weight in self._layer_params(layer):
                nn.init.uniform_(weight, -bound, bound)

    def _input_width(self, layer: int) -> int:
        """Layer ``layer``'s input width: ``input_size`` for layer 0, else the width of the layer below."""
        return self.input_size if layer == 0 else self.layer_sizes[layer - 1]

    def _layer_params(self, layer: int) -> list[Tensor]:
        return [getattr(self, name) for name in self._layer_names[layer]]

    def flatten_parameters(self) -> None:
        """Lay each layer's parameters in one cuDNN buffer (CUDA only; no-op on CPU).

        Per layer rather than for the whole stack, because the engine calls the kernel
        layer by layer and cuDNN checks contiguity from the start of the storage.
        """
        for layer in range(self.num_layers):
            native.flatten_layer(self._layer_params(layer), self._mode, self._input_width(layer),
                                  self.layer_sizes[layer])

    def _apply(self, fn: Any, recurse: bool = True) -> "_DropoutRNN":
        # .to() / .cuda() / .double() create new storages: flatten them again, as nn.RNNBase does.
        ret = super()._apply(fn, recurse)
        self.flatten_parameters()
        return ret

    def __getstate__(self) -> dict[str, Any]:
        # The last forward's output is part of an autograd graph, which cannot be copied;
        # it is transient anyway: copies and pickles start without it.
        return {**self.__dict__, "last_raw_output": None, "_trace": None, "_held_masks": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy and pickle clone each parameter separately, losing the shared buffer.
        super().__setstate__(state)
        self.flatten_parameters()

    # ------------------------------------------------------------------ public info
    @property
    def scheme(self) -> str:
        return self.plan.scheme

    @property
    def rates(self) -> dict[str, float]:
        """``{site: rate}`` for every site of the scheme, ``emb`` included."""
        return self.plan.rates

    @property
    def emb_p(self) -> float:
        """Word-type embedding dropout rate the language model should apply (0 if unused)."""
        return self.plan.rate("emb")

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"  # per-layer widths print as a tuple
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        s += f", scheme={self.plan.scheme!r}"
        rates = {k: v for k, v in self.plan.rates.items() if v}
        if rates:
            s += f", rates={rates}"
        extra = {k: v for k, v in self.plan.options.items()}
        if extra:
            s += f", options={extra}"
        return s

    # ------------------------------------------------------------------ forward
    def trace(self, input: Tensor, hx: Any = None) -> tuple[Any, dict[int, tuple[Tensor, Tensor | None]]]:
        """``forward`` on the reference path, plus the carried state of every layer at every step.

        Returns ``(forward's result, {layer: (h (T, B, H_l), c (T, B, H_l) or None)})``: the values
        each step hands to the next (masked, under ``state`` or ``c`` dropout). This is what
        the stability probes read: the explosion lives in the carried state, which neither
        the output nor ``h_n`` shows step by step. Batch-first input gives (B, T, H).
        """
        self._trace = {}
        try:
            result = self(input, hx)
            steps = self._trace
        finally:
            self._trace = None
        dim = 1 if self.batch_first else 0
        stacked = {}
        for layer, pairs in steps.items():
            h = torch.stack([p[0] for p in pairs], dim)
            c = torch.stack([p[1] for p in pairs], dim) if pairs and pairs[0][1] is not None else None
            stacked[layer] = (h, c)
        return result, stacked

    @contextlib.contextmanager
    def holding_masks(self, store: dict) -> Iterator[None]:
        """Reuse one set of masks for every forward call inside: a fixed sampled model.

        Gal & Ghahramani's MC test (yaringal/BayesianRNN LM_code) draws each pass's masks
        once and keeps them over the whole test sequence, across its BPTT segments. ``store``
        keeps one pass's masks between contexts (give each of K passes its own dict). Only
        masks fixed over time can be held: a scheme with a step-granularity site is refused.
        """
        steps = self.plan.per_step_sites
        if steps:
            raise ValueError(f"masks of step-granularity sites ({', '.join(steps)}) change every step and "
                             "cannot be held over a pass; hold masks only with sequence or batch granularity")
        previous, self._held_masks = self._held_masks, store
        try:
            yield
        finally:
            self._held_masks = previous

    def _initial_state(self, hx: Any, batch: int, like: Tensor,
                       unbatched: bool) -> tuple[list[Tensor], list[Tensor] | None]:
        """``hx`` as per-layer lists ``[(B, H_l)] * L`` of h (and c for the LSTM), zeros when None.

        Stacked widths take ``(L, B, H)`` tensors (``(L, H)`` unbatched), as ``nn.LSTM``;
        per-layer widths take a list or tuple of ``L`` tensors ``(B, H_l)`` (``(H_l,)`` unbatched).
        """
        if hx is None:
            h0 = [like.new_zeros(batch, width) for width in self.layer_sizes]  # (B, H_l) each
            return h0, ([like.new_zeros(batch, width) for width in self.layer_sizes] if self._cell == "lstm" else None)
        if self._cell == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("LSTM hidden state must be a tuple (h0, c0); got something else")
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        return self._layer_states("h0", h0, batch, unbatched), (
            self._layer_states("c0", c0, batch, unbatched) if c0 is not None else None)

    def _layer_states(self, name: str, state: Any, batch: int, unbatched: bool) -> list[Tensor]:
        """One initial state (``h0`` or ``c0``) checked and split into per-layer (B, H_l) tensors."""
        if not self.per_layer_state:
            shape = (self.num_layers, batch, self.hidden_size)  # (L, B, H)
            if not isinstance(state, Tensor):
                raise ValueError(f"{name} must be a tensor of shape {shape} (num_layers, batch, hidden_size), "
                                 f"got {type(state).__name__}")
            if unbatched:
                state = state.unsqueeze(1)
            if tuple(state.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (num_layers, batch, hidden_size), "
                                 f"got {tuple(state.shape)}")
            return list(state.unbind(0))
        shapes = [(batch, width) for width in self.layer_sizes]
        if unbatched:
            shapes = [(width,) for width in self.layer_sizes]
        if not isinstance(state, (list, tuple)) or len(state) != self.num_layers or not all(
                isinstance(t, Tensor) for t in state):
            raise ValueError(f"{name} must be a list of {self.num_layers} tensors, one per layer, of shapes {shapes} "
                             f"(per-layer hidden_size), got {type(state).__name__}")
        got = [tuple(t.shape) for t in state]
        if got != shapes:
            raise ValueError(f"{name} must be a list of tensors of shapes {shapes} (per-layer hidden_size), got {got}")
        return [t.unsqueeze(0) for t in state] if unbatched else list(state)

    def _final_state(self, states: list[Tensor], unbatched: bool) -> Tensor | list[Tensor]:
        """Per-layer final states in ``hx``'s form: stacked (L, B, H), or a list of (B, H_l)."""
        if self.per_layer_state:
            return [t.squeeze(0) for t in states] if unbatched else states
        stacked = torch.stack(states)  # (L, B, H)
        return stacked.squeeze(1) if unbatched else stacked

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """Same call convention as ``torch.nn.LSTM`` / ``torch.nn.GRU``.

        Masks are drawn whenever the module is in training mode, whatever the grad mode:
        MC-dropout evaluation (Gal & Ghahramani 2016, eq. 4) is ``module.train()`` under
        ``torch.no_grad()``.
        """
        if isinstance(input, PackedSequence):
            raise ValueError("PackedSequence input is not supported; pass a padded tensor")
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 2-D (unbatched) or 3-D, got {input.dim()}-D")
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)  # (T, 1, D)
        else:
            x = input.transpose(0, 1) if self.batch_first else input  # (T, B, D)
        steps, batch = x.shape[0], x.shape[1]
        h0, c0 = self._initial_state(hx, batch, x, unbatched)

        training = self.training
        plan = self.plan
        path = self.path(training)
        run_layer = RUNNERS[self._cell]
        if training:
            self.last_masks = {}
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            params = self._layer_params(layer)
            # One mask per boundary between stacked layers, as in Zaremba's, Gal's and AWD-LSTM's
            # code: the upper layer's input site (``x``, or ``between`` when the scheme has it)
            # masks it, and ``out`` masks only the module's output (masking every layer's output
            # as well would drop 0.75 of a boundary at rate 0.5).
            sites = plan.layer_sites(layer, self.num_layers)
            held = self._held_masks.get(layer) if self._held_masks is not None else None
            masks = held if held is not None else draw_layer_masks(
                sites,
                training,
                steps=steps,
                batch=batch,
                input_width=x.shape[2],
                hidden=self.layer_sizes[layer],
                gates=self._gates,
                weight_hh_shape=tuple(params[1].shape),
                options=plan.options,
                cell=self._cell,
                like=x,
            )
            if self._held_masks is not None:
                self._held_masks[layer] = masks
            if training:
                for key, mask in masks.items():
                    self.last_masks[(layer, key)] = mask
            trace = self._trace.setdefault(layer, []) if self._trace is not None else None
            output_keys = {k for k in masks if SITE_SPECS[k.split(".")[0]].placement == "module_output"}
            out_mask = next((masks[k] for k in output_keys), None)
            layer_masks = {k: v for k, v in masks.items() if k not in output_keys}
            x, h, c = run_layer(x, h0[layer], c0[layer] if c0 is not None else None, params, layer_masks, sites,
                                path=path, output_pre_mask=plan.state_output == "pre_mask", trace=trace)
            if layer == self.num_layers - 1 and training:
                self.last_raw_output = x  # (T, B, H): before `out`, for AWD-LSTM's TAR
            if out_mask is not None:
                x = x * out_mask  # (T, B, H) * (T|B|1, ..., H)
            h_n.append(h)  # (B, H_l)
            c_n.append(c)

        output = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        h_out = self._final_state(h_n, unbatched)  # (L, B, H), or a list of (B, H_l)
        if self._cell == "gru":
            return output, h_out
        return output, (h_out, self._final_state(c_n, unbatched))

    def path(self, training: bool) -> str:
        """Which path the layers run in this mode: ``native``, ``segment`` or ``reference``.

        ``trace`` and ``impl="reference"`` run the reference; otherwise the native kernel
        wherever the plan allows (``DropoutPlan.needs_loop``), else the hand-written segment.
        """
        if self._trace is not None or self.impl == "reference":
            return "reference"
        if self.impl == "segment" or self.plan.needs_loop(training):
            return "segment"
        return "native"


class LSTM(_DropoutRNN):
    """``torch.nn.LSTM`` with a dropout scheme; see ``benchmark.engine.SCHEMES``.

    ``dropout`` is one float for every site the scheme uses, or ``{site: rate}``; scheme
    options (``granularity``, ``gate_masks``, ``scaling``, ``drop_cell``) are keywords.
    ``hidden_size`` is an int, or one width per layer (then ``hx`` and the returned state are
    lists of per-layer ``(B, H_l)`` tensors; see the module docstring).
    ``impl="segment"`` forces the hand-written segment and ``impl="reference"`` the plain autograd
    reference, for tests comparing the paths; ``"auto"`` picks the fastest path that is exact.

    After a training forward, ``last_masks[(layer, key)]`` holds the masks it used (eval
    forwards leave it alone). ``key`` is a site name (``"between"`` for an inner layer's input
    mask when the scheme has that site, else ``"x"``), or ``"state.c"`` / ``"zoneout.c"``
    for the LSTM memory's own mask. Shapes: step ``(T, B, D)``, sequence ``(B, D)``, batch
    ``(1, D)``, with a leading gate axis ``(G, ...)`` for untied ``x`` / ``between`` /
    ``h_in``; ``w_hh`` has the weight's shape ``(G*H, H)`` (with per-layer widths, ``H`` is
    the layer's ``H_l``). Dropout masks hold the factor applied (``{0, 1/keep}`` inverted,
    ``{0, 1}`` test); zoneout masks hold 1 where the previous value is kept.
    """

    _cell = "lstm"
    _gates = 4
    _mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int | Sequence[int],
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float | Mapping[str, float] = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        *,
        scheme: str = "none",
        impl: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size,
            scheme=scheme, impl=impl, device=device, dtype=dtype, options=options,
        )


class GRU(_DropoutRNN):
    """``torch.nn.GRU`` with a dropout scheme; see ``LSTM`` for the arguments."""

    _cell = "gru"
    _gates = 3
    _mode = "GRU"

    def __init__(
        self,
        input_size: int,
        hidden_size: int | Sequence[int],
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float | Mapping[str, float] = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        scheme: str = "none",
        impl: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
            scheme=scheme, impl=impl, device=device, dtype=dtype, options=options,
        )
