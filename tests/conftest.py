"""Shared fixtures. Policy: a test that needs MNIST, the shipped network or a
browser may skip on a developer's machine without them, but under CI
(``CI=true``) a missing one is a failure, never a silent skip."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import nn, plots, train from the checkout

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition, reason):
    """Skip (or, under CI, fail) the calling test when ``condition`` is false."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)


def mnist_path():
    """Where the tests look for MNIST: where the app and train.py do ($MNIST_DATA, else
    data/mnist in the repository), so a newcomer who pressed the app's Download
    button runs the data tests too."""
    from nn.data import resolve_data_dir

    return resolve_data_dir()


@pytest.fixture(scope="session")
def mnist_dir():
    from nn.data import mnist_available

    path = mnist_path()
    require(mnist_available(path), f"MNIST not found in {path} (set MNIST_DATA)")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """((X_train, y_train), (X_test, y_test)), read-only arrays."""
    from nn.data import load_mnist

    return load_mnist(mnist_dir, download=False)


DEFAULT_MODEL = ROOT / "weights" / "default.npz"


@pytest.fixture(scope="session")
def default_model():
    import nn

    require(DEFAULT_MODEL.exists(), f"{DEFAULT_MODEL} not found (run python train.py)")
    return nn.load(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path, "Chromium not installed (apt-get install chromium)")
    return path
