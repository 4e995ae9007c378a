"""The layout rules of docs/architecture.md, checked on the source: imports go inward only, no
private name crosses a package, no import cycle, and only the contract module spells the
contract's file names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cardioinr"
#: The pipeline, innermost first: a package may import only from itself and packages before it.
LAYERS = ("core", "geometry", "io", "phantoms", "fit", "priors", "analysis", "outputs", "app")
CONTRACT_NAMES = ("displacement.nii.gz", "labels.nii.gz", "field.pt", "metrics.json", "strain.csv", "report.html")


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every ``cardioinr`` import in a file."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # TYPE_CHECKING blocks import nothing at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cardioinr"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("cardioinr")]
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer_or_is_a_documented_shim():
    loose = sorted(m for m in _modules() if m != "cardioinr" and _package(m) is None)
    # cardioinr.cli and cardioinr.report: old paths kept for one release; __main__: python -m cardioinr.
    assert loose == ["cardioinr.__main__", "cardioinr.cli", "cardioinr.report"]


def test_imports_go_inward_only():
    bad = []
    for mod, path in _modules().items():
        own = _package(mod)
        if own is None:
            continue
        for target, _, line in _imports(path):
            other = _package(target)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}) imports {target}")
    assert not bad, "outward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_a_package():
    bad = []
    for mod, path in _modules().items():
        own = _package(mod)
        for target, names, line in _imports(path):
            if _package(target) == own and own is not None:
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            private += [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            if private:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {', '.join(private)} from {target}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_no_import_cycle_at_module_level():
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps = set()
        for target, names, _ in _imports(path, top_level_only=True):
            deps |= {f"{target}.{n}" for n in names if f"{target}.{n}" in mods} or {target}
        graph[mod] = {d for d in deps if d in mods and d != mod}

    # A package's __init__ runs before any of its modules: importing a.b imports a first.
    def parents(m: str) -> set[str]:
        parts = m.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in mods}

    for m in graph:
        graph[m] = (graph[m] | set().union(*(parents(d) for d in graph[m]))) - {m}
    seen: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        seen[m] = 1
        for d in sorted(graph[m]):
            if seen.get(d) == 1 and d not in parents(m):
                cycle.extend(stack[stack.index(d):] + [d])
                return True
            if d not in seen and visit(d, stack + [d]):
                return True
        seen[m] = 2
        return False

    for m in sorted(graph):
        if m not in seen and visit(m, [m]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_only_the_contract_module_spells_the_contract_file_names():
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(n) for n in CONTRACT_NAMES))
    owners = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if pattern.search(p.read_text())}
    assert owners == {"outputs/contract.py"}
