"""Digit Lab's neural network engine: dense and convolutional networks written
from scratch in NumPy, small enough to read end to end.

    import nn
    data = nn.data.load_mnist()                       # ((X_train, y_train), (X_test, y_test))
    model = nn.train(nn.Recipe(conv=(8, 16), hidden=(64,), epochs=3), data)
    model.metrics["accuracy"]                         # evaluated on the test set
    nn.save(model, "weights/mine.npz")
    model = nn.load("weights/mine.npz")
    model.predict_proba(X)                            # X (n, 784) in [0, 1] -> (n, 10)

Lower down, the same pieces PyTorch users know:

    net = nn.Network(nn.cnn_spec(conv=(8, 16), kernel=5, hidden=(64,)), seed=0)
    nn.fit(net, X_train, y_train, optimizer="momentum", lr=0.05, epochs=3)

Modules, one concept each: ``layers`` (Dense, Dropout, Flatten), ``conv``
(Conv2D, MaxPool2D), ``activations``, ``losses`` (softmax + cross-entropy),
``architecture`` (specs: layer lists as plain data), ``network``, ``optim``
(SGD, Adam, schedules), ``recipe`` (every hyperparameter, once), ``augment``,
``training`` (train, fit, callbacks), ``finetune``, ``metrics``,
``serialize`` (save/load), ``speed`` (the speed tricks, in one place),
``data`` (MNIST), ``preprocess`` (drawings and photos -> 28x28).
The package computes and returns; it never prints or draws.
"""

from . import (activations, architecture, augment, conv, layers, losses, metrics, optim, recipe,
               serialize, speed, training)
from .activations import ACTIVATIONS, LeakyReLU, ReLU, Sigmoid, Tanh
from .architecture import cnn_spec, mlp_spec
from .augment import Augmenter
from .conv import Conv2D, MaxPool2D
from .finetune import fine_tune
from .layers import Dense, Dropout, Flatten, Layer, Parameter
from .losses import SoftmaxCrossEntropy, softmax
from .network import Network
from .optim import OPTIMIZERS, SCHEDULES, SGD, Adam, Optimizer, make_optimizer
from .recipe import Recipe
from .serialize import ModelFileError, load, save
from .training import Callback, TrainingDiverged, fit, train


def __getattr__(name):
    # ``data`` and ``preprocess`` are imported on first use: the app's canvas
    # path needs neither gzip nor the MNIST loader to start.
    if name in ("data", "preprocess"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nn' has no attribute {name!r}")


__all__ = ["Network", "Layer", "Dense", "Dropout", "Flatten", "Conv2D", "MaxPool2D", "Parameter",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "ACTIVATIONS", "SoftmaxCrossEntropy", "softmax",
           "mlp_spec", "cnn_spec", "Recipe", "Augmenter", "SGD", "Adam", "Optimizer",
           "make_optimizer", "OPTIMIZERS", "SCHEDULES", "train", "fit", "fine_tune", "Callback",
           "TrainingDiverged", "load", "save", "ModelFileError", "activations", "architecture",
           "augment", "conv", "layers", "losses", "metrics", "optim", "recipe", "serialize",
           "speed", "training"]
