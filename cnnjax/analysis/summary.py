"""A table of a model's layers: output shape, parameters, FLOPs, receptive field and jump.

Nothing is computed or allocated: one abstract forward pass (``jax.eval_shape`` of
``model.init``) records every module call with its input and output shapes
(``flax.linen.intercept_methods``, see :mod:`cnnjax.analysis._trace`), and the numbers
follow from each layer's type, fields, parameter shapes and those shapes.

Conventions
-----------
Rows: every module call, in call order, each before the calls inside it (indented by
depth in the table); the last row is the model itself, i.e. the totals. Functions that
are not modules (``nn.relu``, reshapes, concatenations) have no row. A module called
twice has two rows; its parameters are counted at the first.

Output shape: of one example (no batch dimension).

Parameters: entries of the ``params`` collection in the module's subtree (batch
statistics are state, not parameters).

FLOPs: per example, 2 x the multiply-adds of the layer's linear maps; a row includes the
rows inside it. With ``P_in``/``P_out`` the input/output positions (product of the
spatial sizes; 1 without spatial dims):

- ``Conv``: ``2 P_out kh kw (C_in / groups) C_out`` (= ``2 P_out`` x kernel size, any rank);
  ``DepthwiseConv`` alike, with one input channel per filter;
- ``SeparableConv``: its depthwise and its pointwise kernel, both at ``P_out``;
- ``SpatiallySeparableConv``: the ``kh x 1`` pass at ``H_out x W_in`` positions plus the
  ``1 x kw`` pass at ``H_out x W_out``;
- ``ConvTranspose``: ``2 P_in`` x kernel size (every input position goes through every tap);
- ``DeformableConv``: its convolution, plus the sampling: each of the ``P_out kh kw C_in``
  sampled values is a bilinear interpolation of 4 pixels (4 multiply-adds), plus one for
  the v2 modulation mask; the interpolation weights (per position and tap, shared by the
  channels) are not counted. Its ``offset_conv`` is a ``Conv`` row of its own;
- ``ConvMaxPool``: its convolution at every position before the pool (the pool is free);
- ``nn.Dense``, and any other module with a ``kernel`` parameter (e.g. a model's own
  convolution): ``2 P_out`` x kernel size, i.e. ``2 in out`` at every position for a dense
  layer;
- 0 for what has no multiply-adds: biases, activations, pooling (comparisons or
  additions), normalisation, elementwise functions.

Receptive field ``r`` and jump ``j``, per spatial dim, in input pixels (Araujo et al.,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019): ``r`` is the
extent of the input that one output position depends on, ``j`` the distance in the input
between neighbouring output positions. At the model input ``r = j = 1``.

- windowed layers with kernel ``k``, dilation ``d``, stride ``s``: ``r' = r + d (k - 1) j``,
  ``j' = j s``. Padding changes neither: ``r`` counts padded positions too, so it can
  exceed the input. These are the convolutions, ``MaxPool`` and ``AvgPool``, and any
  other module without submodules that has a ``kernel_size`` or ``window`` field (its
  ``stride``, default 1, or the window for ``window``; its ``dilation``, default 1), such
  as a model's own subsampling or masked convolution;
- ``ConvMaxPool``: its stride-1 convolution, then its pooling window (stride ``pool``);
- ``ConvTranspose`` with stride ``s``: ``j' = j / s`` and ``r' = r + m j``, where ``m`` is
  how many input steps apart the farthest two inputs of one output lie
  (``floor((k - 1) / s)`` without dilation);
- dropping the spatial dims (global pooling, or ``nn.Dense`` on a flattened map of
  ``n`` positions): ``r' = r + (n - 1) j``, and no jump (``-``): the field is global and
  stays so;
- ``DeformableConv``: its undeformed grid (learned offsets can reach farther);
- other modules (normalisation, dropout, ...): unchanged.

The field of a layer's input is that of the array it receives when that array is the
input or output of a recorded call; otherwise (it went through ``nn.relu``, a reshape,
...) that of the most recent one: the sequential path. A block of parallel branches
(e.g. ``Inception``) takes the branch with the largest receptive field. A reshape that
changes the number of spatial dims (an image read as a sequence) restarts at
``r = j = 1`` in the new positions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.analysis._table import render
from cnnjax.analysis._trace import Call, subtree, trace_calls
from cnnjax.layers import (
    AvgPool,
    Conv,
    ConvMaxPool,
    ConvTranspose,
    DeformableConv,
    DepthwiseConv,
    MaxPool,
    SeparableConv,
    SpatiallySeparableConv,
)
from cnnjax.ops._args import as_tuple, conv_output_shape

__all__ = ["LayerRow", "format_table", "layer_rows"]

# Layers whose receptive field grows by their window (``kernel_size`` or ``window``).
_WINDOWED = (
    AvgPool,
    Conv,
    DeformableConv,
    DepthwiseConv,
    MaxPool,
    SeparableConv,
    SpatiallySeparableConv,
)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One module call (or, last, the whole model).

    Attributes:
      path: the module's path in the model (``()`` for the model).
      name: the module's name (the model's class name for the model).
      kind: the module's class name.
      output_shape: the output of one example, without the batch dim.
      params: parameters in the module's subtree (0 at repeated calls of a module).
      flops: FLOPs per example of the call, including the calls inside it.
      receptive_field: per input spatial dim, in input pixels.
      jump: per input spatial dim, in input pixels; ``None`` once spatial dims are gone.
    """

    path: tuple[str, ...]
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int
    receptive_field: tuple[Fraction, ...]
    jump: tuple[Fraction, ...] | None


def layer_rows(model: nn.Module, input_shape: Sequence[int]) -> list[LayerRow]:
    """One :class:`LayerRow` per module call in call order, then one for the model.

    Args:
      model: an unbound Flax module called as ``model(x, train=False)``.
      input_shape: ``(N, *spatial, C)`` of an input batch (only one example's worth of
        FLOPs is reported, whatever ``N``).
    """
    calls: list[Call] = []

    def init(x: jax.Array) -> Any:
        variables, recorded = trace_calls(lambda: model.init(jax.random.key(0), x, train=False))
        calls.extend(recorded)
        return variables

    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    params = jax.eval_shape(init, x).get("params", {})
    fields = _receptive_fields(calls)
    flops = _inclusive_flops(calls, params)
    rows, counted = [], set()
    for call, field, f in zip(calls, fields, flops, strict=True):
        first = call.path not in counted
        counted.add(call.path)
        rows.append(
            LayerRow(
                path=call.path,
                name=call.name,
                kind=type(call.module).__name__,
                output_shape=_shape(call.output)[1:],
                params=_count(subtree(params, call.path)) if first else 0,
                flops=f,
                receptive_field=field.size,
                jump=field.jump,
            )
        )
    return [*rows[1:], rows[0]]  # the model's row (the first call) last: the totals


def format_table(rows: Sequence[LayerRow]) -> str:
    """``rows`` (from :func:`layer_rows`) as an aligned table, the model's row last as the
    total, then a line that says the units."""
    header = ("layer", "type", "output shape", "params", "FLOPs", "RF", "jump")
    body = [_cells(row, indent="  " * (len(row.path) - 1)) for row in rows[:-1]]
    total = rows[-1]
    table = render(header, body, right={3, 4, 5, 6}, total=_cells(total, indent=""))
    return (
        f"{table}\nTotal: {total.params:,} params, {total.flops / 1e6:,.2f} MFLOPs per example "
        "(FLOPs = 2 x multiply-adds).\nRF: receptive field, jump: distance between "
        "neighbouring outputs, both in input pixels ('-': no spatial dims left)."
    )


# ----------------------------------------------------------------------------- FLOPs


def _inclusive_flops(calls: list[Call], params: dict) -> list[int]:
    """Each call's own FLOPs plus those of the calls inside it."""
    flops = [_own_flops(call, subtree(params, call.path)) for call in calls]
    for i in reversed(range(len(calls))):  # children come after their parent
        flops[i] += sum(flops[c] for c in calls[i].children)
    return flops


def _own_flops(call: Call, p: dict) -> int:
    """FLOPs of ``call``'s own maths, without the calls inside it (module docstring)."""
    m = call.module
    in_shape, out_shape = _shape(call.input), _shape(call.output)
    p_out = math.prod(out_shape[1:-1])
    if isinstance(m, SpatiallySeparableConv):
        h_out, w_in, w_out = out_shape[1], in_shape[2], out_shape[2]
        return 2 * h_out * (w_in * _size(p["col_kernel"]) + w_out * _size(p["row_kernel"]))
    if isinstance(m, SeparableConv):
        return 2 * p_out * (_size(p["depthwise_kernel"]) + _size(p["pointwise_kernel"]))
    if isinstance(m, ConvTranspose):
        return 2 * math.prod(in_shape[1:-1]) * _size(p["kernel"])
    if isinstance(m, ConvMaxPool):  # the convolution at every position before the pool
        kernel = p["kernel"].shape[:-2]
        conv_out = conv_output_shape(in_shape[1:-1], kernel, padding=m.padding)
        return 2 * math.prod(conv_out) * _size(p["kernel"])
    if isinstance(m, DeformableConv):
        taps = math.prod(p["kernel"].shape[:-2])
        per_sample = 4 + int(m.use_mask)  # bilinear corners, and the v2 mask
        return 2 * p_out * (_size(p["kernel"]) + taps * in_shape[-1] * per_sample)
    if "kernel" in p:  # Conv, DepthwiseConv, nn.Dense, a model's own convolution
        return 2 * p_out * _size(p["kernel"])
    return 0


# ----------------------------------------------------------------------------- receptive field


@dataclasses.dataclass(frozen=True)
class _Field:
    """Receptive field of the positions of one array.

    Attributes:
      size: ``r`` per spatial dim of the input it is measured in.
      jump: ``j`` per spatial dim; ``None`` when global (spatial dims dropped).
      spatial: spatial shape of the array it describes (for flattening).
    """

    size: tuple[Fraction, ...]
    jump: tuple[Fraction, ...] | None
    spatial: tuple[int, ...]

    @classmethod
    def start(cls, spatial: tuple[int, ...]) -> _Field:
        ones = (Fraction(1),) * len(spatial)
        return cls(ones, ones, spatial)

    def collapse(self) -> _Field:
        """Every position of the array at once: global pooling, or dense after flatten."""
        if self.jump is None:
            return self
        size = tuple(
            r + (n - 1) * j for r, n, j in zip(self.size, self.spatial, self.jump, strict=True)
        )
        return _Field(size, None, ())


def _receptive_fields(calls: list[Call]) -> list[_Field]:
    """The field of each call's output, replaying the calls in execution order."""
    known: dict[int, _Field] = {}  # id(array) -> field, for arrays the calls saw
    fields: list[_Field | None] = [None] * len(calls)
    latest: _Field | None = None

    def visit(i: int) -> None:
        nonlocal latest
        call = calls[i]
        x = _array(call.input)
        field_in = _input_field(
            latest if x is None else known.get(id(x), latest), _spatial(call.input)
        )
        if x is not None:
            known[id(x)] = field_in
        latest = field_in
        for child in call.children:
            visit(child)
        latest = fields[i] = _propagate(call, field_in, [fields[c] for c in call.children])
        if _array(call.output) is not None:
            known[id(_array(call.output))] = latest

    visit(0)
    return fields


def _input_field(field: _Field | None, spatial: tuple[int, ...]) -> _Field:
    """``field`` as the field of an array with spatial shape ``spatial``."""
    if field is None:
        return _Field.start(spatial)
    if not spatial:  # a flattened map (or a vector): keep the map's shape for collapse
        return field
    if field.jump is not None and len(field.jump) != len(spatial):
        return _Field.start(spatial)  # reshaped to another number of spatial dims
    return dataclasses.replace(field, spatial=spatial)


def _propagate(call: Call, field: _Field, inner: list[_Field]) -> _Field:
    """The field of ``call``'s output from that of its input and, for a block, those of
    the calls inside it (module docstring)."""
    out_spatial = _spatial(call.output)
    if field.jump is None:
        return dataclasses.replace(field, spatial=out_spatial)
    m, n = call.module, len(field.jump)
    if isinstance(m, ConvMaxPool):  # a stride-1 convolution, then the pooling window
        ones = (1,) * n
        conv = _through_window(field, as_tuple("kernel_size", m.kernel_size, n), ones, ones)
        pool = as_tuple("pool", m.pool, n)
        return dataclasses.replace(_through_window(conv, pool, pool, ones), spatial=out_spatial)
    if isinstance(m, _WINDOWED) or (not inner and _has_window(m)):
        field = _through_window(field, *_window(m, n))
        return dataclasses.replace(field, spatial=out_spatial)
    if isinstance(m, ConvTranspose):
        kernel, stride, dilation = _window(m, n)
        reach = [
            _transpose_reach(k, s, d) for k, s, d in zip(kernel, stride, dilation, strict=True)
        ]
        size = tuple(r + a * j for r, a, j in zip(field.size, reach, field.jump, strict=True))
        jump = tuple(j / s for j, s in zip(field.jump, stride, strict=True))
        return _Field(size, jump, out_spatial)
    if inner:  # a block: its widest branch, the last one of equal width (its output)
        widest = max(reversed(inner), key=lambda f: f.size)
        if not out_spatial:
            return widest.collapse()
        return dataclasses.replace(widest, spatial=out_spatial)
    if not out_spatial:  # global pooling, dense on a flattened map
        return field.collapse()
    return dataclasses.replace(field, spatial=out_spatial)


def _through_window(
    field: _Field, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> _Field:
    """The field after a window of ``kernel`` taps: ``r' = r + d (k - 1) j``, ``j' = j s``
    (``spatial`` is left to the caller)."""
    size = tuple(
        r + d * (k - 1) * j
        for r, k, d, j in zip(field.size, kernel, dilation, field.jump, strict=True)
    )
    jump = tuple(j * s for j, s in zip(field.jump, stride, strict=True))
    return dataclasses.replace(field, size=size, jump=jump)


def _has_window(m: nn.Module) -> bool:
    return not isinstance(m, ConvTranspose) and (hasattr(m, "kernel_size") or hasattr(m, "window"))


def _window(m: nn.Module, n: int) -> tuple[tuple[int, ...], ...]:
    """``(kernel, stride, dilation)`` of a layer with ``n`` spatial dims, from its fields:
    ``kernel_size`` or ``window`` (then the stride defaults to the window)."""
    if hasattr(m, "window"):
        kernel = as_tuple("window", m.window, n)
        stride = getattr(m, "stride", None) or kernel
    else:
        kernel = as_tuple("kernel_size", m.kernel_size, n)
        stride = getattr(m, "stride", 1)
    dilation = getattr(m, "dilation", 1)
    return kernel, as_tuple("stride", stride, n), as_tuple("dilation", dilation, n)


def _transpose_reach(k: int, s: int, d: int) -> int:
    """Input steps between the farthest two inputs of one output of a transposed conv.

    Output ``y`` reads input ``x`` through tap ``t`` when ``x s + t d = y + pad``, so the taps
    an output uses are those with ``t d`` in one residue class modulo ``s``.
    """
    reach = 0
    for residue in range(s):
        taps = [t for t in range(k) if (t * d - residue) % s == 0]
        if taps:
            reach = max(reach, (taps[-1] - taps[0]) * d // s)
    return reach


# ----------------------------------------------------------------------------- helpers


def _array(tree: Any) -> Any:
    """The first array of a call's argument or result (``None`` when it has none)."""
    leaves = jax.tree.leaves(tree)
    return leaves[0] if leaves else None


def _shape(tree: Any) -> tuple[int, ...]:
    """Shape of the first array of a call's argument or result; ``()`` without one."""
    x = _array(tree)
    return tuple(x.shape) if x is not None else ()


def _spatial(tree: Any) -> tuple[int, ...]:
    """Spatial shape of ``(N, *spatial, C)``; ``()`` for ``(N, C)`` and without an array."""
    return _shape(tree)[1:-1]


def _size(leaf: Any) -> int:
    return math.prod(leaf.shape)


def _count(tree: Any) -> int:
    return sum(_size(leaf) for leaf in jax.tree.leaves(tree))


def _number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value}"


def _dims(values: tuple[Fraction, ...] | None) -> str:
    """``5`` when every dim agrees, else ``5x3``; ``-`` for ``None`` or no dims."""
    if not values:
        return "-"
    if len(set(values)) == 1:
        return _number(values[0])
    return "x".join(_number(v) for v in values)


def _cells(row: LayerRow, indent: str) -> tuple[str, ...]:
    return (
        indent + row.name,
        "total" if not row.path else row.kind,
        str(row.output_shape),
        f"{row.params:,}",
        f"{row.flops:,}",
        _dims(row.receptive_field),
        _dims(row.jump),
    )
