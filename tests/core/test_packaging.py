"""What `pip install idcode` ships: every package of the tree, and the core's dependencies
only (the rest in extras)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_distribution_lists_every_package_in_the_tree() -> None:
    in_tree = {  # every folder with Python modules (migrations/versions has no __init__.py)
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "idcode").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    assert in_tree - listed == set(), "packages a non-editable install would leave out"
    assert listed - in_tree == {"idcode_adapters"}  # adapters/, installed under another name


def test_the_core_depends_on_no_web_database_or_cache_library() -> None:
    names = {
        requirement.split("[")[0].split(">")[0].split("=")[0].strip().lower()
        for requirement in PROJECT["project"]["dependencies"]
    }
    assert names == {"cryptography", "pyjwt", "pydantic"}


def test_each_side_has_its_extra() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert {"qr", "terminal", "service", "test", "dev"} <= set(extras)
    service = " ".join(extras["service"])
    for library in ("fastapi", "sqlalchemy", "alembic", "psycopg", "redis", "uvicorn"):
        assert library in service


def test_every_file_of_the_wallets_shell_is_in_the_repository_and_the_package() -> None:
    """The service worker caches its shell all or nothing: one file missing from a clean
    clone (an ignore rule once kept icon.svg out of git) and the wallet never works offline."""
    wallet = ROOT / "idcode" / "service" / "web-wallet"
    worker = (wallet / "sw.js").read_text()
    shell = re.search(r"const SHELL = \[(.*?)\];", worker, re.S)
    assert shell is not None
    files = [name for name in re.findall(r'"([^"]+)"', shell.group(1)) if name != "./"]
    assert files
    tracked = subprocess.run(
        ["git", "ls-files", "--", *(f"idcode/service/web-wallet/{name}" for name in files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        assert (wallet / name).is_file(), name
        assert f"idcode/service/web-wallet/{name}" in tracked, f"{name} is not in git"
        assert resources.files("idcode").joinpath(f"service/web-wallet/{name}").is_file()
