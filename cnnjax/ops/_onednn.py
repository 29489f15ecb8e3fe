"""Convolutions on CPU by oneDNN, as one JAX primitive with its own differentiation rules.

A convolution ``y = conv(x, w)`` is bilinear, and so are its two gradients: the data
gradient ``dx = D(dy, w)`` and the weights gradient ``dw = W(x, dy)``. Each is one call of
the XLA FFI handler in ``_onednn.cc`` (``kind`` 0, 1, 2), i.e. one oneDNN primitive that
reads cnnjax's channels-last buffers in place and never materialises a patch tensor. The
three maps are one primitive, ``onednn_conv``, whose JVP is the bilinear product rule and
whose transposes are the other two maps (``ad.defbilinear``, as for ``lax.conv``), so
forward mode, reverse mode and any order of either work, and ``vmap`` folds a batched
input into the batch dim (or maps over the batch when the kernel is batched). A 3-D
weights gradient is a stack of 2-D ones, one per depth tap (:func:`_weights_by_depth_taps`).

The compiled library is optional (``setup.py`` builds it where oneDNN's wheels exist);
:func:`available` says whether it loaded. ``CNNJAX_ONEDNN=0`` in the environment turns
the path off, so that :mod:`cnnjax.ops._lowering` uses its own CPU lowering.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from cnnjax.ops._args import conv_output_shape

_TARGET = "cnnjax_onednn_conv"
_FORWARD, _DATA, _WEIGHTS = 0, 1, 2


def _library_path() -> Path | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_onednn_conv{suffix}"
        if path.exists():
            return path
    return None


@functools.cache
def _load() -> bool:
    """Loads oneDNN and the handler and registers it with XLA; False where either is missing."""
    path = _library_path()
    if path is None:
        return False
    try:
        # The handler needs libdnnl.so.3, which the onednn-cpu-gomp wheel puts outside
        # any directory the loader searches: load it first, by its path, for all to see.
        files = importlib.metadata.distribution("onednn-cpu-gomp").files or ()
        dnnl = next(f.locate() for f in files if f.name == "libdnnl.so.3")
        ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
        handler = ctypes.cdll.LoadLibrary(str(path)).CnnjaxOnednnConv
    except (OSError, StopIteration, importlib.metadata.PackageNotFoundError):
        return False
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return True


def available() -> bool:
    """Whether CPU convolutions can go to oneDNN: the library loaded, and not turned off."""
    return os.environ.get("CNNJAX_ONEDNN", "1") != "0" and _load()


onednn_conv_p = Primitive("onednn_conv")


def _bind(kind: int, a, b, out_shape, **params):
    if kind == _WEIGHTS and len(params["stride"]) == 3:
        return _weights_by_depth_taps(a, b, out_shape, **params)
    return onednn_conv_p.bind(a, b, kind=kind, out_shape=tuple(out_shape), **params)


def _weights_by_depth_taps(x, dy, w_shape, *, groups, stride, padding, dilation):
    """The weights gradient of a 3-D conv as one 2-D weights gradient per depth tap, the
    depth folded into the batch: oneDNN has only a GEMM-based 3-D weights gradient, several
    times slower than its direct 2-D kernel. ``x``: ``(N, D, H, W, C)``, ``dy``: ``(N, D',
    H', W', O)``; returns ``w_shape``."""
    (low, high), step, gap = padding[0], stride[0], dilation[0]
    depth = dy.shape[1]
    x = jnp.pad(x, ((0, 0), (low, high), (0, 0), (0, 0), (0, 0)))
    dy = dy.reshape(-1, *dy.shape[2:])
    params = dict(groups=groups, stride=stride[1:], padding=padding[1:], dilation=dilation[1:])
    taps = []
    for a in range(w_shape[0]):
        start = a * gap
        x_a = lax.slice_in_dim(x, start, start + (depth - 1) * step + 1, step, axis=1)
        taps.append(_bind(_WEIGHTS, x_a.reshape(-1, *x_a.shape[2:]), dy, w_shape[1:], **params))
    return jnp.stack(taps)


@functools.cache
def _compiled(**params):
    return jax.jit(functools.partial(onednn_conv_p.bind, **params))


def _impl(a, b, **params):
    # Outside jit (eager calls), as every primitive: compiled once per set of parameters.
    return _compiled(**params)(a, b)


def _abstract_eval(a, b, *, kind, out_shape, **params):
    del b, kind, params
    return jax.core.ShapedArray(out_shape, a.dtype)


def _lower(ctx, a, b, *, kind, out_shape, groups, stride, padding, dilation):
    del out_shape
    i64 = functools.partial(np.asarray, dtype=np.int64)
    return jax.ffi.ffi_lowering(_TARGET)(
        ctx,
        a,
        b,
        kind=np.int64(kind),
        groups=np.int64(groups),
        stride=i64(stride),
        low=i64([lo for lo, _ in padding]),
        high=i64([hi for _, hi in padding]),
        dilation=i64(dilation),
    )


def _shape(arg) -> tuple[int, ...]:
    # Operands being transposed are placeholders that carry only their abstract value.
    return arg.aval.shape if hasattr(arg, "aval") else np.shape(arg)


# Roles: x (input), w (kernel), y (output). kind -> (role of a, role of b, role of the result).
_ROLES = {_FORWARD: ("x", "w", "y"), _DATA: ("y", "w", "x"), _WEIGHTS: ("x", "y", "w")}
_KIND = {roles: kind for kind, roles in _ROLES.items()}


def _transpose(operand: int, ct, a, b, *, kind, out_shape, **params):
    """Cotangent of operand 0 (``a``) or 1 (``b``): the map from the result's role and the
    other operand's role to this operand's role."""
    role = dict(zip(_ROLES[kind], (a, b, ct), strict=True))
    shapes = {r: _shape(v) for r, v in role.items()}
    mine = _ROLES[kind][operand]
    other = _ROLES[kind][1 - operand]
    result = _ROLES[kind][2]
    for first, second in ((result, other), (other, result)):
        if (first, second, mine) in _KIND:
            k = _KIND[(first, second, mine)]
            return _bind(k, role[first], role[second], shapes[mine], **params)
    raise AssertionError((kind, operand))


def _batch(args, dims, *, kind, out_shape, **params):
    """Folds a batched ``x``/``y`` operand into the batch dim when the other is not batched
    (the kernel is shared); otherwise one call per batch element."""
    a, b = args
    da, db = dims
    if kind != _WEIGHTS and db is None:
        a = jnp.moveaxis(a, da, 0)
        k, n = a.shape[:2]
        y = _bind(kind, a.reshape(k * n, *a.shape[2:]), b, (k * n, *out_shape[1:]), **params)
        return y.reshape(k, n, *out_shape[1:]), 0
    size = a.shape[da] if da is not None else b.shape[db]
    a, b = (batching.bdim_at_front(v, d, size) for v, d in ((a, da), (b, db)))
    y = lax.map(lambda ab: _bind(kind, *ab, out_shape, **params), (a, b))
    return y, 0


onednn_conv_p.def_impl(_impl)
onednn_conv_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(onednn_conv_p, _lower, platform="cpu")
ad.defbilinear(onednn_conv_p, functools.partial(_transpose, 0), functools.partial(_transpose, 1))
batching.primitive_batchers[onednn_conv_p] = _batch


def conv(
    x: jax.Array,
    w: jax.Array,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
) -> jax.Array:
    """oneDNN's convolution of float32 ``x``: ``(N, *spatial, C_in)`` with ``w``:
    ``(*kernel, C_in // groups, C_out)``; ``padding`` one ``(low, high)`` pair per spatial
    dim, each ``>= 0``. Returns ``(N, *out, C_out)``. CPU only (see :func:`available`).

    Raises:
      RuntimeError: the compiled library is missing or did not load.
    """
    if not _load():
        raise RuntimeError("cnnjax's oneDNN extension is not built or did not load")
    kernel = w.shape[: w.ndim - 2]
    out = conv_output_shape(
        x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
    )
    shape = (x.shape[0], *out, w.shape[-1])
    if 0 in (*shape, *x.shape, *w.shape):  # nothing to compute, and oneDNN takes no empty dims
        return jnp.zeros(shape, x.dtype)
    return _bind(
        _FORWARD,
        x,
        w,
        shape,
        groups=groups,
        stride=tuple(stride),
        padding=tuple(tuple(p) for p in padding),
        dilation=tuple(dilation),
    )
