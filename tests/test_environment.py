"""The package as a new user installs it: pyproject.toml builds cleanly, environment.yml asks for the same packages."""

import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.conftest import REPO


def _norm(spec: str) -> str:
    return spec.replace(" ", "").lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_norm(s) for s in project["dependencies"]} | {_norm(s) for s in project["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert {_norm(s) for s in pip} == wanted
    assert "python=3.11" in env["dependencies"]
    assert "torch==2.13.0" in wanted  # the CPU wheel; a looser spec can pull a multi-GB CUDA build


def test_the_package_metadata_builds_without_a_deprecation(tmp_path):
    """`pip install -e .` printed setuptools' "project.license as a TOML table is deprecated" three times."""
    pytest.importorskip("setuptools", minversion="77")  # pip builds with the build-system's setuptools>=77
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first to take an SPDX expression
    src = tmp_path / "src"
    for name in ("pipeline", "analysis"):
        (src / name).mkdir(parents=True)
        (src / name / "__init__.py").write_text("")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path)], cwd=src, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in done.stderr.lower(), done.stderr
    metadata = (tmp_path / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata
