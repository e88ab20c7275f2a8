"""The package layers (docs/architecture.md): no module imports a package above its own layer,
nor a sibling package of the same layer. Every import counts, inside functions and under
TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "callstatus"

# package -> layer; a package may import its own modules and packages of lower layers only.
LAYERS = {
    "core": 0,
    "receiver": 1,
    "analyst": 1,
    "reconcile": 1,
    "privacy": 1,
    "cluster": 2,
    "simulator": 2,
    "dashboard": 2,
    "alerts": 3,
    "app": 4,
    "cli": 5,
}


def _package(module: str) -> str | None:
    """`callstatus.receiver.writer` -> `receiver`; None for modules outside callstatus."""
    parts = module.split(".")
    if parts[0] != "callstatus" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "callstatus":
                found.extend((node.lineno, f"callstatus.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    assert packages | modules <= set(LAYERS), (packages | modules) - set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_import_reaches_up_or_sideways(path: Path) -> None:
    relative = path.relative_to(ROOT)
    own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
    if own not in LAYERS:
        return
    wrong = []
    for line, module in _imports(path):
        target = _package(module)
        if target is None or target == own or target not in LAYERS:
            continue
        if LAYERS[target] >= LAYERS[own]:
            wrong.append(
                f"line {line}: {own} (layer {LAYERS[own]}) imports {module} "
                f"(layer {LAYERS[target]})"
            )
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from callstatus.app import runtime\n")
    assert _imports(sample) == [(2, "callstatus.app")]
    assert LAYERS[_package("callstatus.app.runtime") or ""] > LAYERS["core"]
