"""``import cnnjax`` makes glibc's malloc keep freed memory for reuse: a program's buffers
land on pages already touched instead of fresh ones (page faults counted, in fresh
processes; ``CNNJAX_MALLOC=system`` as the control)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

PAGES = (64 << 20) // 4096  # pages of one 64 MiB buffer

# Page faults of allocating, filling and freeing a 64 MiB buffer: with malloc from the main
# thread and from a thread started later (XLA allocates from its threads), and as the
# output of a jitted program (each call allocates its output; deleting it frees it).
CODE = """
import ctypes, resource, threading
import cnnjax
import jax, jax.numpy as jnp

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def malloc_faults():
    def block():
        p = libc.malloc(64 << 20)
        ctypes.memset(p, 1, 64 << 20)
        libc.free(p)
    block()
    before = faults(); block(); return faults() - before

def thread_faults():
    out = []
    t = threading.Thread(target=lambda: out.append(malloc_faults())); t.start(); t.join()
    return out[0]

double = jax.jit(lambda x: x * 2)
x = jnp.ones(16 << 20, jnp.float32)
def jit_faults():  # the fewest of 5 calls: the runtime may free an output a little late
    for _ in range(3):
        double(x).block_until_ready()
    counts = []
    for _ in range(5):
        before = faults(); double(x).block_until_ready(); counts.append(faults() - before)
    return min(counts)

print(malloc_faults(), thread_faults(), jit_faults())
"""


def _faults(**env: str) -> list[int]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",)}
    environment.pop("CNNJAX_MALLOC", None)
    result = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, "JAX_PLATFORMS": "cpu", **env},
    )
    assert result.returncode == 0, result.stderr
    return [int(v) for v in result.stdout.split()]


def test_freed_memory_is_reused():
    faults = _faults()
    assert all(f < PAGES // 20 for f in faults), faults


def test_opt_out_leaves_glibc_defaults():
    # The control: glibc's own settings map, unmap and fault in every 64 MiB buffer again.
    assert all(f > PAGES * 0.9 for f in _faults(CNNJAX_MALLOC="system"))


def test_glibc_tunables_take_precedence():
    # glibc's defaults spelled out as tunables: cnnjax leaves them as they are.
    tunables = "glibc.malloc.mmap_threshold=131072"
    assert all(f > PAGES * 0.9 for f in _faults(GLIBC_TUNABLES=tunables))
