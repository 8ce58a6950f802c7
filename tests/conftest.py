"""Pytest configuration: put ``code/`` on the import path.

The repository's scripts run as ``python code/<script>.py`` from the root, so
their imports are ``from networks...``, ``from utils...``, ``from dataloaders...``.
"""
from __future__ import annotations
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.join(ROOT, "code")
if CODE not in sys.path:
    sys.path.insert(0, CODE)

# ../shared/reference beside the checkout holds the reference facts (optional).
SHARED_REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference")

import pytest  # noqa: E402  (after the path set-up above)
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (the README's command): one core per worker, so one thread per worker and per
    # script it starts (two threads per worker on two cores spin-wait each other far slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` first, longest first (``@pytest.mark.long(seconds)``, 5 s if not
    given), so that a parallel run (``-n 2``) does not end with one worker on a long test and
    the other idle."""
    def seconds(item) -> float:
        mark = item.get_closest_marker("long")
        return 0.0 if mark is None else float(mark.args[0]) if mark.args else 5.0

    items.sort(key=lambda item: -seconds(item))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``tiny_data("la" | "acdc", **generator_kwargs) -> folder``: synthetic data made once per
    session for each set of arguments (``dataloaders.synthetic.make_la`` / ``make_acdc``)."""
    from dataloaders.synthetic import make_acdc, make_la

    made = {}

    def make(kind, **kwargs):
        key = (kind, tuple(sorted(kwargs.items())))
        if key not in made:
            root = tmp_path_factory.mktemp(kind)
            (make_la if kind == "la" else make_acdc)(str(root), **kwargs)
            made[key] = str(root)
        return made[key]

    return make


@pytest.fixture(scope="module")
def la_root(tiny_data):
    """The tiny LA data most training tests use (5 cases of 40x40x24); a test module may define its own."""
    return tiny_data("la", cases=5, seed=3, size=(40, 40, 24))


@pytest.fixture(scope="module")
def acdc_root(tiny_data):
    """The tiny ACDC data most training tests use (5 patients, 48-64 pixels, 3-4 slices)."""
    return tiny_data("acdc", patients=5, seed=3, hw_range=(48, 64), slice_range=(3, 4))


@pytest.fixture(scope="module")
def compare():
    """``scripts/compare_released.py`` as a module (the released-code comparison tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_released",
                                                  os.path.join(ROOT, "scripts", "compare_released.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
