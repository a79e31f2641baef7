"""`env/` imports form no cycle, and its grammar loads without the browser (no gymnasium).

The walk reads every `import` in env/ with `ast`, including those inside functions and under
TYPE_CHECKING: a lazy import still ties two modules together. Importing `env.a.b` also runs the
packages above it, except the packages the importer already lives in (they are loading anyway).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every module name an `import` or `from ... import` in the tree may load."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # submodules named
    return out


def env_import_graph() -> dict[str, set[str]]:
    """Module -> env modules it imports (and the packages those run on the way)."""
    files = {_module_name(p): p for p in (ROOT / "env").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = name.split(".")
        mine = {".".join(own[:i]) for i in range(1, len(own) + (path.name == "__init__.py"))}
        edges = set()
        for target in _imported(tree, name, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in files and step not in mine and step != name:
                    edges.add(step)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_lazy_and_package_imports():
    graph = env_import_graph()
    assert "env.sources.zim" in graph["env.sources"]  # imported inside open_source
    assert "env.browser" in graph["env"]  # imported inside the lazy __getattr__
    assert "env.sources" not in graph["env.sources.zim"]  # its own package is not an edge


def test_env_has_no_import_cycle():
    assert find_cycle(env_import_graph()) is None


def test_commands_import_without_gymnasium():
    code = (
        "import sys, env.commands, env.observation, env.pages\n"
        "assert 'gymnasium' not in sys.modules, 'gymnasium imported'\n"
        "assert 'env.browser' not in sys.modules, 'env.browser imported'\n"
        "from env import BrowserEnv\n"
        "assert 'gymnasium' in sys.modules\n"
        "print(BrowserEnv.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "BrowserEnv"
