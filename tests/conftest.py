"""Test-wide settings: strict JAX semantics.

The tests run on one CPU device. Several fake CPU devices in one process
(``--xla_force_host_platform_device_count``) make every train step an XLA CPU
all-reduce, and under load (two pytest workers on two cores) those collectives can
wait past XLA's 40 s rendezvous limit and abort the process. Multi-device sharding is
tested once, in its own subprocess (``tests/test_train.py``).
"""

import jax
import pytest

# Implicit rank promotion hides shape bugs in ops; make it an error (as Equinox's tests do).
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache in a temporary directory, for a module whose runs
    compile the same programs again and again (``pytest.mark.usefixtures``)."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(names[1], 0)
    yield
    for name, value in before.items():
        jax.config.update(name, value)
