"""Speed tricks: the one place where the engine trades a little clarity for speed.

Everything else in ``nn`` is written the plain way. Each trick here says why it
exists and what it measured, and each can be switched off (``ENABLED``), so
``python benchmarks/bench.py --ablation`` re-measures what it is worth on the
machine at hand (results in ``benchmarks/results/latest.json``, figures quoted
below from a 2-vCPU Xeon, NumPy 2.4 with OpenBLAS, unless they say otherwise).

1. **BLAS threads sized per product** (``training_threads``, ``matmul``). On a
   2-core machine OpenBLAS splitting every small product over both cores is
   slower than one thread: waking the helper thread costs more than it saves,
   and a weight matrix read on one core and updated by the optimizer on the
   other must travel between their caches. So during training small steps run
   BLAS on one thread, except the weight-gradient products ``dW = X^T dY``,
   which only write a gradient and get every thread; steps of at least
   ``PARALLEL_MIN_STEP_MACS`` multiply-adds (batch size x the network's
   multiply-adds per image: 784-128-64-10 from batch 64 on, wide layers, any
   convolutional network) keep all threads throughout. On a 2-core AMD EPYC the
   ablation found the opposite at batch 32 (one thread 16% slower; no
   difference from batch 128 on, nor for the CNN). The threshold is left as
   measured on the Xeon.

2. **Flushing tiny optimizer state** (``flush_subnormals``). When a ReLU unit
   stops receiving gradient its momentum decays geometrically and after a few
   hundred steps becomes a float32 *subnormal* number, which the CPU handles
   about 40x slower; at batch 32 that alone made an epoch 3-4x slower. Every
   ``FLUSH_EVERY`` steps, state below ``FLUSH_BELOW`` (far below anything that
   could move a weight) is set to zero, before it can reach the subnormal range.

3. **Keeping freed memory** (``keep_freed_memory``). A training step allocates
   and frees the same large arrays again and again (a batch's activations, the
   convolutions' im2col matrices). glibc's malloc serves big requests with fresh
   ``mmap`` pages and hands them back on ``free``, or trims the top of its heap
   once enough lies free there, so the next step takes page faults and zero-fills
   every page anew. Raising glibc's mmap and trim thresholds (``mallopt``, to
   ``KEEP_MEMORY_BYTES``) keeps that memory in the process for reuse:
   allocating and freeing a few 4 MB arrays 40 times took 77,000 page faults
   with glibc's own settings and under 1,000 with these. Measured in separate
   processes (glibc untouched in one), small-CNN epochs ran about 7% faster and
   the shipped CNN's about 8%; augmenting a batch of 128 in a fresh process went
   from 3.9 to 1.3 ms (once a large array has been freed, glibc's adaptive
   threshold does part of this by itself). The price is that the process keeps up to that much freed memory
   instead of returning it. Only with glibc; elsewhere a no-op.

Tried and dropped: keeping each layer's output and scratch arrays between
training steps instead of allocating fresh ones (0.95-1.00x in the ablation on
an AMD EPYC; NumPy's allocator already recycles them), and an ``inplace``
flag threaded through every forward.

Outside ``training_threads`` ``matmul`` is plain ``np.matmul``, and so it is
everywhere when the optional ``threadpoolctl`` package is missing.

A server with many visitors is another matter: ``limit_blas_threads(1)``
makes every product single-threaded for the whole process. OpenBLAS threads
wait for work by spinning, so several products running at once (two
trainings, a dozen sessions drawing) each wanting both cores fight over them:
a small CNN's training step was seen to take 200 times longer while other
processes kept the cores busy. There, parallelism comes from the sessions.
"""

import threading
from contextlib import contextmanager

import numpy as np

__all__ = ["ENABLED", "limit_blas_threads", "matmul", "training_threads", "flush_subnormals",
           "keep_freed_memory", "PARALLEL_MIN_STEP_MACS", "PARALLEL_MIN_GRADIENT_MACS",
           "FLUSH_EVERY", "FLUSH_BELOW", "KEEP_MEMORY_BYTES"]

#: Switches for the ablation benchmark; all on in normal use.
ENABLED = {"blas_threads": True, "flush_subnormals": True, "keep_freed_memory": True}

# -- 1. BLAS threads -----------------------------------------------------------------------

#: A training step at least this big (batch size x multiply-adds per image) keeps every BLAS thread.
PARALLEL_MIN_STEP_MACS = 5e6
#: Below that, a weight-gradient product of at least this many multiply-adds still gets them.
PARALLEL_MIN_GRADIENT_MACS = 2e6

_lock = threading.Lock()
_state = {"users": 0, "libs": [], "max": 1}  # users: trainings in the one-thread mode now


def _set_threads(n):
    for lib in _state["libs"]:
        lib.set_num_threads(n)


def matmul(a, b, out=None, *, weight_gradient=False):
    """``np.matmul(a, b, out=out)``; pass ``weight_gradient=True`` for ``dW = X^T dY``."""
    if (weight_gradient and _state["users"] and _state["max"] > 1
            and a.shape[0] * a.shape[-1] * b.shape[-1] >= PARALLEL_MIN_GRADIENT_MACS):
        _set_threads(_state["max"])
        try:
            return np.matmul(a, b, out=out)
        finally:
            _set_threads(1)  # also sends the helper threads back to sleep
    return np.matmul(a, b, out=out)


@contextmanager
def training_threads(work):
    """BLAS threads for training steps of ``work`` = batch size x multiply-adds per image.

    Never uses more threads than were allowed on entry (``threadpool_limits``,
    ``OPENBLAS_NUM_THREADS``) and restores that number on exit. Safe to nest
    and to enter from several threads (the count is per process).
    """
    if work >= PARALLEL_MIN_STEP_MACS or not ENABLED["blas_threads"]:
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


def limit_blas_threads(n):
    """Let BLAS use at most ``n`` threads in this whole process, from now on (a
    shared server: see the module docstring). Returns False without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=n, user_api="blas")
    return True


# -- 2. subnormal flushing -----------------------------------------------------------------

FLUSH_EVERY = 100
FLUSH_BELOW = 1e-30


def flush_subnormals(arrays, step):
    """Every ``FLUSH_EVERY`` steps, set entries with ``|x| < FLUSH_BELOW`` to 0, in place."""
    if not ENABLED["flush_subnormals"] or step % FLUSH_EVERY:
        return
    for a in arrays:
        a[np.abs(a) < FLUSH_BELOW] = 0


# -- 3. keeping freed memory ------------------------------------------------------------------

#: Allocations below this come from the heap, and this much free heap is kept (twice it).
KEEP_MEMORY_BYTES = 256 * 2**20
#: The most an older glibc accepts as its mmap threshold (HEAP_MAX_SIZE / 2 on 64 bits).
_OLD_GLIBC_MAX = 32 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # mallopt parameters (malloc.h)
_GLIBC_STATIC = {_M_MMAP_THRESHOLD: 128 * 1024, _M_TRIM_THRESHOLD: 128 * 1024}
_malloc = {"mallopt": None, "set": None}


def _mallopt():
    if _malloc["mallopt"] is None:
        try:
            import ctypes

            _malloc["mallopt"] = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):  # not glibc: nothing to tune
            _malloc["mallopt"] = False
    return _malloc["mallopt"]


def keep_freed_memory():
    """Called when training starts: raise glibc's mmap and trim thresholds so that the
    large arrays every training step allocates reuse memory instead of faulting in
    fresh pages. Returns whether the thresholds are raised now.

    With the switch off nothing is called, so glibc keeps its own adaptive thresholds,
    unless they were raised earlier in this process: glibc cannot be given its
    adaptive behaviour back, so then its static initial values are set, the closest
    there is. An older glibc refuses an mmap threshold above 32 MiB; that is used
    then. (Threads other than the main one allocate from heaps of at most 64 MiB;
    above that glibc maps memory whatever the threshold.)"""
    want = bool(ENABLED["keep_freed_memory"])
    with _lock:
        if _malloc["set"] is want or (not want and _malloc["set"] is None):
            return bool(_malloc["set"])
        mallopt = _mallopt()
        if not mallopt:
            return False
        if want:
            mmap_ok = (mallopt(_M_MMAP_THRESHOLD, KEEP_MEMORY_BYTES) == 1
                       or mallopt(_M_MMAP_THRESHOLD, _OLD_GLIBC_MAX) == 1)
            trim_ok = mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_MEMORY_BYTES) == 1
            _malloc["set"] = bool(mmap_ok or trim_ok)
        else:
            for param, value in _GLIBC_STATIC.items():
                mallopt(param, value)
            _malloc["set"] = False
        return bool(_malloc["set"])
