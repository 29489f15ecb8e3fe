"""What a model is trained to do: the loss it minimises and the metric it is judged by.

``config.task`` picks one:

- ``"classification"``: outputs are logits ``(N, num_classes)``; the loss is softmax
  cross-entropy (with ``label_smoothing``), the metric ``accuracy`` (fraction of arg-max
  hits).
- ``"reconstruction"``: outputs are images shaped like the inputs (an autoencoder's
  reconstruction of its normalised input); the loss is the mean squared error per example,
  the metric ``psnr`` in dB, per image on the [0, 1] intensity scale, averaged over images.

Both metrics are better when higher, so "best checkpoint" and "time to target" mean the
same for both. A task's per-example values are summed by the train and evaluation steps
(:func:`cnnjax.training.step.add_sums`), so an epoch's metric is a mean over examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnnjax.training.errors import ConfigError, ModelInputError
from cnnjax.training.metrics import save_figure

# PSNR of an exact reconstruction would be infinite; errors are floored here (100 dB).
_MIN_MSE = 1e-10


class Task(Protocol):
    metric: ClassVar[str]  # record/summary key suffix: train_<metric>, test_<metric>
    loss_name: ClassVar[str]  # what the reported loss is, for plots

    def loss(self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array) -> jax.Array:
        """``(N,)`` per-example training objective."""

    def evaluate(
        self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """``(N,)`` reported loss and ``(N,)`` metric per example."""

    def check_outputs(self, outputs: Sequence[int], inputs: Sequence[int], classes: int) -> None:
        """Raises ModelInputError if a model's output shape does not suit the task."""

    def format(self, value: float) -> str:
        """A metric value for people."""


@dataclasses.dataclass(frozen=True)
class Classification:
    """Logits ``(N, K)`` against integer labels ``(N,)``.

    Attributes:
      label_smoothing: mass moved uniformly over all classes in the training loss; the
        reported loss is always the plain cross-entropy, so train and test curves measure
        the same thing.
    """

    label_smoothing: float = 0.0
    metric: ClassVar[str] = "accuracy"
    loss_name: ClassVar[str] = "cross-entropy"

    def loss(self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array) -> jax.Array:
        del inputs
        return cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)

    def evaluate(
        self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        del inputs
        return cross_entropy(outputs, labels), correct(outputs, labels).astype(jnp.float32)

    def check_outputs(self, outputs: Sequence[int], inputs: Sequence[int], classes: int) -> None:
        if tuple(outputs[-1:]) != (classes,):
            raise ModelInputError(
                f"model outputs {tuple(outputs)} for input {tuple(inputs)}, but the dataset "
                f"has {classes} classes (set config.model.kwargs.num_classes={classes})"
            )

    def format(self, value: float) -> str:
        return f"{100 * value:.2f}%"


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """Outputs shaped like the (normalised) inputs; labels are ignored.

    Attributes:
      std: the normalisation's standard deviation: an error ``e`` in normalised units is
        ``e * std`` in [0, 1] intensities, the scale PSNR is defined on (peak 1).
    """

    std: float
    metric: ClassVar[str] = "psnr"
    loss_name: ClassVar[str] = "mean squared error (normalised inputs)"

    def loss(self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array) -> jax.Array:
        del labels
        return _mean_per_example(jnp.square(outputs - inputs))

    def evaluate(
        self, outputs: jax.Array, inputs: jax.Array, labels: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        mse = self.loss(outputs, inputs, labels)
        return mse, psnr(mse * self.std**2)

    def check_outputs(self, outputs: Sequence[int], inputs: Sequence[int], classes: int) -> None:
        del classes
        if tuple(outputs) != tuple(inputs):
            raise ModelInputError(
                f"a reconstruction model must output its input's shape {tuple(inputs)}; "
                f"model {tuple(outputs)}"
            )

    def format(self, value: float) -> str:
        return f"{value:.2f} dB"


def psnr(mse: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB of mean squared errors on a peak-1 scale:
    ``10 log10(1 / mse)`` (errors below 1e-10 count as 1e-10)."""
    return -10.0 * jnp.log10(jnp.maximum(mse, _MIN_MSE))


def _mean_per_example(x: jax.Array) -> jax.Array:
    return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross-entropy against smoothed one-hot labels.

    Args:
      logits: ``(N, num_classes)``.
      labels: ``(N,)`` integer classes.
      label_smoothing: mass moved uniformly over all classes (0 gives the plain loss).

    Returns:
      ``(N,)`` losses.
    """
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``(N,)`` int32: 1 where the arg-max class of ``logits (N, K)`` equals ``labels (N,)``."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.int32)


TASKS = ("classification", "reconstruction")


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by ``config.task``."""
    if config.task == "classification":
        return Classification(label_smoothing=config.label_smoothing)
    if config.task == "reconstruction":
        return Reconstruction(std=config.dataset.std)
    raise ConfigError(f"task must be one of {TASKS}, got {config.task!r}")


def target(config: ml_collections.ConfigDict, task: Task) -> float | None:
    """The metric value whose first reaching ``summary.json`` times: ``target_<metric>``."""
    return config.get(f"target_{task.metric}")


def save_reconstructions(inputs: np.ndarray, outputs: np.ndarray, path: str | Path) -> None:
    """A PNG grid: test inputs on the top row, their reconstructions below.

    Args:
      inputs, outputs: ``(K, H, W, C)`` intensities in [0, 1] (``C`` 1 or 3).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(inputs)
    fig, axes = plt.subplots(2, k, figsize=(1.2 * k, 2.6), squeeze=False)
    for row, (images, title) in enumerate(((inputs, "input"), (outputs, "reconstruction"))):
        for j, ax in enumerate(axes[row]):
            image = np.clip(images[j], 0.0, 1.0)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
