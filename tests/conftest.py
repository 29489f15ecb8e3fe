"""Test-wide settings: strict JAX semantics.

The tests run on one CPU device. Several fake CPU devices in one process
(``--xla_force_host_platform_device_count``) make every train step an XLA CPU
all-reduce, and under load (two pytest workers on two cores) those collectives can
wait past XLA's 40 s rendezvous limit and abort the process. Multi-device sharding is
tested once, in its own subprocess (``tests/test_train.py``).
"""

import jax

# Implicit rank promotion hides shape bugs in ops; make it an error (as Equinox's tests do).
jax.config.update("jax_numpy_rank_promotion", "raise")
