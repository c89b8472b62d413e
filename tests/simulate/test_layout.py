"""The simulator's modules import each other in one direction, and no one reaches into another's _private names."""

from __future__ import annotations

import ast
from pathlib import Path

import ruletrace

PKG = Path(ruletrace.__file__).resolve().parent
SIM = PKG / "simulate"


def _imports(path: Path, package: str) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import in the file, also inside functions and
    ``if TYPE_CHECKING:`` blocks: a cycle dodged by a late import is still a cycle."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not node.module:  # "from . import x": x is a module
                out += [(f"{mod}.{a.name}", []) for a in node.names]
            else:
                out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for f in sorted(SIM.glob("*.py")):
        name = f"ruletrace.simulate.{f.stem}"
        g[name] = {m for m, _ in _imports(f, "ruletrace.simulate") if m.startswith("ruletrace.simulate.")}
    return g


def test_simulate_imports_are_acyclic() -> None:
    g = _graph()
    assert "ruletrace.simulate.walker" in g
    done: set[str] = set()

    def visit(n: str, path: list[str]) -> None:
        if n in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
        if n in done:
            return
        for m in sorted(g.get(n, ())):
            visit(m, path + [n])
        done.add(n)

    for n in sorted(g):
        visit(n, [])


def test_no_private_names_imported_across_modules() -> None:
    files = [*SIM.glob("*.py"), PKG / "render" / "diff.py", PKG / "rulesets" / "options.py"]
    bad = []
    for f in files:
        pkg = "ruletrace." + ".".join(f.relative_to(PKG).parent.parts)
        for mod, names in _imports(f, pkg):
            if mod.startswith("ruletrace"):
                bad += [f"{f.name}: {mod}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad


def test_match_registry_covers_the_modules_the_parser_knows() -> None:
    # rulesets.options knows the arities of these modules' options; the simulator evaluates each
    from ruletrace.rulesets.options import IP_OPTS, KNOWN_MODULES
    from ruletrace.simulate.matches import IP_MATCHES, MODULES

    assert set(MODULES) == set(KNOWN_MODULES)
    assert set(IP_MATCHES) == set(IP_OPTS.values())
