"""environment.yml (conda) and pyproject.toml must ask for the same packages."""

import tomllib

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
