"""What a model is fed, built once from the config for the trainer and the model tools.

:func:`build_inputs` loads the dataset (its test and validation splits distorted when
``augment.distort_test``), and makes the preprocessing and the train augmentation;
:func:`check_model` checks that the model takes those inputs and gives the task's
outputs, so that a mismatch is one line naming both shapes, not an error deep in a layer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections

from cnnjax.analysis.summary import LayerRow, layer_rows
from cnnjax.training import augment as augment_lib
from cnnjax.training import data as data_lib
from cnnjax.training.errors import ModelInputError
from cnnjax.training.step import Preprocess
from cnnjax.training.tasks import Task


@dataclasses.dataclass(frozen=True)
class Inputs:
    """A run's data and how it becomes model inputs.

    Attributes:
      dataset: the splits, uint8 images ``(N, *spatial, C)``.
      preprocess: uint8 pixels to normalised model inputs.
      augment: the train augmentation ``(key, x) -> x`` (intensities in [0, 1]).
      input_shape: the shape of a train batch of one, as the model receives it
        (``(1, H, W, C)``, or ``(1, T, H, W, C)`` for clips).
    """

    dataset: data_lib.Dataset
    preprocess: Preprocess
    augment: Callable[[jax.Array, jax.Array], jax.Array]
    input_shape: tuple[int, ...]


def build_inputs(config: ml_collections.ConfigDict) -> Inputs:
    """The :class:`Inputs` of ``config`` (reads ``dataset`` and ``augment``).

    Raises:
      DatasetUnavailableError: the data is not prepared and may not be downloaded.
      ConfigError: an unknown dataset or split.
    """
    # With several processes, each reads and decodes only the rows it feeds.
    dataset = data_lib.load(config.dataset, lazy=jax.process_count() > 1)
    dataset = augment_lib.distort_test(dataset, config)
    preprocess = Preprocess(config.dataset.mean, config.dataset.std, config.dataset.pad)
    augment = augment_lib.make_augment(config)
    input_shape = jax.eval_shape(
        functools.partial(preprocess.augmented, augment, jax.random.key(0)),
        dataset.train.images[:1],
    ).shape
    return Inputs(dataset, preprocess, augment, tuple(input_shape))


def check_model(
    model: flax.linen.Module, name: str, inputs: Inputs, task: Task | None = None
) -> list[LayerRow]:
    """The model's layer table for ``inputs``, after checking that it takes them (and,
    given ``task``, that its outputs suit the task and the dataset's classes).

    Raises:
      ModelInputError: naming the model, the input shape and what did not fit.
    """
    try:
        rows = layer_rows(model, inputs.input_shape)
        if task is not None:
            outputs = _output_shape(model, inputs.input_shape)
            task.check_outputs(outputs, inputs.input_shape, inputs.dataset.num_classes)
    except ModelInputError:
        raise
    except (ValueError, TypeError) as e:  # what ops and layers raise for bad shapes
        problem = " ".join(str(e).split("\n--------------------")[0].split())
        raise ModelInputError(
            f"model {name!r} cannot take the inputs of dataset {inputs.dataset.name!r}, "
            f"shaped {inputs.input_shape}: {problem}"
        ) from e
    return rows


def _output_shape(model: flax.linen.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    def apply(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return model.apply(variables, x, train=False)

    return jax.eval_shape(apply, jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape
