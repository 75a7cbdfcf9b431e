"""The package's shape: imports run one way between stages, modules and functions stay short.

Stages of ``druids`` (see the project's DESIGN): the base layer (``sphere``,
``config``, ``paths``, ``runtime``, ``cache``, ``values``, ``provenance``), then ``data``,
``models``, ``training``, ``sampling``, ``calibration`` / ``explain``,
``plotting`` and the command line. Every ``import`` is counted, also those
inside functions, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "druids"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60

BASE = {"sphere", "config", "paths", "runtime", "cache", "values", "provenance"}
LATER = {"data", "models", "training", "sampling", "calibration", "explain", "plotting", "cli", "__main__"}
# stage -> the stages it must not import
FORBIDDEN = {
    **{base: LATER for base in BASE},
    "data": {"models", "training", "sampling", "calibration", "explain", "plotting", "cli"},
    "models": {"data", "training", "sampling", "calibration", "explain", "plotting", "cli"},
    "sampling": {"training", "calibration", "explain", "plotting", "cli"},
    "explain": {"calibration"},
    "calibration": {"explain"},
    "plotting": {"data", "models", "training", "sampling", "calibration", "explain", "sphere", "runtime", "cli"},
}
PLOTTING_MAY_IMPORT = {"paths", "cache", "config", "values", "provenance"}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    """``druids/data/era5.py`` -> ``druids.data.era5``; a package's ``__init__`` is the package."""
    parts = path.with_suffix("").parts
    parts = parts[len(parts) - 1 - parts[::-1].index("druids") :]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(name: str) -> str | None:
    """The stage of a ``druids`` module name (``druids.data.era5`` -> ``data``); None for ``druids`` itself."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(path: Path) -> set[str]:
    """The ``druids`` modules that ``path`` imports, relative imports resolved; ``from druids import x`` is ``druids.x``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            if base == "druids":  # from druids import data, config: the submodules themselves
                found |= {f"druids.{alias.name}" for alias in node.names}
    return {name for name in found if name == "druids" or name.startswith("druids.")}


def import_violations() -> list[str]:
    violations = []
    for path in modules():
        mine = stage(module_name(path))
        for name in sorted(imported_modules(path)):
            theirs = stage(name)
            if theirs is None or theirs == mine:
                continue
            if theirs in FORBIDDEN.get(mine, set()):
                violations.append(f"{module_name(path)} imports {name}")
            elif mine == "plotting" and theirs not in PLOTTING_MAY_IMPORT:
                violations.append(f"{module_name(path)} imports {name} (plotting takes arrays)")
    return violations


def code_lines(lines: list[str], first: int, last: int) -> int:
    """Lines ``first..last`` (1-based, inclusive) that hold code: neither blank nor comments only."""
    return sum(1 for line in lines[first - 1 : last] if line.strip() and not line.strip().startswith("#"))


def function_lengths(path: Path) -> dict[str, int]:
    """Lines of code of each function and method of ``path``, from its decorators to its end, docstring excluded
    (a nested function counts in its parent too)."""
    source = path.read_text()
    lines = source.splitlines()
    lengths = {}
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        n = code_lines(lines, first, node.end_lineno)
        if ast.get_docstring(node, clean=False) is not None:
            n -= code_lines(lines, node.body[0].lineno, node.body[0].end_lineno)
        lengths[f"{module_name(path)}.{node.name} (line {node.lineno})"] = n
    return lengths


def test_layout_helpers_find_what_they_should(tmp_path):
    """The checks themselves: relative and aliased imports resolve, docstrings and comments are not code."""
    pkg = tmp_path / "druids" / "data"
    pkg.mkdir(parents=True)
    sample = pkg / "sample.py"
    sample.write_text(
        "import numpy\nfrom druids import config, sphere as s\nfrom ..models import network\n"
        "def f(x):\n    '''Doc\n    string.'''\n    # comment\n\n    import druids.training.loop\n    return x\n"
    )
    assert module_name(sample) == "druids.data.sample"
    assert imported_modules(sample) == {"druids", "druids.config", "druids.sphere", "druids.models", "druids.training.loop"}
    assert list(function_lengths(sample).values()) == [3]  # def, import, return


def test_package_is_found():
    names = {module_name(p) for p in modules()}
    assert {"druids.config", "druids.data.era5", "druids.training.loop", "druids.sampling.samplers"} <= names


def test_imports_run_one_way():
    violations = import_violations()
    assert not violations, "imports against the stage order:\n" + "\n".join(violations)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_module_is_short(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines (at most {MAX_MODULE_LINES})"


def test_functions_are_short():
    long = {name: n for path in modules() for name, n in function_lengths(path).items() if n > MAX_FUNCTION_LINES}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code:\n" + "\n".join(f"{k}: {v}" for k, v in long.items())
