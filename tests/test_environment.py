"""The package as a new user installs it: pyproject.toml builds cleanly, environment.yml asks for the same packages."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO


def _norm(spec: str) -> str:
    return spec.replace(" ", "").lower()


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {r.name.lower(): r for r in map(Requirement, project["dependencies"])}


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, version = line.split("==")
            pins[canonicalize_name(package)] = Version(version)
    return pins


# conda-forge's names for pyproject's packages where they differ (matplotlib-base: matplotlib without a GUI backend)
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _conda_env(name: str) -> tuple[dict[str, str], list[str]]:
    """An environment file's conda packages (name -> spec, "" for none) and its pip lines."""
    env = yaml.safe_load((REPO / name).read_text())
    assert env["channels"] == ["conda-forge"], name
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        package = Requirement(dep)  # conda's `name>=1,<2` reads as a PEP 508 requirement
        conda[package.name.lower()] = _norm(str(package.specifier))
    return conda, pip


def _runtime_in_conda_names() -> dict[str, str]:
    return {CONDA_NAMES.get(name, name): _norm(str(req.specifier)) for name, req in _requirements().items()}


def test_environment_yml_is_the_runtime_from_conda_forge_and_lrscan_from_pip():
    """environment.yml (for users): pyproject's runtime packages and ranges from conda-forge, lrscan by pip, nothing
    the tests or the docs need (Lightning, transformers, ruff, pytest were in it once)."""
    conda, pip = _conda_env("environment.yml")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _runtime_in_conda_names()
    assert {k: v for k, v in conda.items() if k not in ("python", "pip")} == runtime
    assert conda["python"] == _norm(project["requires-python"]) and conda["pip"] == ""
    assert pip == ["lrscan"]
    extras = {canonicalize_name(Requirement(r).name) for group in project["optional-dependencies"].values()
              for r in group}
    assert not extras & {canonicalize_name(n) for n in conda}, "a test or docs library in the user environment"


def test_environment_dev_yml_is_the_same_runtime_plus_the_checkout_with_its_test_and_docs_extras():
    user, _ = _conda_env("environment.yml")
    dev, pip = _conda_env("environment-dev.yml")
    assert dev == user
    assert pip == ["-e .[test,docs]"]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"test", "docs"} <= set(extras)


def test_the_docs_say_how_to_make_both_environments():
    install = (REPO / "docs" / "install.md").read_text()
    assert "conda env create -f environment.yml" in install and "conda env create -f environment-dev.yml" in install
    assert "conda env create -f environment.yml" in (REPO / "README.md").read_text()


def test_runtime_dependencies_are_ranges_that_keep_a_users_torch_and_wandb():
    needs = _requirements()
    torch, wandb = needs["torch"].specifier, needs["wandb"].specifier
    # a lower end only for torch (a user's CUDA build of any newer release stays), a tested window for wandb
    assert [s.operator for s in torch] == [">="]
    assert sorted(s.operator for s in wandb) == ["<", ">="]
    oldest, newest = _pins("constraints-oldest.txt"), _pins("constraints.txt")
    for name in ("torch", "wandb"):
        # the lower end is the oldest release tested, and the newest pins lie inside the range
        [low] = [s for s in needs[name].specifier if s.operator == ">="]
        assert Version(low.version).release == oldest[name].release[: len(Version(low.version).release)]
        assert needs[name].specifier.contains(oldest[name]) and needs[name].specifier.contains(newest[name])
    # wandb's upper end: the minor after the newest tested
    [high] = [s for s in wandb if s.operator == "<"]
    assert Version(high.version).release == (newest["wandb"].major, newest["wandb"].minor + 1)
    # every dependency pinned for CI satisfies pyproject's range
    for name, req in needs.items():
        assert req.specifier.contains(newest[canonicalize_name(name)], prereleases=True), name


def test_make_and_ci_install_with_the_constraints():
    makefile, ci = (REPO / "Makefile").read_text(), (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt" in makefile and "constraints-oldest.txt" in makefile
    assert "make test-oldest" in ci


def test_the_package_metadata_builds_without_a_deprecation(tmp_path):
    """`pip install -e .` printed setuptools' "project.license as a TOML table is deprecated" three times."""
    pytest.importorskip("setuptools", minversion="77")  # pip builds with the build-system's setuptools>=77
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first to take an SPDX expression
    src = tmp_path / "src"
    for name in ("lrscan", "pipeline", "analysis"):  # every package folder, empty
        for init in (REPO / name).rglob("__init__.py"):
            (src / init.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            (src / init.relative_to(REPO)).write_text("")
    shutil.copy(REPO / "pyproject.toml", src)
    (src / "docs").mkdir()
    shutil.copy(REPO / "docs" / "pypi.md", src / "docs")  # the long description
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path)], cwd=src, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in done.stderr.lower(), done.stderr
    metadata = (tmp_path / done.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata


def _build_wheel(dest: Path) -> Path:
    """lrscan's wheel built from a copy of the sources (the build leaves nothing in the repo)."""
    src = dest / "src"
    for name in ("lrscan", "pipeline", "analysis"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    (src / "docs").mkdir()
    shutil.copy(REPO / "docs" / "pypi.md", src / "docs")  # the long description
    # no build isolation: the setuptools at hand (the build-system's >=77) builds it, nothing is downloaded
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(dest / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = (dest / "dist").glob("lrscan-*.whl")
    return wheel


def _venv_with(tmp_path: Path, *wheels: Path) -> tuple[Path, Path]:
    """A fresh venv holding `wheels`, whose dependencies are this environment's (torch, wandb, ...): a .pth line
    puts our site-packages after the venv's own, where the wheels go (a path in a .pth runs none of its .pth
    files, so this environment's editable lrscan stays out of sight). Returns (venv, its site-packages)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = venv.glob("lib/python*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # with its dependencies resolved, from no index: the ranges must take this environment's torch and wandb
    # as they are (a user's own builds stay), so the wheels are all pip installs
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-index", "--no-cache-dir", *map(str, wheels)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv, site


def _user_env(tmp_path: Path, venv: Path, names: Path) -> tuple[Path, dict[str, str]]:
    """An empty folder as a user's, with no repo, no $LRSCAN_DATA and makemore's names.txt in the per-user cache."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (home / ".cache" / "lrscan").mkdir(parents=True)
    shutil.copy(names, home / ".cache" / "lrscan" / "names.txt")
    env = {k: v for k, v in os.environ.items() if k not in ("LRSCAN_DATA", "XDG_CACHE_HOME", "PYTHONPATH")}
    env |= {"HOME": str(home), "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "WANDB_DIR": str(work),
            "WANDB_MODE": "offline", "MPLBACKEND": "Agg"}
    return work, env


# a user's own files named like lrscan's rooms: importing either would fail loudly
USERS_OWN = "raise RuntimeError('the user\\'s own {name}.py was imported')\n"


def _quickstart_block() -> str:
    """The first Python block of docs/quickstart.md (the README's too): `lrscan.find` on a model it makes."""
    import re

    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "quickstart.md").read_text(), re.S)[0]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_installed_wheel_works_beside_a_users_pipeline_py_and_analysis_py(tmp_path, real_names):
    """From a folder holding a pipeline.py and an analysis.py: `import lrscan`, the quickstart's first block and
    `lrscan study --size=smoke` work, and the wheel installs nothing at the top level but `lrscan`."""
    wheel = _build_wheel(tmp_path)
    import zipfile

    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"lrscan", "lrscan-0.1.0.dist-info"}, tops
    venv, site = _venv_with(tmp_path, wheel)
    work, env = _user_env(tmp_path, venv, real_names)
    for name in ("pipeline", "analysis"):
        (work / f"{name}.py").write_text(USERS_OWN.format(name=name))
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lrscan; from lrscan import pipeline, analysis; "
                            "print(lrscan.__file__); print(pipeline.__file__); print(analysis.__file__); "
                            "print(lrscan.range_test.__module__, lrscan.find.__module__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    files = where.stdout.split()[:3]
    assert all(Path(f).is_relative_to(site) for f in files), where.stdout
    (work / "quickstart.py").write_text(_quickstart_block())
    done = subprocess.run([str(venv / "bin" / "python"), "quickstart.py"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "lrscan.find: lr" in done.stdout and "training with lr" in done.stdout
    done = subprocess.run([str(venv / "bin" / "lrscan"), "study", "--size=smoke", "--out=study"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((work / "study" / "report" / "summary.json").read_text())
    assert summary["size"] == "smoke" and summary["best_lr"] > 0 and len(summary["best_lre_ci"]) == 2
    # the study's runs record the program a user can run again, installed
    assert "lrscan.pipeline.train" in (work / "study" / "stages" / "lr_range.yaml").read_text()
    assert not (work / "__pycache__").exists()  # neither of the user's files was imported
    # everything the study wrote is in its folder (the quickstart wrote its figure and its runs)
    assert sorted(p.name for p in work.iterdir()) == ["analysis.py", "find.png", "pipeline.py", "quickstart.py",
                                                      "study", "wandb"]


def _dummy_wheel(dest: Path) -> Path:
    """A distribution that owns the top-level `pipeline` and `analysis` packages (such names are taken on the
    package index), built here."""
    src = dest / "dummy"
    for name in ("pipeline", "analysis"):
        (src / name).mkdir(parents=True)
        (src / name / "__init__.py").write_text(f"OWNER = 'other-{name}'\n")
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=77"]\n'
                                        'build-backend = "setuptools.build_meta"\n'
                                        '[project]\nname = "other-pipeline"\nversion = "1.0"\n'
                                        '[tool.setuptools]\npackages = ["pipeline", "analysis"]\n')
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(dest / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = (dest / "dist").glob("other_pipeline-*.whl")
    return wheel


TINY_RANGE_TEST = """
import torch, lrscan, pipeline, analysis
assert pipeline.OWNER == "other-pipeline" and analysis.OWNER == "other-analysis"  # theirs, untouched
def make(seed):
    model = torch.nn.Linear(2, 1)
    X = torch.randn(64, 2)
    y = X.sum(1, keepdim=True)
    return lrscan.Task(model, torch.optim.SGD(model.parameters(), lr=0.1), batches=lambda i: (X, y),
                       loss_fn=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]))
result = lrscan.range_test(make, seeds=[1, 2], steps=40, wandb_mode="disabled")
print("best_lr", result.best_lr)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_installed_wheel_works_beside_a_distribution_owning_pipeline_and_analysis(tmp_path, real_names):
    venv, site = _venv_with(tmp_path, _dummy_wheel(tmp_path), _build_wheel(tmp_path))
    assert (site / "pipeline" / "__init__.py").read_text() == "OWNER = 'other-pipeline'\n"  # not replaced
    work, env = _user_env(tmp_path, venv, real_names)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", TINY_RANGE_TEST], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "best_lr" in done.stdout
    # a sweep launches `-m lrscan.pipeline.train`, which the other `pipeline` cannot shadow
    done = subprocess.run([str(venv / "bin" / "lrscan"), "sweep", "demo", "--pack", "1", "--count", "1", "--out",
                           "runs", "--no-progress"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [folder] = (work / "runs").iterdir()  # the sweep's folder, its runs in its wandb/
    done = subprocess.run([str(venv / "bin" / "lrscan"), "analyze", str(folder / "wandb"), "--out", "report",
                           "--n-boot", "0"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (work / "report" / "summary.json").is_file()
    assert (site / "pipeline" / "__init__.py").read_text() == "OWNER = 'other-pipeline'\n"
