"""cnnjax: convolution variants as pure JAX functions, Flax layers and models on top."""

__version__ = "0.1.0"
