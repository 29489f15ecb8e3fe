"""The C allocator of cnnjax's processes (``cnnjax.host_memory``): the environment it
sets, the re-exec, and what each allocator does to a jitted program's buffers (page faults
counted in fresh processes, ``CNNJAX_MALLOC=system`` as the control)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from launcher import ROOT, launch

from cnnjax import host_memory
from cnnjax.training import ConfigError

LINUX = platform.system() == "Linux"
GLIBC = LINUX and platform.libc_ver()[0] == "glibc"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_MADVISE = THP.exists() and "[never]" not in THP.read_text()
JEMALLOC = host_memory.find_jemalloc() if LINUX else None
PAGES = (64 << 20) // 4096  # 4 KiB pages of one 64 MiB buffer

# Page faults of one call of a jitted program whose 64 MiB output is freed before the next
# call (the fewest of 5 calls: the runtime may free an output a little late), and the
# allocator that served them.
FAULTS = """
import resource
import jax, jax.numpy as jnp
from cnnjax.host_memory import active_allocator

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
print(min(counts), active_allocator())
"""


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("GLIBC_TUNABLES", "CNNJAX_MALLOC", "MALLOC_CONF", "LD_PRELOAD")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def _faults(env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    count, allocator = result.stdout.split()
    return int(count), allocator


@pytest.mark.skipif(not GLIBC, reason="glibc on Linux only")
def test_environment_preloads_jemalloc_where_found_and_else_adds_the_tunable(monkeypatch):
    monkeypatch.setattr(host_memory, "find_jemalloc", lambda: "/opt/lib/libjemalloc.so")
    jemalloc = {"LD_PRELOAD": "/opt/lib/libjemalloc.so", "MALLOC_CONF": host_memory.JEMALLOC_CONF}
    assert host_memory.environment({}) == jemalloc
    assert host_memory.environment({"CNNJAX_MALLOC": "jemalloc"}) == {
        "CNNJAX_MALLOC": "jemalloc",
        **jemalloc,
    }
    # Another preloaded library stays first; the result is a fixed point (no re-exec loop).
    env = host_memory.environment({"LD_PRELOAD": "libfoo.so"})
    assert env["LD_PRELOAD"] == "libfoo.so:/opt/lib/libjemalloc.so"
    assert host_memory.environment(env) == env
    assert host_memory.environment({"CNNJAX_MALLOC": "glibc"}) == {
        "CNNJAX_MALLOC": "glibc",
        "GLIBC_TUNABLES": host_memory.TUNABLE,
    }

    monkeypatch.setattr(host_memory, "find_jemalloc", lambda: None)
    assert host_memory.environment({})["GLIBC_TUNABLES"] == host_memory.TUNABLE
    other = {"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"}
    env = host_memory.environment(other)
    assert env["GLIBC_TUNABLES"] == f"glibc.rtld.optional_static_tls=2048:{host_memory.TUNABLE}"
    assert host_memory.environment(env) == env
    with pytest.raises(ValueError, match="CNNJAX_MALLOC=jemalloc, but no jemalloc was found"):
        host_memory.environment({"CNNJAX_MALLOC": "jemalloc"})


@pytest.mark.skipif(not GLIBC, reason="glibc on Linux only")
def test_environment_leaves_an_allocator_already_chosen_alone(monkeypatch):
    monkeypatch.setattr(host_memory, "find_jemalloc", lambda: "/opt/lib/libjemalloc.so")
    for env in (
        {"CNNJAX_MALLOC": "system"},
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
        {"MALLOC_CONF": "narenas:2"},
    ):
        assert host_memory.environment(env) == env
    with pytest.raises(ValueError, match=r"CNNJAX_MALLOC must be one of .*; got 'tcmalloc'"):
        host_memory.environment({"CNNJAX_MALLOC": "tcmalloc"})


@pytest.mark.skipif(JEMALLOC is None, reason="no jemalloc on this machine")
def test_jemalloc_spares_the_page_faults_of_each_call():
    tuned, allocator = _faults(host_memory.environment(_clean_env(CNNJAX_MALLOC="jemalloc")))
    untuned, control = _faults(_clean_env(CNNJAX_MALLOC="system"))
    assert (allocator, control) == ("jemalloc", "system")
    assert untuned > 0.9 * PAGES, untuned  # glibc's default: every buffer faulted in again
    assert tuned < PAGES // 100, tuned


@pytest.mark.skipif(not (GLIBC and THP_MADVISE), reason="glibc with transparent huge pages")
def test_huge_pages_spare_most_page_faults_of_each_call():
    tuned, allocator = _faults(host_memory.environment(_clean_env(CNNJAX_MALLOC="glibc")))
    untuned, _ = _faults(_clean_env(CNNJAX_MALLOC="system"))
    assert allocator == "system"
    assert untuned > 0.9 * PAGES, untuned
    assert tuned < PAGES // 20, tuned


@pytest.mark.skipif(not GLIBC, reason="glibc on Linux only")
def test_reexec_runs_the_same_command_again_with_the_allocator():
    code = (
        "import os\n"
        "print('start', os.getpid(), flush=True)\n"
        "from cnnjax.host_memory import active_allocator, reexec_with_allocator\n"
        "reexec_with_allocator()\n"
        "print('running', active_allocator(), os.environ.get('GLIBC_TUNABLES'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_clean_env()
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Two starts of one process (execve keeps the pid), then the tuned one carries on.
    assert [line.split()[0] for line in lines] == ["start", "start", "running"]
    assert lines[0] == lines[1]
    expected = "running jemalloc None" if JEMALLOC else f"running system {host_memory.TUNABLE}"
    assert lines[2] == expected


def test_launch_rejects_an_unknown_allocator_in_one_line():
    result = subprocess.run(
        [sys.executable, "launch.py", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_clean_env(CNNJAX_MALLOC="tcmalloc"),
    )
    # launch.py checks it before it can import ConfigError; the status must still be its.
    assert result.returncode == launch.EXIT_CODES[ConfigError] == 2
    assert result.stderr.strip().splitlines() == [
        "error: CNNJAX_MALLOC must be one of auto, jemalloc, glibc, system; got 'tcmalloc'"
    ]
