"""The matrix products of the hand-written segments, on the fastest GEMM the CPU has.

Why this module: a segment's time is almost all GEMMs (per step, the recurrent product
forward and its transpose backward; per segment, the input projection, its two gradients
and ``dU``), and on a CPU the library that runs them matters more than anything else in
the loop. ``torch.nn.LSTM`` runs oneDNN's RNN there, whose GEMMs are oneDNN's own; a plain
``mm``/``addmm`` goes to MKL, which on some CPUs (AMD EPYC with AVX-512 among them, as
profiled for issue 16) is markedly slower for these shapes, above all for a transposed left
operand (``dA^T H``) and for the small-batch products of the recurrence. So:

* every product whose weight is fixed for the segment (``U`` forward, ``U^T`` backward, one
  block per gate under untied masks) is reordered once into oneDNN's blocked layout and
  run through oneDNN's prepacked linear, the step's input term added to its result
  (``PackedLinear``);
* the segment-wide products go through oneDNN's linear (``linear``), operands passed as
  the transposed views they are: oneDNN reads the strides, where a ``.contiguous()`` copy
  of a transposed (G*H, H) weight costs more than the copy itself saves (``input_grad``),
  and a weight gradient ``D^T X`` is one oneDNN product of two transposed views
  (``weight_grad``) instead of MKL's slower transposed-left ``mm``.

Which of the two runs a product is measured, not assumed (issue 24): on an Intel Xeon the BLAS
behind ``mm`` (MKL) beat oneDNN on the segment-wide products and the recurrent backward. Each
product (``linear``, ``weight_grad``, ``PackedLinear``) asks ``gemm_choice.pick`` once per shape,
which times both on first use and remembers the faster per CPU. So do the products of untied gate
masks, whose G per-gate products run either as a loop over the gates or as one batched product
(``Recurrent``, ``gate_input_grads``, ``gate_weight_grads``).

Everything falls back to ``mm``/``addmm`` where oneDNN's prepacked linear is missing or does
not apply (other dtypes, CUDA). Results are the same products up to summation order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable
from torch import Tensor

from benchmark.engine import gemm_choice

_linear = torch.ops.mkldnn._linear_pointwise if hasattr(torch.ops, "mkldnn") else None


@functools.lru_cache(maxsize=None)
def _onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's prepacked linear (``torch.ops.mkldnn``), checked once on a tiny case."""
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 3), 1)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 3), w, torch.ones(2), "none", [], "")
        return bool(torch.equal(y, torch.full((1, 2), 4.0)))
    except Exception:  # noqa: BLE001 - any failure means: use the plain matmul
        return False


def use_onednn(t: Tensor) -> bool:
    """oneDNN's linear for float32 CPU tensors, when torch has it and it is enabled."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and _onednn_linear_works())


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return _linear(x, weight, bias, "none", [], "")


def _blas_weight_grad(grad: Tensor, x: Tensor) -> Tensor:
    return (x.t() @ grad).t()  # the orientation MKL runs fastest; a view, laid out by the caller


Calls = Callable[[], tuple[Callable[[], Tensor], Callable[[], Tensor]]]


def _on_onednn(kind: str, shape: tuple[int, ...], calls: Calls) -> bool:
    """Whether oneDNN, rather than the BLAS, runs this float32 product. ``calls()`` gives the product
    once each way, ``(onednn, blas)``; it is made and timed only on the shape's first use."""
    return gemm_choice.pick(kind, shape, torch.float32, lambda: dict(zip(("onednn", "blas"), calls()))) == "onednn"


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T (+ bias)``: ``(M, K), (N, K) -> (M, N)``."""
    if use_onednn(x):
        # A transposed weight (``input_grad``) is a different product for both libraries.
        shape = (x.size(0), weight.size(0), x.size(1), int(weight.stride(0) == 1), int(bias is not None))
        if _on_onednn("linear", shape, lambda: (lambda: _onednn_linear(x, weight, bias),
                                                lambda: torch.nn.functional.linear(x, weight, bias))):
            return _onednn_linear(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def input_grad(grad: Tensor, weight: Tensor) -> Tensor:
    """``grad @ weight``: ``(M, N), (N, K) -> (M, K)``, the gradient of a linear's input."""
    return linear(grad, weight.t())


def weight_grad(grad: Tensor, x: Tensor, out: Tensor | None = None) -> Tensor:
    """``grad^T @ x``: ``(M, N), (M, K) -> (N, K)``, the gradient of a linear's weight.

    oneDNN: ``linear(grad^T, x^T)``, both transposed views, the result contiguous (N, K) as the
    parameter is. Elsewhere ``(x^T grad)^T``, the orientation MKL runs fastest, laid out
    contiguously. Written into ``out``, a contiguous (N, K) block (one gate's rows of a larger
    weight), when given.
    """
    if use_onednn(grad) and _on_onednn("weight_grad", (grad.size(1), x.size(1), grad.size(0)),
                                       lambda: (lambda: _onednn_linear(grad.t(), x.t()),
                                                lambda: _blas_weight_grad(grad, x).contiguous())):
        product = _onednn_linear(grad.t(), x.t())
        return product if out is None else out.copy_(product)
    product = _blas_weight_grad(grad, x)
    return product.contiguous() if out is None else out.copy_(product)


def _reorder(weight: Tensor, rows: int) -> Tensor:
    """``weight`` in oneDNN's blocked layout for products with ``rows`` rows; a transposed view
    (``U^T`` for the backward) is read as it is, with no contiguous copy first."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


def _packed_calls(weight: Tensor, rows: int) -> tuple[Callable[[], Tensor], Callable[[], Tensor]]:
    """A step's product both ways, on an input of the step's shape, for ``PackedLinear``'s first measurement."""
    x = weight.new_full((rows, weight.size(1)), 0.5)  # no random draw: a seed's masks stay the same
    packed = _reorder(weight, rows)
    return (lambda: _onednn_linear(x, packed)), (lambda: x @ weight.t())


class PackedLinear:
    """``x @ weight^T (+ add)`` for a weight fixed over many calls: reordered once for oneDNN.

    ``rows`` is the batch the calls will have (oneDNN picks its blocking for it). ``add`` is
    a ``(M, N)`` tensor added to the product, or a bias broadcast over the rows.
    """

    def __init__(self, weight: Tensor, rows: int) -> None:
        self.weight = weight  # (N, K)
        self.packed = None
        shape = (rows, weight.size(0), weight.size(1), int(weight.stride(0) == 1))  # U^T (backward) differs from U
        if use_onednn(weight) and _on_onednn("packed_linear", shape, lambda: _packed_calls(weight, rows)):
            self.packed = _reorder(weight, rows)

    def __call__(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        if self.packed is not None:
            if add is not None and add.dim() == 2:
                # Added after the product, not as oneDNN's fused ``binary`` add: with the kernels
                # capped to AVX2 that post-op made the recurrent product about 15 % slower (and it
                # gained nothing with AVX-512).
                return _linear(x, self.packed, None, "none", [], "").add_(add)
            return _linear(x, self.packed, add, "none", [], "")
        if add is None:
            return x @ self.weight.t()
        return torch.addmm(add, x, self.weight.t())


class Recurrent:
    """The per-step recurrent product ``base_t + (h * m_t) U^T`` and ``d h_{t-1}``, set up once per segment.

    Tied (or no) ``h_in`` masks: one (B, H) x (H, G*H) product per step. Untied masks (one
    per gate, Gal & Ghahramani 2016): gate ``g`` reads its own masked copy of h through its
    own block ``U_g``, and the step's terms stay per gate (``gate_major``): nothing is
    concatenated. Two ways to run the G products, chosen per shape and CPU by measurement
    (``untied_way``, issue 24): ``looped``, one prepacked (B, H) x (H, H) product per gate;
    ``batched``, one batched product over the G masked copies, made in one multiplication,
    against the blocks laid out once per segment in the orientation the BLAS runs fastest
    (``U_g^T`` forward, ``U_g`` backward). On the Intel Xeon of issue 24 (width 650, batch 20, one
    thread) a batched forward step took 0.67 ms against the loop's 0.98 (``recurrent_gates`` in
    docs/results/speed_cpu_intel/speed.json), where the loop had kept ``variational`` over its speed
    target.

    ``masks`` is the per-step list of ``h_in`` masks (or None); ``untied`` says whether its
    entries carry a leading gate axis, (G, B|1, H).
    """

    def __init__(self, weight: Tensor, gates: int, masks, untied: bool, batch: int, forward: bool,
                 way: str | None = None) -> None:
        self.gates, self.hidden, self.untied, self.masks = gates, weight.size(1), untied, masks
        self.way = (way or untied_way(weight, gates, masks, batch, forward)) if untied else None
        if self.way == "batched":
            blocks = weight.reshape(gates, -1, self.hidden)  # (G, H, H): U_g
            self.blocks = blocks.transpose(1, 2).contiguous() if forward else blocks
            self.masked = weight.new_empty(gates, batch, self.hidden)  # every gate's masked h, reused
            return
        if untied:  # each step's mask split per gate once, a mask fixed over the segment once in all
            split: dict[int, tuple[Tensor, ...]] = {}
            for m in masks:
                if id(m) not in split:
                    split[id(m)] = m.unbind(0)
            self.masks = [split[id(m)] for m in masks]
        blocks = weight.split(self.hidden) if untied else (weight,)  # (G*H, H) or G x (H, H)
        if forward:
            self.products = [PackedLinear(u, batch) for u in blocks]
        else:  # d h_{t-1} = dA_t U: a linear with weight U^T
            self.products = [PackedLinear(u.t(), batch) for u in blocks]

    def gate_terms(self, h: Tensor, base, t: int) -> Sequence[Tensor]:
        """The G pre-activations ``base_g + (h * m_t[g]) U_g^T``, each (B, H).

        ``base``: tied, a (B, G*H) term, a (G*H,) bias or None; untied, one term per gate
        (a (G, B, H) tensor or a (G, H) bias) or None.
        """
        if not self.untied:
            hm = h if self.masks is None else h * self.masks[t]
            return self.products[0](hm, base).chunk(self.gates, 1)
        m = self.masks[t]
        if self.way == "batched":
            masked = torch.mul(h, m, out=self.masked)  # (G, B, H)
            if base is None:
                return torch.bmm(masked, self.blocks).unbind(0)
            return torch.baddbmm(base if base.dim() == 3 else base.unsqueeze(1), masked, self.blocks).unbind(0)
        return [product(h * m[g], None if base is None else base[g]) for g, product in enumerate(self.products)]

    def forward(self, h: Tensor, base: Tensor | None, t: int) -> Tensor:
        """``base + (h * m_t) U^T`` as one (B, G*H) tensor; ``base`` is a (G*H,) bias or None."""
        if not self.untied:
            hm = h if self.masks is None else h * self.masks[t]
            return self.products[0](hm, base)
        per_gate = None if base is None else base.view(self.gates, self.hidden)
        return torch.cat(self.gate_terms(h, per_gate, t), 1)

    def grad_h(self, da: Tensor, t: int) -> Tensor:
        """``d h_{t-1}`` through the product: ``(dA_t U) * m_t`` (untied: summed over gates), a fresh tensor.

        ``da`` is the step's (B, G*H) gradient; untied, it may also be its (G, B, H) gate-major block.
        """
        if not self.untied:
            dh = self.products[0](da)
            return dh if self.masks is None else dh.mul_(self.masks[t])
        if self.way == "batched":
            if da.dim() == 2:
                da = da.view(da.size(0), self.gates, self.hidden).transpose(0, 1)  # (G, B, H), strided
            return masked_gate_sum(torch.bmm(da, self.blocks), self.masks[t])  # dA_g U_g, gate by gate
        pieces = da.unbind(0) if da.dim() == 3 else da.split(self.hidden, 1)
        return masked_gate_sum((product(piece) for product, piece in zip(self.products, pieces)), self.masks[t])


def masked_gate_sum(parts, masks) -> Tensor:
    """``sum_g parts[g] * masks[g]`` into a fresh tensor: the gradient reaching an input that every gate
    read under its own mask (untied masks). ``parts`` may be a generator, each product made as it is added."""
    parts = iter(parts)
    total = torch.mul(next(parts), masks[0])
    for g, part in enumerate(parts, 1):
        total.addcmul_(part, masks[g])
    return total


def untied_way(weight: Tensor, gates: int, masks, batch: int, forward: bool) -> str:
    """How ``Recurrent`` runs the G per-gate products of an untied step (``gemm_choice.GATE_WAYS``):
    measured on the first segment of each shape on this CPU, one whole step each way.

    CUDA keeps the looped way: no GPU has measured the batched one yet.
    """
    if weight.device.type != "cpu":
        return gemm_choice.GATE_WAYS[0]
    hidden = weight.size(1)
    shape = (batch, hidden, hidden, gates, int(forward))

    def calls() -> dict[str, Callable[[], object]]:
        h = weight.new_full((batch, hidden), 0.5)  # no random draw: a seed's masks stay the same
        first = [masks[0]]
        ways = {way: Recurrent(weight, gates, first, True, batch, forward, way=way) for way in gemm_choice.GATE_WAYS}
        if forward:
            base = weight.new_zeros(gates, batch, hidden)
            return {way: (lambda r=r: r.gate_terms(h, base, 0)) for way, r in ways.items()}
        da = weight.new_full((gates, batch, hidden), 0.5)
        return {way: (lambda r=r: r.grad_h(da, 0)) for way, r in ways.items()}

    return gemm_choice.pick("recurrent_gates", shape, weight.dtype, calls, names=gemm_choice.GATE_WAYS)


def _gate_grads_looped(rows: Tensor, inputs: Tensor, masks: Tensor) -> Tensor:
    """``gate_weight_grads`` one gate at a time, each gate's masked input made in one reused buffer."""
    gates, _, hidden = rows.shape
    grad = rows.new_empty(gates * hidden, inputs.size(-1))
    masked = torch.empty_like(inputs)
    for g in range(gates):
        torch.mul(inputs, masks[g], out=masked)
        weight_grad(rows[g], masked.reshape(-1, inputs.size(-1)), out=grad[g * hidden:(g + 1) * hidden])
    return grad


def _gate_grads_batched(rows: Tensor, inputs: Tensor, masks: Tensor) -> Tensor:
    """``gate_weight_grads`` as one batched product over every gate's masked input at once."""
    gates, _, hidden = rows.shape
    masked = (inputs * masks).reshape(gates, -1, inputs.size(-1))  # (G, T*B, D)
    return torch.bmm(rows.transpose(1, 2), masked).view(gates * hidden, -1)


def gate_weight_grads(rows: Tensor, inputs: Tensor, masks: Tensor) -> Tensor:
    """``dW`` of a weight whose gates read their own masked copy of the input (untied masks, Gal &
    Ghahramani 2016): gate ``g``'s rows ``rows[g]^T (inputs * masks[g])``, as one (G*H, D) tensor.

    ``rows`` is (G, T*B, H) (any strides), ``inputs`` (T, B, D), ``masks`` (G, T|1, B|1, D). Two
    ways, chosen per shape by measurement (``gemm_choice``): a loop of G products over one reused
    buffer, or one batched product over a (G, T*B, D) copy; on the Intel Xeon of issue 24 the
    batched one took about a third less time.
    """
    if inputs.device.type != "cpu":
        return _gate_grads_batched(rows, inputs, masks)
    gates, steps_batch, hidden = rows.shape
    shape = (hidden, inputs.size(-1), steps_batch, gates)
    way = gemm_choice.pick("gate_weight_grads", shape, rows.dtype, lambda: {
        "looped": lambda: _gate_grads_looped(rows, inputs, masks),
        "batched": lambda: _gate_grads_batched(rows, inputs, masks)}, names=gemm_choice.GATE_WAYS)
    return (_gate_grads_looped if way == "looped" else _gate_grads_batched)(rows, inputs, masks)


def _gate_input_grads_looped(rows: Tensor, weight: Tensor, masks: Tensor, shape: torch.Size) -> Tensor:
    blocks = weight.split(rows.size(-1))
    return masked_gate_sum((input_grad(r, w).view(shape) for r, w in zip(rows, blocks)), masks)


def _gate_input_grads_batched(rows: Tensor, weight: Tensor, masks: Tensor, shape: torch.Size) -> Tensor:
    gates, _, hidden = rows.shape
    per_gate = torch.bmm(rows, weight.reshape(gates, hidden, -1)).view(gates, *shape)  # (G, T, B, D): dY_g W_g
    return masked_gate_sum(per_gate, masks)


def gate_input_grads(rows: Tensor, weight: Tensor, masks: Tensor, shape: torch.Size) -> Tensor:
    """``dX`` of a projection whose gates read their own masked copy of the input (untied masks):
    ``sum_g (rows[g] W_g) * masks[g]``, shaped ``shape`` (T, B, D).

    ``rows`` is (G, T*B, H) (any strides), ``weight`` (G*H, D), ``masks`` (G, T|1, B|1, D). Looped,
    one product per gate, or batched, one product over every gate at once, chosen per shape by
    measurement like ``gate_weight_grads``.
    """
    if rows.device.type != "cpu":
        return _gate_input_grads_batched(rows, weight, masks, shape)
    gates, steps_batch, hidden = rows.shape
    way = gemm_choice.pick("gate_input_grads", (steps_batch, weight.size(1), hidden, gates), rows.dtype, lambda: {
        "looped": lambda: _gate_input_grads_looped(rows, weight, masks, shape),
        "batched": lambda: _gate_input_grads_batched(rows, weight, masks, shape)}, names=gemm_choice.GATE_WAYS)
    return (_gate_input_grads_looped if way == "looped" else _gate_input_grads_batched)(rows, weight, masks, shape)


def recurrent_weight_grad(da: Tensor, inputs: Tensor, gates: int, untied: bool, gate_major: bool = False,
                          gate_masks: Tensor | None = None) -> Tensor:
    """``dU = sum_t dA_t^T h_in_t`` in one product over all ``T*B`` rows (untied: one per gate).

    ``da`` is (T, B, G*H), or (G, T, B, H) when ``gate_major``; ``inputs`` the h that entered
    U at every step, (T, B, H) (``segment.recurrent_inputs``). With untied masks ``gate_masks``
    (G, T|1, B|1, H) gives each gate's mask on ``inputs`` (``gate_weight_grads``).
    """
    if gate_major:
        _, steps, batch, hidden = da.shape
        rows = da.reshape(gates, steps * batch, hidden)
    else:
        steps, batch, gh = da.shape
        hidden = gh // gates
        flat = da.reshape(steps * batch, gh)
        if not untied:
            return weight_grad(flat, inputs.reshape(steps * batch, hidden))  # (G*H, H)
        rows = flat.view(steps * batch, gates, hidden).transpose(0, 1)  # (G, T*B, H), strided
    if gate_masks is not None:
        return gate_weight_grads(rows, inputs, gate_masks)
    grad = da.new_empty(gates * hidden, hidden)
    for g in range(gates):
        weight_grad(rows[g], inputs.reshape(steps * batch, hidden), out=grad[g * hidden:(g + 1) * hidden])
    return grad  # (G*H, H)


def _gate_input(x: Tensor, gate_masks: Tensor | None, gate: int, buffer: Tensor | None) -> Tensor:
    """What gate ``gate``'s block of ``W`` reads, as (T*B, D): ``x``, or ``x`` under that gate's mask
    written into ``buffer`` (one reused buffer for all gates, not a (G, T, B, D) copy of ``x``)."""
    if gate_masks is not None:
        x = torch.mul(x, gate_masks[gate], out=buffer)
    return x.reshape(-1, x.size(-1))


class _Projection(torch.autograd.Function):
    """``x (T, B, D) -> x W^T + b``, with untied input masks ``(G, T|1, B|1, D)`` per gate.

    Why a function of its own: its backward (``dX`` and ``dW``) are two of the largest
    products of a training step, and autograd's ``addmm`` backward runs ``dW`` as
    ``dY^T X`` (see the module doc). Untied masks give every gate its own masked copy of
    ``x`` (Gal & Ghahramani 2016), so each gate's block of ``W`` is one product, and with
    ``gate_major`` each gate's result stays in its own contiguous block: the output is
    (G, T, B, H) instead of (T, B, G*H). The masked copies are made gate by gate, in forward
    and again in backward, into one buffer: only ``x`` and the masks are kept.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, gate_masks: Tensor | None, gates: int,  # type: ignore[override]
                gate_major: bool):
        steps, batch, width = x.shape
        hidden = weight.size(0) // gates
        if gate_masks is None and not gate_major:
            out = linear(x.reshape(steps * batch, width), weight, bias).view(steps, batch, -1)
        else:
            blocks = weight.split(hidden)
            biases = (None,) * gates if bias is None else bias.split(hidden)
            buffer = None if gate_masks is None else torch.empty_like(x)
            parts = [linear(_gate_input(x, gate_masks, g, buffer), blocks[g], biases[g]) for g in range(gates)]
            if gate_major:  # each gate's product in its own block
                out = torch.stack(parts).view(gates, steps, batch, hidden)
            else:
                out = torch.cat(parts, 1).view(steps, batch, gates * hidden)
        ctx.gates, ctx.gate_major = gates, gate_major
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, gate_masks)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, weight, gate_masks = ctx.saved_tensors
        gates, (steps, batch, width) = ctx.gates, x.shape
        hidden = weight.size(0) // gates
        if ctx.gate_major:
            rows = [grad[g].reshape(steps * batch, hidden) for g in range(gates)]
        else:
            flat = grad.reshape(steps * batch, gates * hidden)  # (T*B, G*H)
            if gate_masks is None:
                d_x = input_grad(flat, weight).view(steps, batch, width) if ctx.needs_input_grad[0] else None
                d_w = weight_grad(flat, x.reshape(steps * batch, width)) if ctx.needs_input_grad[1] else None
                d_b = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
                return d_x, d_w, d_b, None, None, None
            rows = [flat[:, g * hidden:(g + 1) * hidden] for g in range(gates)]
        d_x = d_w = d_b = None
        blocks = weight.split(hidden)
        per_gate = (grad.reshape(gates, steps * batch, hidden) if ctx.gate_major  # (G, T*B, H)
                    else grad.reshape(steps * batch, gates, hidden).transpose(0, 1))
        if ctx.needs_input_grad[0] and gate_masks is not None:
            d_x = gate_input_grads(per_gate, weight, gate_masks, x.shape)
        elif ctx.needs_input_grad[0]:
            d_x = input_grad(rows[0], blocks[0]).view(x.shape)
            for g in range(1, gates):
                d_x.add_(input_grad(rows[g], blocks[g]).view(x.shape))
        if ctx.needs_input_grad[1] and gate_masks is not None:
            d_w = gate_weight_grads(per_gate, x, gate_masks)
        elif ctx.needs_input_grad[1]:
            d_w = weight.new_empty(weight.shape)
            for g in range(gates):
                weight_grad(rows[g], _gate_input(x, None, g, None), out=d_w[g * hidden:(g + 1) * hidden])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_b = torch.cat([r.sum(0) for r in rows])
        return d_x, d_w, d_b, None, None, None


def project(x: Tensor, weight: Tensor, bias: Tensor | None, x_mask: Tensor | float | None, gates: int,
            untied: bool, gate_major: bool = False) -> Tensor:
    """All input projections of a segment at once: ``(T, B, D) -> (T, B, G*H)``.

    ``x_mask`` masks the input (a tensor, or a float in eval); with ``untied`` it carries a
    gate axis ``(G, T|B|1, ..., D)`` and every gate sees its own masked copy.
    ``gate_major`` returns the result as (G, T, B, H), one contiguous block per gate, for a
    segment whose recurrence is untied too.
    """
    if untied and isinstance(x_mask, Tensor):
        mask = x_mask if x_mask.dim() == 4 else x_mask.unsqueeze(1)  # (G, T|1, B|1, D)
        return _Projection.apply(x, weight, bias, mask, gates, gate_major)
    if x_mask is not None:
        x = x * x_mask  # (T, B, D)
    return _Projection.apply(x, weight, bias, None, gates, gate_major)
