"""The nn package stays what it promises: NumPy only (Pillow for images), no UI,
no deep-learning framework, no printing."""

import ast
import subprocess
import sys

from conftest import ROOT

NN = ROOT / "nn"
SOURCES = sorted(NN.glob("*.py"))
FORBIDDEN = {"streamlit", "matplotlib", "torch", "tensorflow", "jax", "sklearn", "keras"}


def test_importing_every_nn_module_pulls_in_no_ui_or_framework():
    modules = [f"nn.{p.stem}" for p in sorted(NN.glob("*.py")) if p.stem != "__init__"]
    assert len(modules) >= 10
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = {sorted(FORBIDDEN)!r}\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in bad)\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT))


def test_nn_never_prints():
    assert SOURCES
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path.name} calls print() on line {calls[0].lineno}"


def test_every_public_nn_function_has_a_docstring():
    missing = []
    assert SOURCES
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{path.name}:{node.name}")
    assert not missing, missing
