"""Where the recipes (``recipes/``) and accelerate configs (``accelerate_configs/``) are found.

Both folders sit at the top of the source repository. A wheel ships them inside the package
(``xtask_safety/recipes``, ``xtask_safety/accelerate_configs``: see ``package-dir`` in pyproject.toml);
an editable install or ``PYTHONPATH=src`` leaves them in the checkout. A path the user gives wins; a
relative one that does not exist is looked up in the shipped copy (``recipes/x.yaml`` and ``x.yaml``
alike), so ``recipes/...`` names work from any directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from xtask_safety.errors import ConfigError

PACKAGE = Path(str(resources.files("xtask_safety")))  # the installed (or checked-out) package folder
_src = Path(__file__).resolve().parents[1]
# the repository root when running from a source checkout (src layout), else None
CHECKOUT: Path | None = _src.parent if _src.name == "src" and (_src.parent / "pyproject.toml").is_file() else None
RECIPES = "recipes"
ACCELERATE_CONFIGS = "accelerate_configs"


def shipped_dirs(name: str) -> list[Path]:
    """The existing copies of a shipped folder (``recipes`` or ``accelerate_configs``): the one inside the
    package (a wheel install) first, then the source checkout's."""
    roots = [PACKAGE / name] + ([CHECKOUT / name] if CHECKOUT is not None else [])
    return [r for r in roots if r.is_dir()]


def _places(name: str) -> str:
    dirs = shipped_dirs(name)
    return ", ".join(str(d) for d in dirs) if dirs else f"no {name}/ shipped with the package at {PACKAGE}"


def recipes_dir() -> Path:
    """The shipped ``recipes/`` folder."""
    dirs = shipped_dirs(RECIPES)
    if not dirs:
        raise ConfigError(f"recipes: {_places(RECIPES)} (reinstall the package)")
    return dirs[0]


def accelerate_config_dir() -> Path:
    """The shipped ``accelerate_configs/`` folder."""
    dirs = shipped_dirs(ACCELERATE_CONFIGS)
    if not dirs:
        raise ConfigError(f"accelerate_configs: {_places(ACCELERATE_CONFIGS)} (reinstall the package)")
    return dirs[0]


def recipe_path(path: str | Path, what: str = "recipe") -> Path:
    """``path`` as given when it exists (relative to the working directory, or absolute); else, for a relative
    path, the shipped copy (``recipes/`` prefix optional); else a ConfigError naming where it looked."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if not p.is_absolute():
        rel = Path(*p.parts[1:]) if p.parts[:1] == (RECIPES,) and len(p.parts) > 1 else p
        for root in shipped_dirs(RECIPES):
            if (root / rel).exists():
                return root / rel
        raise ConfigError(f"{what}: {path} not found (looked in {Path.cwd()} and in the shipped recipes: "
                          f"{_places(RECIPES)})")
    raise ConfigError(f"{what}: {path} not found")
