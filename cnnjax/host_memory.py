"""How this process's C allocator treats the memory XLA's CPU backend frees.

Every call of a compiled program on XLA's CPU backend allocates its temporary buffers
(im2col patch tensors, activations kept for the backward pass) with ``malloc`` and frees
them at the end. glibc hands allocations over its mmap threshold straight to ``mmap`` and
unmaps them on ``free``, and trims freed memory from its per-thread arenas, so the next
call touches fresh pages again: one page fault per 4 KiB, which for a CNN train step with
hundreds of MiB of temporaries costs as much as the step's arithmetic.
:func:`keep_freed_memory` makes glibc serve every allocation from one heap and keep what
is freed for reuse, so a process's resident memory stays at its peak instead.

It must run before JAX starts its CPU backend (the backend's threads take their arenas
then): ``import cnnjax`` calls it, before it imports JAX. ``CNNJAX_MALLOC=system`` in
the environment, or any ``glibc.malloc`` setting in ``GLIBC_TUNABLES``, leaves the
allocator as it is; so does a C library other than glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_ARENA_MAX, 1),  # one heap: the main arena can grow without bound, thread arenas not
    (_M_MMAP_MAX, 0),  # no allocation gets its own mapping (unmapped again on free)
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # keep up to 2 GiB of freed memory at the heap's top
)


def keep_freed_memory() -> bool:
    """Tells glibc's ``malloc`` to reuse freed memory instead of returning it to the OS.

    Returns True if the settings were applied, False if left alone (not glibc, the
    ``CNNJAX_MALLOC=system`` opt-out, or ``GLIBC_TUNABLES`` already setting malloc).
    """
    if os.environ.get("CNNJAX_MALLOC") == "system":
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
