"""The package layout holds: the core imports no side, the sides import only themselves and
the core, and importing the core or the terminal loads no web, database or cache library
(docs/architecture.md)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "idcode"
ADAPTERS = ROOT / "adapters"

#: What only the service may load. A gate vendor's install has none of it.
SERVICE_LIBRARIES = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "redis",
    "uvicorn",
    "pydantic_settings",
)

CORE_MODULES = sorted(
    f"idcode.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__"
)
TERMINAL_MODULES = sorted(
    f"idcode.terminal.{path.stem}"
    for path in (PACKAGE / "terminal").glob("*.py")
    if path.stem != "__init__"
)
WALLET_MODULES = sorted(
    f"idcode.wallet.{path.stem}"
    for path in (PACKAGE / "wallet").glob("*.py")
    if path.stem != "__init__"
)
ADAPTER_MODULES = sorted(
    f"idcode_adapters.{path.stem}" for path in ADAPTERS.glob("*.py") if path.stem != "__init__"
)


def side_of(module: str) -> str:
    """core, service, terminal, wallet, demo or adapters, from a dotted module name."""
    if module.startswith("idcode_adapters"):
        return "adapters"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("service", "terminal", "wallet", "demo"):
        return parts[1]
    return "core"


#: Which sides each side may import (besides the standard library and third parties).
ALLOWED = {
    "core": {"core"},
    "adapters": {"core"},
    "service": {"core", "service"},
    "terminal": {"core", "terminal"},
    "wallet": {"core", "wallet"},
    "demo": {"core", "service", "terminal", "demo"},
}


def imports_of(path: Path, module: str) -> set[str]:
    """Every idcode module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("idcode", "idcode_adapters")}


def all_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append((".".join(parts), path))
    for path in sorted(ADAPTERS.glob("*.py")):
        name = "idcode_adapters" if path.stem == "__init__" else f"idcode_adapters.{path.stem}"
        modules.append((name, path))
    return modules


@pytest.mark.parametrize(("module", "path"), all_modules(), ids=lambda value: str(value))
def test_a_module_imports_only_its_own_side_and_the_core(module: str, path: Path) -> None:
    side = side_of(module)
    crossing = sorted(
        name
        for name in imports_of(path, module)
        if name != "idcode" and side_of(name) not in ALLOWED[side]
    )
    assert not crossing, f"{module} ({side}) imports {crossing}"


def loaded_after_importing(modules: list[str]) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    "modules",
    [CORE_MODULES, CORE_MODULES + ADAPTER_MODULES, TERMINAL_MODULES, WALLET_MODULES],
    ids=["core", "core-and-adapters", "terminal", "wallet"],
)
def test_importing_the_core_the_terminal_or_the_wallet_loads_no_service_library(
    modules: list[str],
) -> None:
    loaded = loaded_after_importing(modules)
    service = sorted(name for name in loaded if name.split(".")[0] in SERVICE_LIBRARIES)
    assert not service, f"importing {modules} loaded {service}"


def test_the_core_cli_parser_builds_without_loading_service_libraries() -> None:
    script = (
        "import json, sys\n"
        "from idcode.cli import build_parser\n"
        "build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    service = sorted(
        name for name in json.loads(result.stdout) if name.split(".")[0] in SERVICE_LIBRARIES
    )
    assert not service, f"building the CLI parser loaded {service}"
