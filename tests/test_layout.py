"""The package's shape: what ``import fused_sigreg`` loads, and no import cycles between its modules."""

import ast
import pathlib
import re
import subprocess
import sys

import fused_sigreg

PACKAGE = pathlib.Path(fused_sigreg.__file__).parent


def test_import_loads_no_triton_matplotlib_tools_or_adapters():
    code = (
        "import sys, fused_sigreg\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('triton', 'matplotlib')"
        " or m.startswith(('fused_sigreg.tools', 'fused_sigreg.kernels', 'fused_sigreg.compat')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"`import fused_sigreg` imported {out.stdout.strip()}"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set) -> set:
    """The package's modules that ``path`` imports anywhere in its body (function-local imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _modules() -> set:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")} | {"fused_sigreg._C"}  # _C: the compiled extension


def test_no_import_cycles_between_package_modules():
    paths = list(PACKAGE.rglob("*.py"))
    modules = _modules()
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    graph["fused_sigreg._C"] = set()
    assert graph["fused_sigreg.tools.cli"], "the import graph was not read"  # cli imports other tools

    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep) :] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_library_modules_never_import_tools():
    modules = _modules()
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("fused_sigreg.tools") or name == "fused_sigreg.__main__":
            continue
        assert not {m for m in _imports(path, modules) if m.startswith("fused_sigreg.tools")}, name


README_MAX_LINES = 200


def test_readme_stays_short_and_its_pointers_resolve():
    """README is the front page (<= 200 lines); detail lives in docs/, and every file it points to exists."""
    root = PACKAGE.parent
    text = (root / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is over 200 lines: move the detail to docs/"
    pointed = set(re.findall(r"`((?:docs|fused_sigreg|tests|benchmarks|kernels|csrc)/[\w/.]+)`", text))
    assert {"docs/usage.md", "docs/compat.md", "docs/development.md", "docs/results.md"} <= pointed
    missing = sorted(p for p in pointed if not (root / p.rstrip("/")).exists())
    assert not missing, f"README points to files that do not exist: {missing}"
