"""Optimizers, in order of increasing complexity: SGD (plain, momentum, Nesterov)
and Adam, plus learning-rate schedules.

They follow PyTorch's shape and semantics, so what a learner reads here
transfers:

    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    ... model.backward(...)   # fills every parameter's .grad
    opt.step()                # updates every parameter's .value in place

The base class owns the parameter list, the step counter and the L2 weight
decay (``l2``); a subclass only supplies ``_update(param, grad, state)``.
Optimizer state that decays towards zero is flushed before it becomes slow
subnormal numbers (``nn.speed.flush_subnormals``).
"""

import math

import numpy as np

from . import speed

__all__ = ["Optimizer", "SGD", "Adam", "make_optimizer", "OPTIMIZERS",
           "lr_at_epoch", "SCHEDULES"]


def _check(name, value, low, high, low_open=False, high_open=False):
    """Raise ValueError naming the parameter and its allowed range."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")
    return value


class Optimizer:
    """Base class: holds parameters, the learning rate, weight decay and per-parameter state.

    ``l2`` is L2 regularisation ("weight decay"): it adds ``l2 * w`` to the
    gradient of each weight array (not of biases), i.e. the loss gains
    ``l2 / 2 * ||W||^2``.
    """

    def __init__(self, params, lr, l2=0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.lr = _check("lr", lr, 0, 10, low_open=True)
        self.l2 = _check("l2", l2, 0, 1)
        self.steps = 0
        self.state = [self._init_state(p) for p in self.params]

    def _init_state(self, param):
        return {}

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0

    def step(self):
        """Apply one update to every parameter from its current ``.grad``."""
        self.steps += 1
        for p, state in zip(self.params, self.state):
            grad = p.grad
            if self.l2 and p.decay:
                grad += self.l2 * p.value
            self._update(p.value, grad, state)
        speed.flush_subnormals((a for s in self.state for a in s.values()
                                if isinstance(a, np.ndarray)), self.steps)

    def _update(self, value, grad, state):
        raise NotImplementedError

    def hyperparams(self):
        """The settings as a JSON-friendly dict (stored in the model file)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    PyTorch's formulation:  v = momentum * v + g;  w -= lr * v, or with
    Nesterov  w -= lr * (g + momentum * v), which looks one step ahead.
    """

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, l2=0.0):
        self.momentum = _check("momentum", momentum, 0, 1, high_open=True)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum in (0, 1)")
        self.nesterov = bool(nesterov)
        super().__init__(params, lr, l2)

    def _init_state(self, param):
        return {"velocity": np.zeros_like(param.value)} if self.momentum else {}

    def _update(self, value, grad, state):
        if not self.momentum:
            value -= self.lr * grad
            return
        v = state["velocity"]
        v *= self.momentum
        v += grad
        if self.nesterov:
            grad += self.momentum * v
            value -= self.lr * grad
        else:
            value -= self.lr * v

    def hyperparams(self):
        name = "sgd" if not self.momentum else "momentum"
        return {"optimizer": name, "lr": self.lr, "momentum": self.momentum,
                "nesterov": self.nesterov, "l2": self.l2}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): momentum on the gradient (m) and a per-weight
    step size from the running mean of its square (v), both bias-corrected
    because they start at zero:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        w -= lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
    """

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, l2=0.0):
        self.beta1 = _check("beta1", betas[0], 0, 1, high_open=True)
        self.beta2 = _check("beta2", betas[1], 0, 1, high_open=True)
        self.eps = _check("eps", eps, 0, 1, low_open=True)
        super().__init__(params, lr, l2)

    def _init_state(self, param):
        return {"m": np.zeros_like(param.value), "v": np.zeros_like(param.value),
                "scratch": np.zeros_like(param.value)}

    def _update(self, value, grad, state):
        m, v, tmp = state["m"], state["v"], state["scratch"]
        t = self.steps
        m *= self.beta1
        np.multiply(grad, 1 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        # Fold both bias corrections into the step size and eps (same result,
        # fewer passes over the arrays):  lr * m_hat / (sqrt(v_hat) + eps)
        #   = step * m / (sqrt(v) + eps * sqrt(1 - b2^t)),  step = lr * sqrt(1 - b2^t) / (1 - b1^t)
        c2 = math.sqrt(1 - self.beta2 ** t)
        step = self.lr * c2 / (1 - self.beta1 ** t)
        np.sqrt(v, out=tmp)
        tmp += self.eps * c2
        np.divide(m, tmp, out=tmp)
        tmp *= step
        value -= tmp

    def hyperparams(self):
        return {"optimizer": "adam", "lr": self.lr, "betas": [self.beta1, self.beta2],
                "eps": self.eps, "l2": self.l2}


OPTIMIZERS = ("sgd", "momentum", "adam")


def make_optimizer(name, params, lr, momentum=0.9, nesterov=False, l2=0.0):
    """Build an optimizer by the name the CLI and the app use.

    ``"sgd"`` is plain SGD, ``"momentum"`` SGD with ``momentum`` (and optional
    Nesterov), ``"adam"`` Adam with PyTorch's default betas.
    """
    if name == "sgd":
        if nesterov:
            raise ValueError("nesterov needs the 'momentum' optimizer")
        return SGD(params, lr=lr, l2=l2)
    if name == "momentum":
        if not 0 < float(momentum) < 1:
            raise ValueError(f"momentum must be in (0, 1) for the 'momentum' optimizer, got {momentum}")
        return SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, l2=l2)
    if name == "adam":
        return Adam(params, lr=lr, l2=l2)
    raise ValueError(f"optimizer: unknown {name!r}; choose one of {', '.join(OPTIMIZERS)}")


SCHEDULES = ("none", "step", "cosine")


def lr_at_epoch(schedule, base_lr, epoch, epochs, step_size=None, gamma=0.5, min_factor=0.01):
    """Learning rate for ``epoch`` (0-based) out of ``epochs``.

    ``"none"``: constant. ``"step"``: multiplied by ``gamma`` every ``step_size``
    epochs (default: a third of the run). ``"cosine"``: follows half a cosine
    from ``base_lr`` down to ``min_factor * base_lr`` at the last epoch, a
    schedule that usually gains a few tenths of a percent at the end.
    """
    if schedule in (None, "none"):
        return base_lr
    if schedule == "step":
        step_size = step_size or max(1, epochs // 3)
        return base_lr * gamma ** (epoch // step_size)
    if schedule == "cosine":
        if epochs <= 1:
            return base_lr
        progress = epoch / (epochs - 1)
        factor = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return base_lr * factor
    raise ValueError(f"schedule: unknown {schedule!r}; choose one of {', '.join(SCHEDULES)}")
