"""cnnjax: convolution variants as pure JAX functions, Flax layers and models on top."""

from cnnjax.host_memory import keep_freed_memory

# Before anything imports JAX and starts its CPU backend (see cnnjax.host_memory).
keep_freed_memory()

__version__ = "0.1.0"
