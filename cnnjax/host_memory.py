"""The C allocator of cnnjax's processes, chosen at process start.

Every call of a compiled program on XLA's CPU backend allocates its temporaries (im2col
patch tensors, activations kept for the backward pass) with ``malloc`` and frees them at
its end. glibc hands large allocations straight to ``mmap`` and unmaps them on ``free``
(above 32 MiB always; on the arenas of XLA's worker threads, above 64 MiB even with
``mmap`` switched off), so every call touches fresh memory again: a page fault per page,
which for a CNN train step with hundreds of MiB of temporaries costs as much as its
arithmetic. Two remedies, the first preferred:

- **jemalloc**, preloaded with ``MALLOC_CONF`` = :data:`JEMALLOC_CONF`: freed memory stays
  with the process for reuse (no decay, no separate arena for large allocations), so once
  the first calls have grown the heap a train step touches no fresh page. The library is
  the system's (``libjemalloc.so.2``) or, failing that, the copy Ray ships in its package
  (``ray/core/libjemalloc.so``: the ``ray`` and ``dev`` extras).
- **glibc on transparent huge pages**: the tunable :data:`TUNABLE` (glibc >= 2.35) makes
  malloc ask the kernel for huge pages (``madvise``), one fault per 2 MiB instead of 4 KiB.

The dynamic loader and malloc read their settings only when a process starts, so
``launch.py`` calls :func:`reexec_with_allocator` first thing: it runs the same command
again in the environment of :func:`environment`, which also serves other processes
(benchmarks, workers). ``CNNJAX_MALLOC`` chooses: ``auto`` (the default: jemalloc where one
is found, else the glibc tunable), ``jemalloc``, ``glibc`` or ``system`` (leave the
allocator alone). An allocator setting already in the environment (``MALLOC_CONF``, or a
``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) is left as it is. Linux only; elsewhere
the environment is not changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
# Never return freed pages to the kernel (dirty and muzzy decay off) and serve large
# allocations from the ordinary arenas, whose freed extents are reused.
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
CHOICES = ("auto", "jemalloc", "glibc", "system")


def find_jemalloc() -> str | None:
    """The jemalloc shared library to preload: the system's (its soname, as ``ldconfig``
    knows it), else the path of the copy in Ray's package; None if there is neither."""
    name = ctypes.util.find_library("jemalloc")
    if name:
        return name
    spec = importlib.util.find_spec("ray")  # finds the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "core" / "libjemalloc.so"
        if path.is_file():
            return str(path)
    return None


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the allocator that ``CNNJAX_MALLOC`` (in ``env``) chooses: jemalloc
    preloaded with :data:`JEMALLOC_CONF`, or :data:`TUNABLE` added to ``GLIBC_TUNABLES``.

    Raises ValueError if ``CNNJAX_MALLOC`` is not one of :data:`CHOICES`, or is
    ``jemalloc`` on Linux with no jemalloc found.
    """
    env = dict(env)
    choice = env.get("CNNJAX_MALLOC", "auto")
    if choice not in CHOICES:
        raise ValueError(f"CNNJAX_MALLOC must be one of {', '.join(CHOICES)}; got {choice!r}")
    tunables = env.get("GLIBC_TUNABLES", "")
    if (
        choice == "system"
        or platform.system() != "Linux"
        or "MALLOC_CONF" in env
        or "glibc.malloc" in tunables
    ):
        return env
    if choice in ("auto", "jemalloc"):
        library = find_jemalloc()
        if library:
            preload = env.get("LD_PRELOAD")
            env["LD_PRELOAD"] = f"{preload}:{library}" if preload else library
            env["MALLOC_CONF"] = JEMALLOC_CONF
            return env
        if choice == "jemalloc":
            raise ValueError(
                "CNNJAX_MALLOC=jemalloc, but no jemalloc was found "
                "(install libjemalloc2, or Ray: pip install -e '.[ray]')"
            )
    if platform.libc_ver()[0] == "glibc":
        env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def active_allocator() -> str:
    """``"jemalloc"`` if jemalloc serves this process's ``malloc`` (its ``mallctl`` is
    in the global symbol namespace), else ``"system"``."""
    return "jemalloc" if hasattr(ctypes.CDLL(None), "mallctl") else "system"


def reexec_with_allocator() -> None:
    """Replaces this process by the same command (``sys.orig_argv``) with the environment
    of :func:`environment`, unless that changes nothing. Call it before anything else
    has run: what the process did so far is lost. Raises ValueError as
    :func:`environment` does."""
    env = environment(os.environ)
    if env != dict(os.environ):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)
