"""The two MNIST CNNs that most people meet first: the TensorFlow tutorial's ("Deep MNIST
for Experts") and the Keras book's (Chollet, *Deep Learning with Python*, Section 5.1)."""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, ConvMaxPool
from cnnjax.models import register


@register("tf_tutorial_cnn")
class TFTutorialCNN(nn.Module):
    """The TensorFlow tutorial's MNIST CNN; 3,274,634 params at 10 classes on 28x28x1.

    ========  ===================================  ============  =========
    layer     operation                            output        params
    ========  ===================================  ============  =========
    conv1     5x5 conv, 32 filters, SAME, ReLU     28 x 28 x 32        832
    pool1     2x2 max-pool, stride 2               14 x 14 x 32
    conv2     5x5 conv, 64 filters, SAME, ReLU     14 x 14 x 64     51,264
    pool2     2x2 max-pool, stride 2               7 x 7 x 64
    dense1    dense, ReLU                          1024          3,212,288
    dropout   dropout (rate ``dropout``)           1024
    logits    dense                                num_classes      10,250
    ========  ===================================  ============  =========

    Each conv and the 2x2 max-pool after it are one :class:`~cnnjax.layers.ConvMaxPool`,
    then ReLU (the same as ReLU before the pool: the max commutes with it).

    Attributes:
      num_classes: size of the output layer.
      dropout: drop probability before the output layer; active when ``train=True``,
        drawing from the ``'dropout'`` rng.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, 28, 28, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    dropout: float = 0.5
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(ConvMaxPool(32, (5, 5), padding="SAME", dtype=self.dtype, name="conv1")(x))
        x = nn.relu(ConvMaxPool(64, (5, 5), padding="SAME", dtype=self.dtype, name="conv2")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="dense1")(x))
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)


@register("keras_book_cnn")
class KerasBookCNN(nn.Module):
    """The Keras book's MNIST convnet; 93,322 params at 10 classes on 28x28x1.

    ========  ===================================  ============  =======
    layer     operation                            output        params
    ========  ===================================  ============  =======
    conv1     3x3 conv, 32 filters, VALID, ReLU    26 x 26 x 32      320
    pool1     2x2 max-pool, stride 2               13 x 13 x 32
    conv2     3x3 conv, 64 filters, VALID, ReLU    11 x 11 x 64   18,496
    pool2     2x2 max-pool, stride 2               5 x 5 x 64
    conv3     3x3 conv, 64 filters, VALID, ReLU    3 x 3 x 64     36,928
    dense1    dense, ReLU                          64             36,928
    logits    dense                                num_classes       650
    ========  ===================================  ============  =======

    Each conv and the 2x2 max-pool after it are one :class:`~cnnjax.layers.ConvMaxPool`,
    then ReLU (the same as ReLU before the pool: the max commutes with it).

    Attributes:
      num_classes: size of the output layer.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, 28, 28, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        x = nn.relu(ConvMaxPool(32, (3, 3), padding="VALID", dtype=self.dtype, name="conv1")(x))
        x = nn.relu(ConvMaxPool(64, (3, 3), padding="VALID", dtype=self.dtype, name="conv2")(x))
        x = nn.relu(Conv(64, (3, 3), padding="VALID", dtype=self.dtype, name="conv3")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(64, dtype=self.dtype, name="dense1")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
