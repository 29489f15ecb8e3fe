"""Transparent huge pages for the memory XLA's CPU backend allocates, set at process start.

Every call of a compiled program on XLA's CPU backend allocates its temporary buffers
(im2col patch tensors, activations kept for the backward pass) with ``malloc`` and frees
them at its end. glibc hands large allocations straight to ``mmap`` and unmaps them on
``free``, so every call touches fresh memory again: one page fault per 4 KiB page, which
for a CNN train step with hundreds of MiB of temporaries costs as much as the step's
arithmetic. With the glibc tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35) malloc asks
the kernel for transparent huge pages (``madvise``), one fault per 2 MiB.

glibc reads tunables only when a process starts, so ``launch.py`` calls
:func:`reexec_with_huge_pages` first thing: it runs the same command again with the
tunable in ``GLIBC_TUNABLES``. :func:`environment` gives that environment for other
processes (benchmarks, workers). ``CNNJAX_MALLOC=system``, or any ``glibc.malloc``
tunable already in ``GLIBC_TUNABLES``, leaves the allocator as it is; so does a C library
other than glibc. Where the kernel's THP mode (``/sys/kernel/mm/transparent_hugepage/
enabled``) is ``never`` the tunable has no effect; where it is ``always`` it is not needed.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with :data:`TUNABLE` added to ``GLIBC_TUNABLES`` where it applies (glibc on
    Linux, no ``CNNJAX_MALLOC=system``, no ``glibc.malloc`` tunable set already)."""
    env = dict(env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if (
        env.get("CNNJAX_MALLOC") == "system"
        or "glibc.malloc" in tunables
        or platform.system() != "Linux"
        or platform.libc_ver()[0] != "glibc"
    ):
        return env
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command (``sys.orig_argv``) with the environment
    of :func:`environment`, unless that changes nothing. Call it before anything else
    has run: what the process did so far is lost."""
    env = environment(os.environ)
    if env != dict(os.environ):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)
