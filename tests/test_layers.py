"""The package structure: every import under code/ points down the layers, and each copy-ready
file of code/utils/ imports alone, from an empty folder.

Layers, top to bottom: the scripts (code/*.py) -> engine -> methods -> datasets (the dataset
descriptions) -> networks | utils | dataloaders (the bottom three import only themselves and
third-party packages)."""
from __future__ import annotations
import ast
import os
import shutil
import subprocess
import sys

import pytest

CODE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "code")
#: top to bottom; a module may import its own package and any package of a LOWER rank
RANK = {"scripts": 4, "engine": 3, "methods": 2, "datasets": 1, "networks": 0, "utils": 0, "dataloaders": 0}
PROJECT = set(RANK) - {"scripts"}
COPY_READY = ("losses.py", "vat.py", "separation.py", "ramps.py", "metrics.py", "statistics.py")


def _package(path):
    rel = os.path.relpath(path, CODE)
    return rel.split(os.sep)[0] if os.sep in rel else "scripts"


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _modules():
    for folder, _, files in os.walk(CODE):
        if "__pycache__" in folder:
            continue
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def test_every_import_points_down():
    wrong = []
    for path in _modules():
        own = _package(path)
        for line, target in _imports(path):
            if target not in PROJECT or target == own:
                continue
            if RANK[target] >= RANK[own]:
                wrong.append(f"{os.path.relpath(path, CODE)}:{line} ({own}) imports {target}")
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walk itself: a methods module importing the engine is caught."""
    bad = tmp_path / "methods"
    bad.mkdir()
    (bad / "x.py").write_text("from engine.trainer import Trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "CODE", str(tmp_path))
    with pytest.raises(AssertionError, match="methods/x.py:1 \\(methods\\) imports engine"):
        test_every_import_points_down()


@pytest.mark.parametrize("name", COPY_READY)
def test_copy_ready_file_imports_alone(tmp_path, name):
    shutil.copy(os.path.join(CODE, "utils", name), tmp_path / name)
    module = name[:-3]
    out = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.__name__)"], cwd=tmp_path,
                         capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
