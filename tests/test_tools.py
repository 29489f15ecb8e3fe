"""The install and cloud tooling: ``tools/tpu.sh`` (which cannot reach Google Cloud from
here, so only its parsing and the gcloud commands it would run are checked) and the
constraints file CI installs from (``requirements/ci.txt`` inside ``pyproject.toml``'s
ranges)."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
TPU_SH = ROOT / "tools" / "tpu.sh"


def _tpu_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run tools/tpu.sh with a PATH on which `gcloud`, if called, fails loudly."""
    fake_gcloud = "/nonexistent/gcloud-must-not-be-called"
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    environment.update({"GCLOUD": fake_gcloud, **env})
    return subprocess.run(
        ["bash", str(TPU_SH), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        cwd=ROOT,
    )


def test_tpu_sh_parses():
    subprocess.run(["bash", "-n", str(TPU_SH)], check=True, timeout=60)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_tpu_sh_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(TPU_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_tpu_sh_help_prints_usage_without_gcloud():
    for flag in ("--help", "-h"):
        result = _tpu_sh(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: tools/tpu.sh")
        for command in ("create", "install", "run", "ssh", "delete", "--spot", "--queued"):
            assert command in result.stdout


def test_tpu_sh_refuses_bad_input_with_exit_2():
    assert _tpu_sh().returncode == 2  # no command: usage on stderr
    for args in (("--bogus", "create"), ("frobnicate",), ("--zone",), ("--type", "v9-8", "create")):
        result = _tpu_sh(*args)
        assert result.returncode == 2, args
        assert "tools/tpu.sh:" in result.stderr or "Usage" in result.stderr


def _dry_run(*args: str, **env: str) -> list[str]:
    result = _tpu_sh("--dry-run", *args, **env)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_tpu_sh_create_runs_the_documented_gcloud_commands():
    (vm,) = _dry_run("--zone", "us-central2-b", "--type", "v4-32", "--spot", "create")
    gcloud = "/nonexistent/gcloud-must-not-be-called"
    assert vm.split()[1:5] == [gcloud, "compute", "tpus", "tpu-vm"]
    for part in ("create cnnjax", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"):
        assert part in vm
    assert "--spot" in vm and "--zone=us-central2-b" in vm
    (queued,) = _dry_run("--queued", "create", NAME="run1", TYPE="v5litepod-8")
    assert "queued-resources create run1 --node-id=run1" in queued
    assert "--runtime-version=v2-alpha-tpuv5-lite" in queued
    assert "--spot" not in queued and "--zone" not in queued  # gcloud's own defaults then


def test_tpu_sh_run_passes_launch_arguments_to_every_worker_quoted():
    (ssh,) = _dry_run("run", "--exp", "mnist_lenet", "--workdir", "gs://b/runs/a b")
    assert "ssh cnnjax --worker=all" in ssh
    assert "launch.py\\ --exp\\ mnist_lenet\\ --workdir\\ gs://b/runs/a\\\\\\ b" in ssh


def test_tpu_sh_install_and_delete():
    lines = _dry_run("install")
    assert re.search(r"scp \S+/cnnjax\.tar\.gz cnnjax:cnnjax\.tar\.gz --worker=all", lines[0])
    assert "ssh cnnjax --worker=all" in lines[1] and 'pip install -q -e ".[tpu]"' in lines[1]
    assert len(lines) == 2  # no --data: no TFDS copy
    (delete,) = _dry_run("--queued", "delete")
    assert "queued-resources delete cnnjax --force --quiet" in delete


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return pins


def test_ci_constraints_lie_inside_the_declared_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(ROOT / "requirements" / "ci.txt")
    declared = list(project["dependencies"])
    for extra in ("dev", "ray", "bench"):
        declared += project["optional-dependencies"][extra]
    for text in declared:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is declared but not pinned in requirements/ci.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/ci.txt pins {name}=={pins[name]}, outside {requirement}"
        )
    # The accelerator extras name JAX's own wheels, in the same range as jax itself.
    jax_range = next(Requirement(t).specifier for t in project["dependencies"] if t[:4] == "jax>")
    for extra, wheel in (("cuda12", "jax[cuda12]"), ("tpu", "jax[tpu]")):
        (requirement,) = [
            Requirement(t) for t in project["optional-dependencies"][extra] if t.startswith(wheel)
        ]
        assert requirement.specifier == jax_range
