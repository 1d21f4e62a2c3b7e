"""The package layout: imports run one way (no cycle between modules or packages, and the layers named in
the README hold), every package is installed, and the kernel never appears as a top-level ``kernels``
module (the import name of Hugging Face's kernel hub package)."""

import ast
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

SRC = ROOT / "src"
KERNEL_DIR = ROOT / "kernels" / "count_sketch"


def module_files() -> dict[str, Path]:
    """congrad's modules -> their files (the kernel is congrad.kernels, from kernels/count_sketch/)."""
    files = {}
    for path in (SRC / "congrad").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in KERNEL_DIR.glob("*.py"):
        name = "congrad.kernels" if path.stem == "__init__" else f"congrad.kernels.{path.stem}"
        files[name] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """congrad modules that ``name`` imports anywhere in its file (function-local imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def unit(module: str) -> str:
    """The package a module belongs to (``congrad.filtering.sketching`` -> ``congrad.filtering``); modules
    directly in ``congrad`` (``congrad.training``, ``congrad.run``, ...) are units of their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_finds_real_imports():
    edges = graph()
    assert "congrad.filtering.surgery" in edges["congrad.filtering.method"]
    assert "congrad.kernels" in edges["congrad.filtering.sketching"]
    assert "congrad.kernels.hashing" in edges["congrad.kernels.reference"]  # a relative import
    assert "congrad.models.factory" in edges["congrad.generation.sampling"]  # a function-local import
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules_or_packages():
    edges = graph()
    assert find_cycle(edges) is None
    packages = defaultdict(set)
    for module, targets in edges.items():
        packages[unit(module)] |= {unit(t) for t in targets if unit(t) != unit(module)}
    assert find_cycle(packages) is None, packages


LOWER_LAYERS = {
    # a package may import only these packages of congrad (the README's "Layout" draws the same picture)
    "congrad.errors": set(),
    "congrad.utils": {"congrad.errors"},
    "congrad.kernels": set(),
    "congrad.data": {"congrad.errors", "congrad.utils"},
    "congrad.models": {"congrad.errors", "congrad.utils", "congrad.data"},
    "congrad.training": {"congrad.errors", "congrad.utils", "congrad.models"},
    "congrad.generation": {"congrad.errors", "congrad.utils", "congrad.data", "congrad.models"},
    "congrad.judging": {"congrad.errors", "congrad.utils", "congrad.data", "congrad.generation"},
    "congrad.evaluation": {
        "congrad.errors",
        "congrad.utils",
        "congrad.data",
        "congrad.models",
        "congrad.generation",
        "congrad.judging",
    },
    # the settings check composes the schemas declared beside the code that reads them; only entry points import it
    "congrad.settings": {
        "congrad.errors",
        "congrad.utils",
        "congrad.data",
        "congrad.models",
        "congrad.filtering",
        "congrad.kernels",
        "congrad.judging",
        "congrad.evaluation",
        "congrad.selfreward",
        "congrad.training",
    },
}


@pytest.mark.parametrize("package", sorted(LOWER_LAYERS))
def test_layers(package):
    edges = graph()
    used = {unit(t) for m, targets in edges.items() if unit(m) == package for t in targets} - {package}
    assert used <= LOWER_LAYERS[package], f"{package} imports {sorted(used - LOWER_LAYERS[package])}"


COMMANDS = {"congrad.plan"}  # `python -m` entry points inside the package: they check settings as the others do


def test_nothing_in_the_library_imports_the_settings_check():
    edges = graph()
    assert not {m for m, targets in edges.items() if "congrad.settings" in targets} - COMMANDS


def test_the_fit_knows_nothing_of_the_self_rewarding_loop():
    edges = graph()
    assert not {t for t in edges["congrad.training"] if t.startswith("congrad.selfreward")}


def test_every_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert set(config["packages"]) == on_disk
    assert config["package-dir"]["congrad.kernels"] == "kernels/count_sketch"


def test_the_installed_project_has_no_top_level_kernels():
    top_level = metadata.distribution("congrad").read_text("top_level.txt").split()
    assert top_level == ["congrad"]
    assert not (ROOT / "kernels" / "__init__.py").exists(), "kernels/ must not be a package of its own"


def test_a_kernels_package_installed_beside_congrad_keeps_its_name(tmp_path):
    """Run from the repository root, where ``python train.py`` puts the root first on sys.path: ``import
    kernels`` finds a ``kernels`` package installed elsewhere (here a stand-in for Hugging Face's), and
    congrad's own kernel still works as ``congrad.kernels``. Without one, ``import kernels`` finds nothing
    of ours (at most an empty namespace: the folder has no ``__init__.py``)."""
    stand_in = tmp_path / "site" / "kernels"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("STAND_IN = True\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})  # what `python train.py` does
        import torch
        import kernels
        from congrad import count_sketch
        print(getattr(kernels, "STAND_IN", False), hasattr(kernels, "count_sketch"),
              count_sketch(torch.ones(8), 256, 0).shape[0])
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    with_stand_in = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert with_stand_in.stdout.split() == ["True", "False", "256"], with_stand_in.stderr[-2000:]
    env.pop("PYTHONPATH")
    alone = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert alone.stdout.split() == ["False", "False", "256"], alone.stderr[-2000:]
