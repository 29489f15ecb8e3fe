"""The train state and the jitted train and evaluation computations.

Randomness: a step's key is ``fold_in(step_key, state.step)``, split into the
augmentation and dropout keys, so it depends on (seed, step) only, never on how often the
process was restarted. Preprocessing happens inside ``jit``: uint8 pixels become floats in
``[0, 1]``, are augmented (train only), zero-padded by ``dataset.pad``, then normalised
with ``dataset.mean``/``dataset.std``. What is minimised and measured is the task's
(:mod:`cnnjax.training.tasks`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import NamedSharding

from cnnjax.training import precision
from cnnjax.training.tasks import Task

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (what a checkpoint holds).

    Attributes:
      step: ``()`` int32, optimizer steps taken so far.
      params: the model's ``params`` collection.
      batch_stats: the model's ``batch_stats`` collection (``{}`` without batch norm).
      opt_state: the optax state.
      sums: running sums over the current epoch's steps so far: ``loss`` and ``metric``
        (float32, the task's reported loss and metric summed over examples), ``count``
        (int32) and ``skipped`` (int32, steps whose update was skipped as non-finite).
      guard: the first step whose loss, gradient norm or new parameters were not finite:
        ``nonfinite_step`` (int32, its 0-based index; -1 while there is none) and which
        of them were finite then (bools ``loss``, ``grad_norm``, ``params``). From that
        step on, the updates of a run with ``on_nonfinite="stop"`` are not applied (the
        state stays the last finite one) and the trainer stops. A float16 overflow that
        the loss scale handles is not recorded here (see :func:`make_train_step`).
      loss_scale: float16 runs' dynamic loss scale, ``scale`` (``()`` float32) and
        ``counter`` (``()`` int32); ``{}`` for other dtypes
        (:mod:`cnnjax.training.precision`).
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: optax.OptState
    sums: dict[str, jax.Array]
    guard: dict[str, jax.Array]
    loss_scale: dict[str, jax.Array] = flax.struct.field(default_factory=dict)

    def variables(self) -> dict[str, PyTree]:
        """The Flax variables to ``apply`` the model with."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def zero_sums() -> dict[str, jax.Array]:
    return {
        "loss": jnp.zeros((), jnp.float32),
        "metric": jnp.zeros((), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
        "skipped": jnp.zeros((), jnp.int32),
    }


def no_nonfinite() -> dict[str, jax.Array]:
    """A :attr:`TrainState.guard` that has seen only finite steps."""
    return {
        "nonfinite_step": jnp.full((), -1, jnp.int32),
        **{name: jnp.ones((), bool) for name in ("loss", "grad_norm", "params")},
    }


# What a train step does when its loss or gradient norm is not finite: ``stop`` keeps the
# last finite state and lets the trainer stop the run; ``skip_step`` skips the update
# (counted in ``sums["skipped"]``) and goes on.
ON_NONFINITE = ("stop", "skip_step")


def add_sums(
    sums: dict[str, jax.Array], losses: jax.Array, metrics: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """Adds per-example ``losses`` and ``metrics`` where ``mask`` (all ``(N,)``) to ``sums``."""
    return {
        **sums,
        "loss": sums["loss"] + jnp.sum(jnp.where(mask, losses, 0.0)),
        "metric": sums["metric"] + jnp.sum(jnp.where(mask, metrics, 0.0)),
        "count": sums["count"] + jnp.sum(mask.astype(jnp.int32)),
    }


def init_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    x: jax.Array,
    *,
    dtype: str = "float32",
) -> TrainState:
    """A fresh state: the model's variables for inputs shaped like ``x (N, H, W, C)``,
    float32 whatever the compute ``dtype``, which decides only the loss-scale state."""
    variables = model.init(key, x, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        sums=zero_sums(),
        guard=no_nonfinite(),
        loss_scale=precision.init_loss_scale(dtype),
    )


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """uint8 pixels to model inputs: ``finish(to_unit(images))``, with the train
    augmentation in between (see the module docstring).

    Attributes:
      mean, std: normalisation of intensities in ``[0, 1]``.
      pad: zero pixels added on every side of each spatial dim (e.g. to fit 8x8 digits to
        a 5x5-conv model).
    """

    mean: float
    std: float
    pad: int = 0

    def to_unit(self, images: jax.Array) -> jax.Array:
        """``(N, *spatial, C)`` uint8 -> float32 intensities in [0, 1]."""
        return images.astype(jnp.float32) / 255.0

    def finish(self, x: jax.Array) -> jax.Array:
        """``(N, *spatial, C)`` intensities -> normalised model inputs, padded by ``pad``."""
        if self.pad:
            x = jnp.pad(x, [(0, 0)] + [(self.pad, self.pad)] * (x.ndim - 2) + [(0, 0)])
        return (x - self.mean) / self.std

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.finish(self.to_unit(images))

    def augmented(
        self,
        augment: Callable[[jax.Array, jax.Array], jax.Array],
        key: jax.Array,
        images: jax.Array,
    ) -> jax.Array:
        """Training inputs: ``images`` uint8 through ``augment(key, .)`` between
        :meth:`to_unit` and :meth:`finish` (the shape may change, e.g. into clips)."""
        return self.finish(augment(key, self.to_unit(images)))


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    task: Task,
    preprocess: Preprocess,
    augment: Callable[[jax.Array, jax.Array], jax.Array],
    microbatches: int = 1,
    on_nonfinite: str = "stop",
    dtype: str = "float32",
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], TrainState]:
    """One optimizer step, ``(state, images (B, H, W, C) uint8, labels (B,), step_key) ->
    state``; the step's randomness is ``fold_in(step_key, state.step)``.

    The update is applied only when the step's mean loss, global gradient norm and new
    parameters are finite (and, with ``on_nonfinite="stop"``, no earlier step was not): otherwise
    params, batch statistics and the metric sums stay as they were (with ``skip_step``
    the optimizer state takes a zero gradient instead of a non-finite one),
    ``sums["skipped"]`` counts the step and ``state.guard`` records the first such step.
    The step counter always advances, so data order and keys stay those of the step.

    With ``microbatches = k > 1`` the batch is split into ``k`` interleaved parts
    (``x[i::k]``, so each part stays spread over the devices) whose gradients are computed
    independently and averaged: the same gradient up to float rounding, but ``k``
    independent computations that XLA's CPU runtime can run concurrently on the cores,
    each with a smaller working set (LeNet-5 on 2 cores: ~1.05x images/s; on one core
    1.15x), without the cross-device all-reduce that 2 CPU devices would need. Per-batch
    statistics (batch norm) are then per part, their running averages the mean over parts;
    each part gets its own dropout key.

    The model computes in ``dtype`` (:mod:`cnnjax.training.precision`); the state stays
    float32. With float16 the loss is scaled by ``state.loss_scale``: a step whose
    gradients overflow while the scale can still be halved is skipped like a non-finite
    one (``sums["skipped"]``; params, batch statistics and, unlike there, the optimizer
    state stay as they were) but is not divergence: ``state.guard`` does not record it,
    so a run with ``on_nonfinite="stop"`` goes on with half the scale. Gradients that
    overflow at the minimum scale, or a non-finite loss, are divergence as in any dtype.

    Not jitted itself: :func:`make_train_chunk` scans it inside one ``jit``.
    """
    compute = precision.compute_dtype(dtype)
    scaling = precision.uses_loss_scale(dtype)

    def train_step(
        state: TrainState, images: jax.Array, labels: jax.Array, step_key: jax.Array
    ) -> TrainState:
        aug_key, dropout_key = jax.random.split(jax.random.fold_in(step_key, state.step))
        x = preprocess.augmented(augment, aug_key, images)
        mutable = ["batch_stats"] if state.batch_stats else False

        def loss_fn(params, x, labels, key):
            # Cast here, inside the differentiated function, so that the gradients are
            # the float32 parameters' own.
            variables = state.replace(params=precision.cast_floating(params, compute)).variables()
            out = model.apply(
                variables, x.astype(compute), train=True, rngs={"dropout": key}, mutable=mutable
            )
            outputs, new_vars = out if mutable else (out, {})
            outputs = outputs.astype(jnp.float32)
            loss = task.loss(outputs, x, labels).mean()
            # Running statistics are stored float32 whatever the model computed them in.
            stats = new_vars.get("batch_stats", state.batch_stats)
            stats = precision.cast_floating(stats, jnp.float32)
            return precision.scale_loss(loss, state.loss_scale), (loss, outputs, stats)

        def part(i):
            """Loss, gradient, new batch stats and metric sums of the ``i``-th part."""
            if microbatches == 1:  # the whole batch, with the step's own dropout key
                xi, yi, key = x, labels, dropout_key
            else:
                xi, yi = x[i::microbatches], labels[i::microbatches]
                key = jax.random.fold_in(dropout_key, i)
            (_, (loss, outputs, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, xi, yi, key
            )
            grads = precision.unscale_grads(grads, state.loss_scale)
            sums = add_sums(zero_sums(), *task.evaluate(outputs, xi, yi), jnp.ones(yi.shape, bool))
            return loss, grads, stats, sums

        parts = [part(i) for i in range(microbatches)]
        mean = lambda *a: sum(a[1:], a[0]) / microbatches  # noqa: E731
        loss, grads, batch_stats = (jax.tree.map(mean, *[p[j] for p in parts]) for j in (0, 1, 2))
        step_sums = jax.tree.map(lambda *a: sum(a[1:], a[0]), *[p[3] for p in parts])
        # The optimizer state is always the new one, never selected against the old, and
        # with "stop" the gradient reaches it untouched: selecting either changes how XLA
        # compiles the update, and its float rounding, against a step without the guard.
        # A stopped run saves nothing after its first non-finite step, so its state does
        # not matter; with "skip_step" a non-finite gradient would stay in the optimizer's
        # moments for good, so the optimizer gets zeros instead.
        checks = {"loss": jnp.isfinite(loss), "grad_norm": jnp.isfinite(optax.tree.norm(grads))}
        usable = checks["loss"] & checks["grad_norm"]
        if on_nonfinite == "skip_step":
            grads = jax.tree.map(lambda g: jnp.where(usable, g, jnp.zeros_like(g)), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        # An update can overflow the parameters while loss and gradient are still finite.
        checks["params"] = _all_finite(optax.apply_updates(state.params, updates))
        finite = usable & checks["params"]
        clean = state.guard["nonfinite_step"] < 0  # no non-finite step so far
        apply = finite if on_nonfinite == "skip_step" else finite & clean
        record = ~finite & clean  # the first non-finite step

        def where(condition, new, old):
            return jax.tree.map(lambda a, b: jnp.where(condition, a, b.astype(a.dtype)), new, old)

        loss_scale = state.loss_scale
        if scaling:
            # Only float16 selects the optimizer state against the old one (the other
            # dtypes must not, see above): the steps the scale skips while it comes down
            # are routine, and must leave no trace in the moments or the optimizer's count.
            overflow = precision.overflowed(
                loss_scale, loss_finite=checks["loss"], grads_finite=checks["grad_norm"]
            )
            record = record & ~overflow
            opt_state = where(overflow, state.opt_state, opt_state)
            loss_scale = precision.next_loss_scale(loss_scale, checks["grad_norm"])

        kept = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), updates)
        sums = where(apply, jax.tree.map(jnp.add, state.sums, step_sums), state.sums)
        return state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, kept),
            batch_stats=where(apply, batch_stats, state.batch_stats),
            opt_state=opt_state,
            sums={**sums, "skipped": state.sums["skipped"] + (~apply).astype(jnp.int32)},
            guard=where(record, {"nonfinite_step": state.step, **checks}, state.guard),
            loss_scale=loss_scale,
        )

    return train_step


def _all_finite(tree: PyTree) -> jax.Array:
    """``()`` bool: every entry of every leaf of ``tree`` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_chunk(
    train_step: Callable[[TrainState, jax.Array, jax.Array, jax.Array], TrainState],
    *,
    batch_size: int,
    batch_sharding: NamedSharding,
    state_shardings: PyTree | None = None,
    seed_axes: tuple[int | None, ...] | None = None,
) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``num_steps`` consecutive train steps in one jitted call.

    The returned ``chunk(state, images, labels, order, start, step_key, *, num_steps)``
    returns ``(state, steps)``, ``steps`` a copy of ``state.step`` that is not donated to
    the next call, so the caller can wait for this call's end (the trainer keeps at most
    one call queued behind the running one, to stop promptly). It runs steps on the
    batches ``images[order[(start + j) * B : (start + j + 1) * B]]``, ``j < num_steps``,
    gathering each batch on the device (resident feeds), or, with ``order`` None, on
    ``images[j]`` of the streamed ``images (num_steps, B, ...)``; each batch is sharded
    over the mesh's ``data`` axis (``batch_sharding``). Fusing steps
    (``config.steps_per_call``) only saves dispatch overhead: ``lax.scan`` runs the same
    step, so results match single steps. ``state`` is donated: its buffers are reused for
    the new state.

    Args:
      train_step: from :func:`make_train_step`.
      batch_size: ``B``, the global batch (a multiple of the number of devices).
      batch_sharding: sharding of a batch's leading axis.
      state_shardings: the sharding of every leaf of the state, in and out (None: those
        of the state passed in).
      seed_axes: train several seeds at once: the ``jax.vmap`` axes of ``(state, images,
        labels, order, start, step_key)``, e.g. ``(0, None, None, 0, None, 0)`` for stacked
        states, orders and keys over one shared dataset. ``None``: one run, no vmap.
    """

    def run(state, images, labels, order, start, step_key, num_steps):
        if order is None:  # streamed: the call's batches, (num_steps, B, ...)
            xs = (images, labels)

            def batch(xy):
                return xy

        else:  # resident: each batch gathered here from the whole split
            idx = lax.dynamic_slice_in_dim(order, start * batch_size, num_steps * batch_size)
            xs = idx.reshape(num_steps, batch_size)

            def batch(batch_idx):
                batch_idx = lax.with_sharding_constraint(batch_idx, batch_sharding)
                return images[batch_idx], labels[batch_idx]

        def body(state, x):
            x, y = (lax.with_sharding_constraint(a, batch_sharding) for a in batch(x))
            return train_step(state, x, y, step_key), None

        state, _ = lax.scan(body, state, xs)
        return state, state.step + 0

    @functools.partial(
        jax.jit,
        static_argnums=6,
        donate_argnums=0,
        in_shardings=(state_shardings, None, None, None, None, None),
        out_shardings=(state_shardings, None),
    )
    def jitted(state, images, labels, order, start, step_key, num_steps: int):
        f = functools.partial(run, num_steps=num_steps)
        if seed_axes is not None:
            f = jax.vmap(f, in_axes=seed_axes)
        return f(state, images, labels, order, start, step_key)

    def chunk(state, images, labels, order, start, step_key, *, num_steps: int):
        return jitted(state, images, labels, order, start, step_key, num_steps)

    return chunk


def make_eval_chunk(
    model: nn.Module,
    *,
    task: Task,
    preprocess: Preprocess,
    eval_batch_size: int,
    batch_sharding: NamedSharding,
    stacked: bool = False,
    dtype: str = "float32",
) -> Callable[..., dict[str, jax.Array]]:
    """Evaluation sums over a padded chunk of examples, in one jitted call.

    The returned ``chunk(state, images, labels, num_valid)`` takes ``images (K, E, H, W,
    C)`` uint8 and ``labels (K, E)``, ``K`` batches of ``E = eval_batch_size``, of which
    only the first ``num_valid`` of the ``K * E`` are real, and returns the sums
    ``loss``, ``metric``, ``count`` over those (``count == num_valid``). With ``stacked``,
    ``state`` holds several seeds' states on a leading axis and each sum is ``(seeds,)``.
    The model computes in ``dtype``, the task's loss and metric in float32.
    """
    compute = precision.compute_dtype(dtype)

    def run(state: TrainState, images, labels, num_valid):
        def body(sums, batch):
            b, x, y = batch
            x, y = (lax.with_sharding_constraint(a, batch_sharding) for a in (x, y))
            x = preprocess(x)
            computed = state.replace(params=precision.cast_floating(state.params, compute))
            outputs = model.apply(computed.variables(), x.astype(compute), train=False)
            outputs = outputs.astype(jnp.float32)
            mask = b * eval_batch_size + jnp.arange(eval_batch_size) < num_valid
            return add_sums(sums, *task.evaluate(outputs, x, y), mask), None

        batches = (jnp.arange(images.shape[0]), images, labels)
        sums, _ = lax.scan(body, zero_sums(), batches)
        return sums

    return jax.jit(jax.vmap(run, in_axes=(0, None, None, None)) if stacked else run)
