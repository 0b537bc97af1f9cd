"""Layering: every product module imports on its own, the module import graph has no circle, and
the bottom floor (components/) imports nothing from the top (pipeline/)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("components", "data", "pipeline", "serving")
# Modules that do work when imported, by design: the Airflow DAG file loads TLPIPE_CONFIG.
NOT_IMPORTABLE_ALONE = {"tlpipe.pipeline.airflow_dag"}


def product_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules["tlpipe." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Product modules `name` imports anywhere in its body (lazy imports inside functions too:
    a circle through them is still a circle a reader has to untangle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package):
    circles = [c for c in cycles(_graph()) if c[0].split(".")[1] == package]
    assert not circles, circles


def test_components_import_nothing_from_pipeline():
    upward = {f"{name} -> {target}" for name, targets in _graph().items() if name.startswith("tlpipe.components.")
              for target in targets if target.startswith("tlpipe.pipeline.")}
    assert not upward, sorted(upward)


def test_every_module_imports_on_its_own():
    """Each module imported with every product module forgotten first (third-party ones stay
    loaded, which keeps this to seconds): a module that works only after another was imported,
    or inside a circle, fails here. Runs in this process (a child would import TensorFlow, TFX
    and Beam again: ~13 CPU s); the test's own product modules are put back afterwards."""
    names = sorted(set(product_modules()) - NOT_IMPORTABLE_ALONE)
    ours = {name: module for name, module in sys.modules.items() if name.startswith("tlpipe.")}
    failed = []
    try:
        for name in names:
            _forget_product_modules()
            try:
                importlib.import_module(name)
            except Exception as err:
                failed.append(f"{name}: {type(err).__name__}: {err}")
    finally:
        _forget_product_modules()
        sys.modules.update(ours)
        for name, module in ours.items():  # `import a.b` binds b on a: rebind the originals
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)
    assert failed == []


def _forget_product_modules() -> None:
    for loaded in [name for name in sys.modules if name.startswith("tlpipe.")]:
        del sys.modules[loaded]


def test_installed_under_one_namespace(tmp_path):
    """The design's folders install as tlpipe.pipeline, tlpipe.components...: outside the
    checkout, no generic top-level `pipeline`, `components`, `data` or `serving` is importable."""
    program = ("import importlib.util as u; print(sorted(n for n in ('pipeline', 'components', 'data', "
               "'serving') if u.find_spec(n)), all(u.find_spec(f'tlpipe.{n}') for n in ('pipeline', "
               "'components', 'data', 'serving')))")
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.stdout.split() == ["[]", "True"], proc.stdout + proc.stderr


def test_every_error_of_components_pipeline_and_data_is_a_tlpipe_error():
    """One base (components/errors.py), so `tlpipe` reports any of them as one line from one place.
    serving/ keeps TF Serving's own status errors: it is a standalone server. Read from the
    source (class name -> base names), so no module is imported."""
    import builtins

    bases: dict[str, list[str]] = {}
    for name, path in product_modules().items():
        if not name.startswith("tlpipe.serving"):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = [ast.unparse(b).rpartition(".")[2] for b in node.bases]

    def is_exception(cls: str) -> bool:
        builtin = getattr(builtins, cls, None)
        if isinstance(builtin, type):
            return issubclass(builtin, BaseException)
        return any(is_exception(b) for b in bases.get(cls, []))

    def is_tlpipe_error(cls: str) -> bool:
        return cls == "TlpipeError" or any(is_tlpipe_error(b) for b in bases.get(cls, []))

    strays = sorted(c for c in bases if is_exception(c) and not is_tlpipe_error(c))
    assert "DatasetError" not in strays and "ConfigError" in bases  # the walk sees real classes
    assert not strays, f"exceptions outside the TlpipeError family: {strays}"
