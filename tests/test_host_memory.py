"""Huge pages for malloc (``cnnjax.host_memory``): the environment it sets, the re-exec,
and what it does to a jitted program's buffers (page faults counted in fresh processes,
``CNNJAX_MALLOC=system`` as the control)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cnnjax import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_MADVISE = THP.exists() and "[never]" not in THP.read_text()
PAGES = (64 << 20) // 4096  # 4 KiB pages of one 64 MiB buffer

# Page faults of one call of a jitted program whose 64 MiB output is freed before the next
# call (the fewest of 5 calls: the runtime may free an output a little late).
FAULTS = """
import resource
import jax, jax.numpy as jnp

faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
double = jax.jit(lambda x: x * 2)
x = jnp.ones(16 << 20, jnp.float32)
for _ in range(3):
    double(x).block_until_ready()
counts = []
for _ in range(5):
    before = faults()
    double(x).block_until_ready()
    counts.append(faults() - before)
print(min(counts))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CNNJAX_MALLOC")}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def _faults(env: dict[str, str]) -> int:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_environment_adds_the_tunable_unless_told_not_to():
    assert host_memory.environment({})["GLIBC_TUNABLES"] == host_memory.TUNABLE
    other = {"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"}
    assert host_memory.environment(other)["GLIBC_TUNABLES"] == (
        f"glibc.rtld.optional_static_tls=2048:{host_memory.TUNABLE}"
    )
    for env in ({"CNNJAX_MALLOC": "system"}, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}):
        assert host_memory.environment(env) == env


@pytest.mark.skipif(not (GLIBC and THP_MADVISE), reason="glibc with transparent huge pages")
def test_huge_pages_spare_the_page_faults_of_each_call():
    tuned = _faults(host_memory.environment(_clean_env()))
    untuned = _faults(_clean_env(CNNJAX_MALLOC="system"))
    assert untuned > 0.9 * PAGES, untuned  # glibc's default: every buffer faulted in again
    assert tuned < PAGES // 20, tuned


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_reexec_runs_the_same_command_again_with_the_tunable():
    code = (
        "import os\n"
        "print('start', os.getpid(), flush=True)\n"
        "from cnnjax.host_memory import reexec_with_huge_pages\n"
        "reexec_with_huge_pages()\n"
        "print('tunables', os.environ['GLIBC_TUNABLES'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Two starts of one process (execve keeps the pid), then the tuned one carries on.
    assert [line.split()[0] for line in lines] == ["start", "start", "tunables"]
    assert lines[0] == lines[1]
    assert lines[2] == f"tunables {host_memory.TUNABLE}"
