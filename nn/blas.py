"""BLAS threads during training: the one place where the engine trades some
clarity for speed.

NumPy hands every ``@`` to its BLAS (OpenBLAS), which splits each product
over all cores. During training on a small machine that is often slower than
one thread, for three measured reasons (2-core machine, see
``benchmarks/README.md``):

* waking the helper thread for a small product costs more than it saves;
* a helper thread that read a weight matrix in the forward pass leaves it in
  its core's cache, and the optimizer, writing that matrix on the other core,
  must first take it back: about 0.1 ms per step for 784x128 weights, as much
  as the second thread saved in the product at batch 128;
* a helper thread left spinning, waiting for the next product, was seen to
  slow the element-wise NumPy code (ReLU, loss, optimizer) beside it.

So ``training_threads(work)``, which ``fit`` enters, keeps all threads when a
step is big (``work`` = batch size x parameters of at least
``PARALLEL_MIN_STEP_MACS``: batch 512 or wide layers) and otherwise runs
BLAS on one thread, except for large weight-gradient products
``dW = X^T dY``: they only write a gradient, so they get every thread and
then go straight back to one. A ``fit`` epoch of 784-128-64-10 (SGD +
momentum) took 0.61 / 0.60 s at batch 32 and 0.35 / 0.33 s at batch 128
without / with that exception (two threads throughout: 0.76 and 0.36 s).

Outside ``training_threads`` ``matmul`` is plain ``np.matmul``, and so it is
everywhere when the optional ``threadpoolctl`` package is missing.
"""

import threading
from contextlib import contextmanager

import numpy as np

__all__ = ["matmul", "training_threads", "PARALLEL_MIN_STEP_MACS", "PARALLEL_MIN_GRADIENT_MACS"]

#: A training step at least this big (batch size x parameters) keeps every BLAS thread.
PARALLEL_MIN_STEP_MACS = 2e7
#: Below that, a weight-gradient product of at least this many multiply-adds still gets them.
PARALLEL_MIN_GRADIENT_MACS = 2e6

_lock = threading.Lock()
_state = {"users": 0, "libs": [], "max": 1}  # users: fits in the one-thread mode right now


def _set_threads(n):
    for lib in _state["libs"]:
        lib.set_num_threads(n)


def matmul(a, b, out=None, *, weight_gradient=False):
    """``np.matmul(a, b, out=out)``. Pass ``weight_gradient=True`` for ``dW = X^T dY``."""
    if (weight_gradient and _state["users"] and _state["max"] > 1
            and a.size * b.shape[-1] >= PARALLEL_MIN_GRADIENT_MACS):
        _set_threads(_state["max"])
        try:
            return np.matmul(a, b, out=out)
        finally:
            _set_threads(1)  # also sends the helper threads to sleep
    return np.matmul(a, b, out=out)


@contextmanager
def training_threads(work):
    """BLAS threads for training steps of ``work`` = batch size x parameters (see above).

    Never uses more threads than were allowed on entry (``threadpool_limits``,
    ``OPENBLAS_NUM_THREADS``) and restores that number on exit. Safe to nest
    and to enter from several threads (the count is per process).
    """
    if work >= PARALLEL_MIN_STEP_MACS:
        yield
        return
    with _lock:
        if _state["users"] == 0:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                libs = []
            else:
                libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _state.update(libs=libs, max=min([lib.num_threads or 1 for lib in libs] or [1]))
            _set_threads(1)
        _state["users"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                _set_threads(_state["max"])
