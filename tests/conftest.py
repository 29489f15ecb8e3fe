"""Test-wide settings: strict JAX semantics, and several fake CPU devices for sharding tests."""

import os

# Must be set before JAX initialises its backend: two CPU devices let the tests exercise
# real multi-device sharding of the train step on a laptop.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402

# Implicit rank promotion hides shape bugs in ops; make it an error (as Equinox's tests do).
jax.config.update("jax_numpy_rank_promotion", "raise")
