"""Digit Lab's neural network engine: a multi-layer perceptron written from
scratch in NumPy, small enough to read end to end.

    import nn
    (X_train, y_train), (X_test, y_test) = nn.data.load_mnist()
    model = nn.Network(hidden=(128, 64), activation="relu", seed=0)
    history = nn.fit(model, X_train, y_train, optimizer="adam", lr=1e-3, epochs=5)
    model.metrics = model.evaluate(X_test, y_test)   # stored in the file by save()
    model.save("weights/mine.npz")
    model = nn.load("weights/mine.npz")

Modules, one concept each: ``activations``, ``layers`` (Dense, Dropout),
``losses`` (softmax + cross-entropy), ``network``, ``optim`` (SGD, Adam,
schedules), ``training`` (fit, callbacks), ``metrics``, ``serialize``
(save/load), ``data`` (MNIST), ``preprocess`` (drawings -> 28x28).
The package computes and returns; it never prints or draws.
"""

from . import activations, layers, losses, metrics, optim, serialize, training
from .activations import ACTIVATIONS, LeakyReLU, ReLU, Sigmoid, Tanh
from .layers import Dense, Dropout, Parameter
from .losses import SoftmaxCrossEntropy, softmax
from .network import Network
from .optim import SGD, Adam, OPTIMIZERS, SCHEDULES, make_optimizer
from .serialize import ModelFileError, load, save
from .training import Callback, TrainingDiverged, fit


def __getattr__(name):
    # ``data`` and ``preprocess`` are imported on first use: the app's canvas
    # path needs neither gzip nor the MNIST loader to start.
    if name in ("data", "preprocess"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nn' has no attribute {name!r}")


__all__ = ["Network", "Dense", "Dropout", "Parameter", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "ACTIVATIONS", "SoftmaxCrossEntropy", "softmax", "SGD", "Adam", "make_optimizer",
           "OPTIMIZERS", "SCHEDULES", "fit", "Callback", "TrainingDiverged", "load", "save",
           "ModelFileError", "metrics", "activations", "layers", "losses", "optim",
           "serialize", "training"]
