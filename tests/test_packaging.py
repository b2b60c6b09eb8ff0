"""A normal (non-editable) install works outside the source tree: the wheel ships recipes/ and
accelerate_configs/ inside the package and :mod:`xtask_safety.resources` finds them there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("recipes", "accelerate_configs")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The project built into a wheel (from a copy, so no build/ or egg-info lands in the checkout) and
    installed with ``pip --target`` into a folder of its own."""
    tmp = tmp_path_factory.mktemp("packaging")
    proj = tmp / "proj"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", *SHIPPED):
        shutil.copytree(REPO / name, proj / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, proj / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(proj)], tmp)
    (wheel,) = (tmp / "dist").glob("xtask_safety-*.whl")
    site = tmp / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return {"wheel": wheel, "site": site, "outside": outside}


def _child_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XTASK_ACCELERATE_CONFIGS")}
    env["PYTHONPATH"] = str(site)  # before site-packages, so the editable install (if any) does not win
    return env


def test_wheel_holds_packages_recipes_and_configs(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    # pyproject.toml lists the packages (package-dir needs it): every package under src/ must be there
    for init in (REPO / "src" / "xtask_safety").rglob("__init__.py"):
        assert init.relative_to(REPO / "src").as_posix() in names, f"{init}: package missing from pyproject.toml"
    for folder in SHIPPED:
        files = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        missing = sorted(f for f in files if f"xtask_safety/{f}" not in names)
        assert not missing, f"not shipped (extend package-data in pyproject.toml): {missing}"
    assert "xtask_safety/recipes/smollm2-135m/demo/config_cpu.yaml" in names
    assert "xtask_safety/recipes/eval/fixtures/safety_instructions.jsonl" in names
    assert any(n.startswith("xtask_safety/accelerate_configs/") and n.endswith(".yaml") for n in names)


def test_installed_package_finds_its_recipes_outside_the_checkout(installed):
    site, outside = installed["site"], installed["outside"]
    assert (site / "xtask_safety" / "recipes" / "smollm2-135m" / "demo" / "config_cpu.yaml").is_file()
    assert sorted(p.name for p in (site / "xtask_safety" / "accelerate_configs").glob("*.yaml")) == \
        sorted(p.name for p in (REPO / "accelerate_configs").glob("*.yaml"))
    probe = """
import json, xtask_safety
from xtask_safety import resources
from xtask_safety.sweep.stages import resolve_file
from xtask_safety.train.launch import resolve_accelerate_config
from xtask_safety.generate import backends
print(json.dumps({
    "module": xtask_safety.__file__,
    "checkout": str(resources.CHECKOUT),
    "vllm_repo": str(backends.REPO),
    "recipe": str(resources.recipe_path("recipes/smollm2-135m/demo/config_cpu.yaml")),
    "suite": str(resolve_file("recipes/eval/demo.yaml", "suite")),
    "accelerate": str(resolve_accelerate_config("cpu_ddp")),
    "accelerate_dir": str(resources.accelerate_config_dir()),
}))
"""
    out = json.loads(_run([sys.executable, "-c", probe], outside, _child_env(site)).strip().splitlines()[-1])
    assert out["checkout"] == "None" and out["vllm_repo"] == "None"
    for key in ("module", "recipe", "suite", "accelerate", "accelerate_dir"):
        path = Path(out[key]).resolve()
        assert path.is_relative_to(site.resolve()), f"{key}: {path} is not in the installed copy {site}"
        assert not path.is_relative_to(REPO), f"{key}: {path} comes from the checkout"


def test_installed_cli_runs_outside_the_checkout(installed):
    env, outside = _child_env(installed["site"]), installed["outside"]
    out = _run([sys.executable, "-m", "xtask_safety", "demo", "--help"], outside, env)
    assert "usage" in out.lower()
    # the demo's plan reads its sweep, data, suite and training recipes: all from the installed copy
    out = _run([sys.executable, "-m", "xtask_safety", "demo", "--dry_run", "--output_dir", str(outside / "run")],
               outside, env)
    assert "training recipe: recipes/smollm2-135m/demo/config_cpu.yaml" in out, out
