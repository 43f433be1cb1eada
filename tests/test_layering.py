"""The layout of chalicelib/ is a rule, not a diagram: every import (at module level or inside a function) runs
down the layers, and no two modules import each other, directly or around a circle.

    app.py -> wiring -> web -> clips -> ops | stores | audio | cards -> kernel (settings, errors, deadlines)

``wiring`` builds the clients and may import every package but ``web``. ``ops``, ``stores``, ``audio`` and
``cards`` are siblings that never import each other.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"settings", "errors", "deadlines"}
PACKAGES = {"web", "clips", "ops", "stores", "audio", "cards"}
BELOW = {  # what each layer may import, besides itself
    "app": {"wiring", "web", "clips", "ops", "stores", "audio", "cards", "kernel"},
    "wiring": {"clips", "ops", "stores", "audio", "cards", "kernel"},
    "web": {"clips", "ops", "stores", "audio", "cards", "kernel"},
    "clips": {"ops", "stores", "audio", "cards", "kernel"},
    "ops": {"kernel"},
    "stores": {"kernel"},
    "audio": {"kernel"},
    "cards": {"kernel"},
    "kernel": set(),
}


def _modules(root: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for app.py and everything under chalicelib/."""
    found = {"app": root / "app.py"}
    for path in sorted((root / "chalicelib").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """The project modules ``module`` imports anywhere in its file, with the line of each import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from chalicelib.audio import mp3` imports the module chalicelib.audio.mp3
                name = f"{base}.{alias.name}"
                targets.append((name if name in known else base, node.lineno))
    return [(name, line) for name, line in targets if name in known and name != module]


def _layer(module: str) -> str:
    if module == "app":
        return "app"
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in KERNEL:
        return "kernel"
    if parts[1] == "wiring":
        return "wiring"
    if parts[1] in PACKAGES:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: put it in a package, or name it in KERNEL")


def graph(root: Path) -> Dict[str, List[Tuple[str, int]]]:
    modules = _modules(root)
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def violations(root: Path) -> List[str]:
    """Every import that runs up or sideways between layers, as 'importer:line -> imported (layer -> layer)'."""
    found = []
    for module, imported in graph(root).items():
        here = _layer(module)
        for target, line in imported:
            there = _layer(target)
            if there != here and there not in BELOW[here]:
                found.append(f"{module}:{line} -> {target} ({here} may not import {there})")
    return found


def cycles(root: Path) -> List[List[str]]:
    """Import circles (function-level imports included), each as the modules around it."""
    edges = {module: sorted({target for target, _ in imported}) for module, imported in graph(root).items()}
    found, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in edges[module]:
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


def test_every_import_runs_down_the_layers():
    assert violations(ROOT) == []


def test_no_import_circle_even_through_function_level_imports():
    assert cycles(ROOT) == []


def test_every_module_belongs_to_a_layer():
    for module in _modules(ROOT):
        _layer(module)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_says_what_it_holds_and_what_it_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / "chalicelib" / package / "__init__.py").read_text()))
    assert doc and "May import" in doc, f"chalicelib/{package}/__init__.py must say what it holds and may import"


@pytest.fixture
def tree(tmp_path):
    """A copy of app.py and chalicelib/ to break on purpose."""
    shutil.copy(ROOT / "app.py", tmp_path / "app.py")
    shutil.copytree(ROOT / "chalicelib", tmp_path / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def test_an_engine_module_importing_a_web_module_fails_the_check(tree):
    _append(tree / "chalicelib/audio/cutting.py", "def _link():\n    from chalicelib.web import links\n")
    found = violations(tree)
    assert len(found) == 1
    assert found[0].startswith("chalicelib.audio.cutting:") and "(audio may not import web)" in found[0]


def test_a_store_importing_the_engine_fails_the_check(tree):
    _append(tree / "chalicelib/stores/source.py", "from chalicelib.audio.mp3 import frames")
    assert [v.split(" -> ")[1] for v in violations(tree)] == [
        "chalicelib.audio.mp3.frames (stores may not import audio)"
    ]


def test_a_kernel_module_importing_a_package_fails_the_check(tree):
    _append(tree / "chalicelib/errors.py", "import chalicelib.ops.logs")
    assert any("(kernel may not import ops)" in v for v in violations(tree))


def test_a_circle_dodged_by_a_function_level_import_is_found(tree):
    # seek_index imports cutting at module level; cutting importing seek_index inside a function closes a circle
    # (and runs up the layers: both checks see it)
    _append(tree / "chalicelib/audio/cutting.py", "def _index():\n    from chalicelib.clips import seek_index\n")
    assert any(c[0] == c[-1] and "chalicelib.clips.seek_index" in c for c in cycles(tree))
    # a circle inside one layer is found too
    _append(tree / "chalicelib/clips/seek_index.py", "def _service():\n    from chalicelib.clips import service\n")
    assert any({"chalicelib.clips.service", "chalicelib.clips.seek_index"} <= set(c) for c in cycles(tree))


def test_a_module_outside_every_package_fails_the_check(tree):
    (tree / "chalicelib" / "helpers.py").write_text('"""A module with no home."""\n')
    with pytest.raises(AssertionError, match=r"chalicelib\.helpers belongs to no layer"):
        violations(tree)
