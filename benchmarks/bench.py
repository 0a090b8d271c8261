"""How fast is Digit Lab's NumPy engine? Side by side with PyTorch (CPU) and
scikit-learn, in one process, on the same MNIST arrays.

    python benchmarks/bench.py                       # full run (about 10 minutes on 2 cores)
    python benchmarks/bench.py --data DIR --reps 5   # MNIST folder (default: $MNIST_DATA)
    python benchmarks/bench.py --only ablation       # just the speed tricks of nn/speed.py
    python benchmarks/bench.py --quick --skip-torch --out /tmp/bench   # seconds (the test)

Measures, in one run (``--only`` picks sections; see benchmarks/README.md):

* ``mlp``: one epoch over the 60,000 training images of a ReLU MLP with SGD +
  momentum (lr 0.01, momentum 0.9, PyTorch semantics), 784-128-64-10 at
  batch 32, 128 and 512 and 784-512-256-10 at batch 128, for ``nn`` (nn.fit,
  epochs=1, val_size=0; the epoch's own time from its history), PyTorch (plain
  loop, randperm + tensor indexing, default threads) and scikit-learn's
  MLPClassifier (partial_fit, alpha=0); the float32 matmul peak of this machine
  (2048^3 numpy matmul) and each implementation's GFLOP/s (convention:
  3 x 2 x MACs x images per epoch) as a fraction of it;
* ``cnn``: the same epoch for the small CNN ``cnn_spec(conv=(8, 16), kernel=5,
  hidden=(64,))`` and for the shipped default CNN's architecture, nn vs torch;
* ``augmentation``: a 784-128-64-10 Adam epoch with and without the default
  recipe's augmentation;
* ``ablation``: each switch of ``nn.speed.ENABLED`` off alone against all on;
* ``inference``: a digit drawn from pen strokes through the app's path
  (draw_strokes -> to_mnist -> predict_proba) with weights/default.npz, and the
  forward pass of one image and the 10k test set, for it and for an MLP;
* ``quick_preset``: ``nn.train(PRESETS["quick"], mnist)`` (the Retrain tab's
  default), wall time and test accuracy;
* ``mlp_to_98``: an MLP recipe trained until 98% test accuracy.

Method for every epoch time: each implementation trains one untimed warm-up
epoch (so weights and optimizer state are realistic, e.g. dead ReLU units and
decayed momentum), then the repetitions are the OUTER loop over every
(config, implementation) of a section, so a slow moment of the machine hits
all of them alike. Each epoch waits for a quiet machine and is repeated if
other processes used more than 0.15 cores meanwhile (``QuietGuard``).
Reported: the median of the repetitions and the min-max spread. Results go to
OUT/latest.json and OUT/latest.png; a markdown report is printed.
"""

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nn  # noqa: E402  (needs the sys.path line above)
from nn.architecture import count_macs, describe, shapes  # noqa: E402
from nn.recipe import PRESETS  # noqa: E402

LR, MOMENTUM = 0.01, 0.9
MLP_CONFIGS = [((128, 64), 32), ((128, 64), 128), ((128, 64), 512), ((512, 256), 128)]
SMALL_CNN = nn.cnn_spec(conv=(8, 16), kernel=5, hidden=(64,))
CNN_BATCH = 128
AUGMENTED_MLP, AUGMENTED_BATCH = (128, 64), 128
MLP_TO_98 = nn.Recipe(hidden=(256, 128), dropout=0.1, schedule="cosine", epochs=15)
TARGET_ACC = 0.98
DEFAULT_WEIGHTS = ROOT / "weights" / "default.npz"
MLP_WEIGHTS = ROOT / "weights" / "mlp.npz"
INFERENCE_MLP = (256, 128)       # when weights/mlp.npz does not exist
CANVAS_SIZE, PEN_WIDTH = 280, 18  # the app's canvas
QUICK_IMAGES = 2000
SECTIONS = ("mlp", "cnn", "augmentation", "ablation", "inference", "quick_preset", "mlp_to_98")

#: The project's speed goals on the 2-core machine (see benchmarks/README.md).
LIMITS = {
    "mlp_vs": {("784-128-64-10", 32): {"torch": 0.8, "sklearn": 0.6},
               ("784-128-64-10", 128): {"torch": 0.95, "sklearn": 0.6},
               ("784-128-64-10", 512): {"torch": 1.05, "sklearn": 0.75}},
    "peak_fraction_512": 0.40,
    "small_cnn_vs_torch": 2.0,
    "augmented_vs_plain": 2.0,
    "drawn_digit_ms": 5.0,
    "forward_one_us": 50.0,
    "quick_preset_s": 60.0,
    "mlp_to_98_s": 20.0,
}


# -- helpers ---------------------------------------------------------------------------

def arch_name(spec):
    """``784-128-64-10`` for an MLP, ``1x28x28-conv8x5-conv16x5-64-10`` for a CNN."""
    return describe(spec).split(" (")[0]


def summary(times):
    """median / min / max of a list of seconds."""
    return {"median_s": float(np.median(times)), "min_s": float(min(times)),
            "max_s": float(max(times)), "times_s": [float(t) for t in times]}


def median_call_seconds(fn, calls, warmup=3, budget_s=None):
    """Median wall time of ``fn()`` over ``calls`` separately timed calls: (median, min, max).
    With ``budget_s``, stops after at least 3 calls once that much time was spent (a slow
    call, such as a big network on the whole test set, needs fewer repetitions)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
    return float(np.median(times)), float(min(times)), float(max(times))


def call_stats(fn, calls, scale, unit):
    """``median_call_seconds`` as ``{"median": , "min": , "max": }`` in ``unit`` (1e3: ms)."""
    med, lo, hi = median_call_seconds(fn, calls)
    return {"median": med * scale, "min": lo * scale, "max": hi * scale, "unit": unit}


def subnormal_fraction(arrays):
    """Share of entries that are float32 subnormal (nonzero and below the smallest normal)."""
    tiny = np.finfo(np.float32).tiny
    total = sub = 0
    for a in arrays:
        a = np.abs(np.asarray(a, dtype=np.float32))
        total += a.size
        sub += int(np.count_nonzero((a > 0) & (a < tiny)))
    return sub / total if total else 0.0


def import_torch(skip):
    if skip:
        return None, "skipped (--skip-torch)"
    try:
        import torch
    except ImportError:
        return None, "torch not installed (pip install -r requirements-bench.txt)"
    return torch, None


@contextmanager
def speed_switches(off=()):
    """``nn.speed.ENABLED`` with the switches named in ``off`` set to False, restored after."""
    saved = dict(nn.speed.ENABLED)
    try:
        for name in off:
            nn.speed.ENABLED[name] = False
        yield
    finally:
        nn.speed.ENABLED.update(saved)


# -- the machine -------------------------------------------------------------------------

class ForeignLoad:
    """CPU time used by OTHER processes while the block runs, in cores (Linux /proc/stat).

    On a 2-core machine a concurrent test run can easily double an epoch time;
    this number says whether a result is trustworthy (ideally below ~0.1).
    """

    @staticmethod
    def _busy_seconds():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait

    def __enter__(self):
        self.cores = None
        self._start = (self._busy_seconds(), sum(os.times()[:2]), time.perf_counter())
        return self

    def __exit__(self, *exc):
        busy0, own0, t0 = self._start
        busy = self._busy_seconds()
        if busy is not None and busy0 is not None:
            foreign = (busy - busy0) - (sum(os.times()[:2]) - own0)
            self.cores = max(0.0, foreign / (time.perf_counter() - t0))
        return False


class QuietGuard:
    """Run each timed measurement when the machine is quiet, and again if it was not.

    Before a measurement: a short pause (so the previous library's spinning worker
    threads go to sleep), then wait until other processes use less than
    ``threshold`` cores (at most ``max_wait`` seconds over the whole run). A
    measurement during which they used more is repeated up to ``retries`` times;
    the least disturbed one is kept. Once the waiting budget is spent the machine
    is busy for good, and repeating would only make the run longer: each
    measurement is then taken once (and counted as disturbed if it was).
    ``enabled=False`` (--quick) just measures.
    """

    def __init__(self, enabled, threshold=0.15, retries=2, max_wait=180.0, settle=0.15):
        self.enabled, self.threshold, self.retries = enabled, threshold, retries
        self.wait_left, self.settle = max_wait, settle
        self.repeated = self.disturbed = 0

    def wait_until_quiet(self):
        while self.enabled and self.wait_left > 0:
            t0 = time.perf_counter()
            with ForeignLoad() as load:
                time.sleep(0.25)
            self.wait_left -= time.perf_counter() - t0
            if load.cores is None or load.cores < self.threshold:
                return

    def measure(self, fn):
        """``fn()`` returns seconds; returns (seconds, foreign load in cores or None)."""
        if not self.enabled:
            return fn(), None
        best = None
        for attempt in range(self.retries + 1):
            time.sleep(self.settle)
            self.wait_until_quiet()
            with ForeignLoad() as load:
                seconds = fn()
            cores = load.cores if load.cores is not None else 0.0
            if best is None or cores < best[1]:
                best = (seconds, cores)
            if cores <= self.threshold or self.wait_left <= 0:
                break
            self.repeated += 1
        if best[1] > self.threshold:
            self.disturbed += 1
        return best


def machine_info(torch):
    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags.split()]
    blas = []
    try:
        from threadpoolctl import threadpool_info

        blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                       "threading_layer")}
                for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    import sklearn

    info = {"cpu": cpu, "simd": simd, "logical_cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "sklearn": sklearn.__version__, "torch": None, "torch_threads": None}
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def matmul_peak(torch, n, reps, guard):
    """float32 GFLOP/s of an n x n x n matmul (best and median of ``reps``), numpy and torch."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty_like(a)
    flop = 2.0 * n ** 3

    def run(fn):
        fn()

        def timed():
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        times = [guard.measure(timed)[0] for _ in range(reps)]
        return flop / min(times) / 1e9, flop / float(np.median(times)) / 1e9

    out = {"n": n}
    out["numpy_gflops"], out["numpy_gflops_median"] = run(lambda: np.matmul(a, b, out=c))
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty_like(ta)
        out["torch_gflops"], out["torch_gflops_median"] = run(lambda: torch.matmul(ta, tb, out=tc))
    return out


# -- trainers: one object per (implementation, network); .epoch() trains one epoch -------------

class NnTrainer:
    """``nn.fit`` one epoch at a time, with one optimizer object kept across epochs.

    ``optimizer``: "momentum" (SGD, lr 0.01, momentum 0.9) or "adam" (lr 0.001);
    ``augment``: augmentation strengths passed to fit; ``off``: switches of
    ``nn.speed.ENABLED`` turned off while this trainer trains (the ablation).
    """

    name = "nn"

    def __init__(self, spec, batch, X, y, optimizer="momentum", augment=None, off=()):
        self.model = nn.Network(spec, seed=0)
        params = self.model.parameters()
        self.opt = (nn.Adam(params, lr=1e-3) if optimizer == "adam"
                    else nn.SGD(params, lr=LR, momentum=MOMENTUM))
        self.batch, self.X, self.y = batch, X, y
        self.augment, self.off = dict(augment or {}), tuple(off)
        self.epochs = 0
        self.fit_call_s = {}  # epoch seconds -> the whole fit call's seconds

    def epoch(self):
        """The epoch's own time from fit's history: the training loop only. (Not the
        per-call checks of the 188 MB input, which a multi-epoch fit pays once;
        they are in ``fit_call_s``.)"""
        self.epochs += 1
        with speed_switches(self.off):
            t0 = time.perf_counter()
            history = nn.fit(self.model, self.X, self.y, optimizer=self.opt, epochs=1,
                             batch_size=self.batch, val_size=0, seed=self.epochs, **self.augment)
            call = time.perf_counter() - t0
        seconds = history[-1]["seconds"]
        self.fit_call_s[seconds] = call
        return seconds

    def state(self):
        return [a for s in self.opt.state for a in s.values() if isinstance(a, np.ndarray)]


def _next_activation(layers, i):
    """The activation after layer ``i`` (skipping pooling and dropout), as nn's init picks it."""
    for layer in layers[i + 1:]:
        if layer["type"] in nn.ACTIVATIONS:
            return layer["type"]
        if layer["type"] not in ("maxpool2d", "dropout"):
            return None
    return None


def torch_network(torch, spec, weights_from=None):
    """A ``torch.nn.Sequential`` with the layers of ``spec`` (PyTorch layout, like nn's).

    Initialised like nn (He normal before a ReLU-family activation, Glorot
    uniform otherwise, zero biases) or, with ``weights_from`` (an nn.Network of
    this spec), with its weights, in eval mode.
    """
    tnn = torch.nn
    activations = {"relu": tnn.ReLU, "leaky_relu": lambda: tnn.LeakyReLU(0.01),
                   "sigmoid": tnn.Sigmoid, "tanh": tnn.Tanh}
    in_shapes = [tuple(spec["input_shape"]), *shapes(spec)[:-1]]
    out_shapes = shapes(spec)
    layers, weighted = [], []
    for i, layer in enumerate(spec["layers"]):
        kind, shape_in, shape_out = layer["type"], in_shapes[i], out_shapes[i]
        if kind == "dense":
            module = tnn.Linear(shape_in[0], shape_out[0])
        elif kind == "conv2d":
            module = tnn.Conv2d(shape_in[0], shape_out[0], layer["kernel_size"],
                                padding=layer.get("padding", 0))
        elif kind == "maxpool2d":
            module = tnn.MaxPool2d(layer.get("kernel_size", 2))
        elif kind == "flatten":
            module = tnn.Flatten()
        elif kind == "dropout":
            module = tnn.Dropout(layer.get("p", 0.5))
        else:
            module = activations[kind]()
        if kind in ("dense", "conv2d"):
            if _next_activation(spec["layers"], i) in ("relu", "leaky_relu"):
                tnn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                tnn.init.xavier_uniform_(module.weight)
            tnn.init.zeros_(module.bias)
            weighted.append(module)
        layers.append(module)
    model = tnn.Sequential(*layers)
    if weights_from is not None:
        with torch.no_grad():
            for module, layer in zip(weighted, weights_from.param_layers):
                w = layer.weight.value
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(
                    w.T if isinstance(module, tnn.Linear) else w)))
                module.bias.copy_(torch.from_numpy(layer.bias.value))
        model.eval()
    return model


class TorchTrainer:
    """The same network in PyTorch: a plain loop, randperm + tensor indexing, default threads."""

    name = "torch"

    def __init__(self, torch, spec, batch, X, y):
        self.torch = torch
        torch.manual_seed(0)
        self.model = torch_network(torch, spec)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.X = torch.from_numpy(X).view(len(X), *spec["input_shape"])
        self.y = torch.from_numpy(y)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(0)

    def epoch(self):
        torch, model, opt, B = self.torch, self.model, self.opt, self.batch
        loss_fn = torch.nn.functional.cross_entropy
        n = len(self.X)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=self.gen)
        for start in range(0, n, B):
            idx = perm[start:start + B]
            loss = loss_fn(model(self.X[idx]), self.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    def state(self):
        return [s["momentum_buffer"].numpy() for s in self.opt.state.values()
                if s.get("momentum_buffer") is not None]


class SklearnTrainer:
    """scikit-learn's MLPClassifier, ``partial_fit`` one epoch per call (MLPs only)."""

    name = "sklearn"

    def __init__(self, hidden, batch, X, y):
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", solver="sgd",
                                 momentum=MOMENTUM, nesterovs_momentum=False,
                                 learning_rate="constant", learning_rate_init=LR,
                                 batch_size=batch, alpha=0.0, max_iter=1, shuffle=True,
                                 random_state=0)
        self.X, self.y = X, y
        self.started = False

    def epoch(self):
        from sklearn.exceptions import ConvergenceWarning

        kwargs = {} if self.started else {"classes": np.arange(10)}
        self.started = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            self.clf.partial_fit(self.X, self.y, **kwargs)
            return time.perf_counter() - t0

    def state(self):
        opt = getattr(self.clf, "_optimizer", None)
        return list(getattr(opt, "velocities", []))


def time_epochs(rows, reps, warmup, guard, log):
    """Time the epochs of ``rows``: dicts with ``trainers`` ({label: trainer}) and
    optionally ``gflop_per_epoch``. One warm-up epoch each, then ``reps``
    repetitions as the outer loop. Replaces ``trainers`` by ``results``:
    {label: summary + GFLOP/s, subnormal share of the optimizer state, ...}."""
    times = [{label: [] for label in row["trainers"]} for row in rows]
    loads = [{label: [] for label in row["trainers"]} for row in rows]
    if warmup:
        log("  warm-up: one epoch each")
        for row in rows:
            for t in row["trainers"].values():
                t.epoch()
    for rep in range(reps):
        log(f"  repetition {rep + 1}/{reps}")
        for row, row_times, row_loads in zip(rows, times, loads):
            for label, t in row["trainers"].items():
                seconds, cores = guard.measure(t.epoch)
                row_times[label].append(seconds)
                row_loads[label].append(cores)
    for row, row_times, row_loads in zip(rows, times, loads):
        row["results"] = {}
        for label, t in row.pop("trainers").items():
            res = summary(row_times[label])
            if "gflop_per_epoch" in row:
                res["gflops"] = row["gflop_per_epoch"] / res["median_s"]
            res["subnormal_state_fraction"] = subnormal_fraction(t.state())
            if hasattr(t, "fit_call_s"):
                # The fit calls of the kept measurements (the guard may repeat an epoch).
                res["fit_call_median_s"] = float(np.median(
                    [t.fit_call_s[s] for s in row_times[label]]))
            measured = [c for c in row_loads[label] if c is not None]
            res["foreign_load_cores_max"] = max(measured) if measured else None
            row["results"][label] = res
    return rows


def epoch_gflop(spec, n):
    """The FLOP convention of every GF/s column: 3 x 2 x MACs x images, in GFLOP."""
    return 3 * 2 * count_macs(spec) * n / 1e9


# -- sections of epoch times --------------------------------------------------------------------

def bench_mlp(X, y, torch, skip_sklearn):
    """784-128-64-10 at batch 32/128/512 and 784-512-256-10 at 128: nn, torch, sklearn."""
    rows = []
    for hidden, batch in MLP_CONFIGS:
        spec = nn.mlp_spec(hidden)
        trainers = {"nn": NnTrainer(spec, batch, X, y)}
        if torch is not None:
            trainers["torch"] = TorchTrainer(torch, spec, batch, X, y)
        if not skip_sklearn:
            trainers["sklearn"] = SklearnTrainer(hidden, batch, X, y)
        rows.append({"arch": arch_name(spec), "hidden": list(hidden), "batch_size": batch,
                     "gflop_per_epoch": epoch_gflop(spec, len(X)), "trainers": trainers})
    return rows


def bench_cnn(X, y, torch):
    """The small CNN (the target) and the shipped default CNN's architecture: nn vs torch."""
    rows = []
    for name, spec in (("small", SMALL_CNN), ("default", PRESETS["default"].spec())):
        trainers = {"nn": NnTrainer(spec, CNN_BATCH, X, y)}
        if torch is not None:
            trainers["torch"] = TorchTrainer(torch, spec, CNN_BATCH, X, y)
        rows.append({"name": name, "arch": arch_name(spec), "spec": spec, "batch_size": CNN_BATCH,
                     "gflop_per_epoch": epoch_gflop(spec, len(X)), "trainers": trainers})
    return rows


def augmentation_strengths():
    """The augmentation of ``PRESETS["default"]``: {name: strength}."""
    recipe = PRESETS["default"]
    return {name: getattr(recipe, name) for name in nn.recipe.AUGMENTATIONS}


def bench_augmentation(X, y):
    """784-128-64-10, Adam, batch 128: an epoch with the default recipe's augmentation
    and one without."""
    spec = nn.mlp_spec(AUGMENTED_MLP)
    strengths = augmentation_strengths()
    trainers = {"plain": NnTrainer(spec, AUGMENTED_BATCH, X, y, optimizer="adam"),
                "augmented": NnTrainer(spec, AUGMENTED_BATCH, X, y, optimizer="adam",
                                       augment=strengths)}
    return [{"arch": arch_name(spec), "batch_size": AUGMENTED_BATCH, "optimizer": "adam",
             "strengths": strengths, "trainers": trainers}]


def ablation_configs():
    """(label, spec, batch) of the networks the ablation times."""
    mlp = nn.mlp_spec((128, 64))
    return [(f"{arch_name(mlp)} batch 32", mlp, 32), (f"{arch_name(mlp)} batch 128", mlp, 128),
            (f"small CNN batch {CNN_BATCH}", SMALL_CNN, CNN_BATCH)]


def bench_ablation(X, y):
    """For every switch of ``nn.speed.ENABLED``: the epoch with it alone off, against all on
    (SGD + momentum). Each (config, switch) has its own trainer, warmed up in its own mode."""
    switches = list(nn.speed.ENABLED)
    rows = []
    for label, spec, batch in ablation_configs():
        trainers = {"all on": NnTrainer(spec, batch, X, y)}
        for switch in switches:
            trainers[f"{switch} off"] = NnTrainer(spec, batch, X, y, off=(switch,))
        rows.append({"config": label, "arch": arch_name(spec), "batch_size": batch,
                     "trainers": trainers})
    return rows


def ablation_speedups(rows):
    """{switch: {config: time with the switch off / time with all on}} (> 1: the trick pays)."""
    return {label[:-len(" off")]: {row["config"]: row["results"][label]["median_s"]
                                   / row["results"]["all on"]["median_s"] for row in rows}
            for label in rows[0]["results"] if label != "all on"}


# -- inference ----------------------------------------------------------------------------

def digit_strokes():
    """One pen stroke of a "2" on the 280x280 canvas, 55 points (a real pen-drawn digit
    has a median of 55): an arc over the top, a diagonal down to the left, a base line."""
    t = np.deg2rad(np.linspace(160, -40, 30))
    arc = np.c_[140 + 55 * np.cos(t), 105 - 55 * np.sin(t)]
    diagonal = np.linspace(arc[-1], (85, 220), 16)[1:]
    base = np.linspace((85, 220), (200, 220), 11)[1:]
    return [np.vstack([arc, diagonal, base])]


DRAWN_DIGIT = 2


def load_network(path, fallback_spec):
    """``(network, where it came from)``: ``nn.load(path)``, or an untrained network of
    ``fallback_spec`` when the file is missing (timing does not depend on the weights)."""
    if path.exists():
        return nn.load(path), str(path.relative_to(ROOT))
    return nn.Network(fallback_spec, seed=0), f"untrained (no {path.relative_to(ROOT)})"


def bench_inference(model, source, X_test, torch, quick):
    """One network: a drawn digit through the app's path, one image, the test set at once."""
    from nn.preprocess import to_mnist
    from nn.strokes import draw_strokes

    calls = 30 if quick else 300
    strokes = digit_strokes()
    canvas = draw_strokes(strokes, CANVAS_SIZE, PEN_WIDTH)
    img28 = to_mnist(canvas)
    x1 = np.ascontiguousarray(X_test[:1]).reshape(1, *model.input_shape)

    def drawn_digit():  # what the app does with a drawing (app_logic.inputs, .inference)
        return model.predict_proba(to_mnist(draw_strokes(strokes, CANVAS_SIZE, PEN_WIDTH))
                                   .reshape(1, -1))[0]

    out = {"model": model.describe(), "source": source, "spec": model.spec,
           "drawn_digit": {"label": DRAWN_DIGIT, "predicted": int(drawn_digit().argmax()),
                           "points": int(sum(len(s) for s in strokes)), "canvas": CANVAS_SIZE,
                           "pen": PEN_WIDTH}}
    out["drawn_digit_ms"] = call_stats(drawn_digit, calls, 1e3, "ms")
    out["draw_strokes_ms"] = call_stats(lambda: draw_strokes(strokes, CANVAS_SIZE, PEN_WIDTH),
                                        calls, 1e3, "ms")
    out["to_mnist_ms"] = call_stats(lambda: to_mnist(canvas), calls, 1e3, "ms")
    out["predict_proba_one_us"] = {
        "nn": median_call_seconds(lambda: model.predict_proba(img28.reshape(1, -1)),
                                  10 * calls)[0] * 1e6}
    out["forward_one_us"] = {"nn": median_call_seconds(lambda: model.forward(x1),
                                                       10 * calls)[0] * 1e6}
    flop = 2 * count_macs(model.spec) * len(X_test)
    set_calls = dict(calls=3 if quick else 20, warmup=1, budget_s=10.0)
    med = median_call_seconds(lambda: model.predict_proba(X_test), **set_calls)[0]
    out["test_set"] = {"n": len(X_test), "nn_ms": med * 1e3, "nn_gflops": flop / med / 1e9}
    if torch is not None:
        tmodel = torch_network(torch, model.spec, weights_from=model)
        t1 = torch.from_numpy(x1)
        tX = torch.from_numpy(X_test).view(len(X_test), *model.input_shape)
        with torch.no_grad():
            out["forward_one_us"]["torch"] = median_call_seconds(lambda: tmodel(t1),
                                                                 10 * calls)[0] * 1e6
            med = median_call_seconds(lambda: torch.softmax(tmodel(tX), 1), **set_calls)[0]
            out["test_set"]["torch_ms"] = med * 1e3
            out["test_set"]["torch_gflops"] = flop / med / 1e9
            diff = np.abs(torch.softmax(tmodel(tX), 1).numpy() - model.predict_proba(X_test)).max()
        out["test_set"]["max_abs_prob_diff_nn_vs_torch"] = float(diff)
    return out


# -- whole training runs ----------------------------------------------------------------------

def bench_quick_preset(data):
    """The Retrain tab's default: ``nn.train(PRESETS["quick"], data)``, the whole call
    (training, validation, test evaluation)."""
    recipe = PRESETS["quick"]
    t0 = time.perf_counter()
    model = nn.train(recipe, data)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "test_acc": model.metrics["accuracy"],
            "epochs": len(model.history), "epoch_seconds": [r["seconds"] for r in model.history],
            "val_acc": model.history[-1]["val_acc"], "arch": arch_name(recipe.spec()),
            **model.trained_on, "n_test": len(data[1][0]), "recipe": recipe.to_dict()}


class _StopAtAccuracy(nn.Callback):
    """Evaluates test accuracy after every epoch (time excluded) and stops at the target."""

    def __init__(self, X_test, y_test, target):
        self.X_test, self.y_test, self.target = X_test, y_test, target
        self.eval_seconds, self.accuracies = 0.0, []

    def on_train_begin(self, info):
        self.model = info["model"]

    def on_epoch_end(self, record):
        t0 = time.perf_counter()
        acc = float(np.mean(self.model.predict(self.X_test) == self.y_test))
        self.accuracies.append(acc)
        self.eval_seconds += time.perf_counter() - t0
        return acc >= self.target


def bench_mlp_to_98(data, quick):
    """``MLP_TO_98`` through ``nn.train``, stopped at the first epoch with 98% test accuracy."""
    recipe = MLP_TO_98.replace(epochs=2) if quick else MLP_TO_98
    stop = _StopAtAccuracy(*data[1], TARGET_ACC)
    t0 = time.perf_counter()
    model = nn.train(recipe, data, callbacks=[stop])
    wall = time.perf_counter() - t0 - stop.eval_seconds
    return {"seconds": wall, "epochs": len(model.history), "test_acc": stop.accuracies[-1],
            "test_acc_per_epoch": stop.accuracies, "reached": stop.accuracies[-1] >= TARGET_ACC,
            "target": TARGET_ACC, "epoch_seconds": [r["seconds"] for r in model.history],
            "arch": arch_name(recipe.spec()), **model.trained_on, "recipe": recipe.to_dict()}


# -- targets, report ----------------------------------------------------------------------------

def _goal(name, value, limit, higher_is_better=False, met=None):
    if met is None:
        met = value >= limit if higher_is_better else value <= limit
    goal = {"name": name, "value": value, "limit": limit, "met": bool(met)}
    if higher_is_better:
        goal["higher_is_better"] = True
    return goal


def evaluate_targets(report):
    """The project's speed goals (``LIMITS``, for a 2-core machine) against what was measured."""
    goals = []
    for row in report.get("mlp", []):
        key, r = (row["arch"], row["batch_size"]), row["results"]
        for other, limit in LIMITS["mlp_vs"].get(key, {}).items():
            if other in r:
                goals.append(_goal(f"epoch time nn/{other}, {key[0]} batch {key[1]}",
                                   r["nn"]["median_s"] / r[other]["median_s"], limit))
        if key == ("784-128-64-10", 512):
            goals.append(_goal("batch 512: share of the matmul peak", r["nn"]["peak_fraction"],
                               LIMITS["peak_fraction_512"], higher_is_better=True))
    for row in report.get("cnn", []):
        if row["name"] == "small" and "torch" in row["results"]:
            goals.append(_goal(f"epoch time nn/torch, small CNN {row['arch']} batch "
                               f"{row['batch_size']}", row["nn_over_torch"],
                               LIMITS["small_cnn_vs_torch"]))
    if "augmentation" in report:
        goals.append(_goal("augmented / plain epoch, 784-128-64-10 Adam batch 128",
                           report["augmentation"]["ratio"], LIMITS["augmented_vs_plain"]))
    inference = report.get("inference", {})
    if "default" in inference:
        goals.append(_goal("drawn digit end to end, default network (ms)",
                           inference["default"]["drawn_digit_ms"]["median"],
                           LIMITS["drawn_digit_ms"]))
    if "mlp" in inference:
        goals.append(_goal("forward pass of one image, MLP (us)",
                           inference["mlp"]["forward_one_us"]["nn"], LIMITS["forward_one_us"]))
    if "quick_preset" in report:
        goals.append(_goal('nn.train(PRESETS["quick"]) wall time (s)',
                           report["quick_preset"]["seconds"], LIMITS["quick_preset_s"]))
    if "mlp_to_98" in report:
        tt = report["mlp_to_98"]
        goals.append(_goal(f"MLP recipe to {100 * TARGET_ACC:.0f}% test accuracy (s)",
                           tt["seconds"], LIMITS["mlp_to_98_s"],
                           met=tt["reached"] and tt["seconds"] <= LIMITS["mlp_to_98_s"]))
    return goals


def fmt_time(res):
    if res is None:
        return "-"
    return f"{res['median_s']:.3f} ({res['min_s']:.3f}-{res['max_s']:.3f})"


def _ratio(r, a, b):
    return f"{r[a]['median_s'] / r[b]['median_s']:.2f}" if a in r and b in r else "-"


def _gflops(r, k, peak):
    return f"{r[k]['gflops']:.0f} ({100 * r[k]['gflops'] / peak:.0f}%)" if k in r else "-"


def markdown_mlp(report, peak):
    lines = [f"MLP training: {report['settings']['n_train']} images per epoch, SGD lr {LR} "
             f"momentum {MOMENTUM}, median of {report['settings']['reps']} epochs (min-max), "
             f"{'after a warm-up epoch' if report['settings']['warmup'] else 'no warm-up'}. "
             "GF/s = 3 x 2 x MACs x images / time; % = of the numpy matmul peak.", "",
             "| network | batch | nn s/epoch | torch s/epoch | sklearn s/epoch | nn/torch | nn/sklearn "
             "| nn GF/s (%) | torch GF/s (%) | sklearn GF/s (%) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["mlp"]:
        r = row["results"]
        cells = [row["arch"], str(row["batch_size"])]
        cells += [fmt_time(r.get(k)) for k in ("nn", "torch", "sklearn")]
        cells += [_ratio(r, "nn", "torch"), _ratio(r, "nn", "sklearn")]
        cells += [_gflops(r, k, peak) for k in ("nn", "torch", "sklearn")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_cnn(report, peak):
    lines = ["CNN training (same method; SGD lr 0.01 momentum 0.9; 5x5 same convolutions, ReLU, "
             "2x2 max-pool after each):", "",
             "| network | batch | nn s/epoch | torch s/epoch | nn/torch | nn GF/s (%) "
             "| torch GF/s (%) |", "|---|---|---|---|---|---|---|"]
    for row in report["cnn"]:
        r = row["results"]
        name = f"{'small' if row['name'] == 'small' else 'shipped default'}: {row['arch']}"
        lines.append(f"| {name} | {row['batch_size']} | {fmt_time(r.get('nn'))} | "
                     f"{fmt_time(r.get('torch'))} | {_ratio(r, 'nn', 'torch')} | "
                     f"{_gflops(r, 'nn', peak)} | {_gflops(r, 'torch', peak)} |")
    return lines


def markdown_augmentation(report):
    aug = report["augmentation"]
    r = aug["results"]
    strengths = ", ".join(f"{k} {v:g}" for k, v in aug["strengths"].items())
    return [f"Augmentation ({aug['arch']}, Adam, batch {aug['batch_size']}; the default "
            f"recipe's {strengths}): plain {fmt_time(r['plain'])} s, augmented "
            f"{fmt_time(r['augmented'])} s per epoch: {aug['ratio']:.2f}x."]


def markdown_ablation(report):
    abl = report["ablation"]
    switches = list(abl["speedup"])
    lines = ["Ablation of nn/speed.py (one switch off at a time, SGD momentum; speed-up = "
             "time off / time all on, > 1: the trick pays):", "",
             "| network | all on s/epoch | " + " | ".join(f"{s} off (speed-up)" for s in switches)
             + " |", "|---|---|" + "---|" * len(switches)]
    for row in abl["rows"]:
        r = row["results"]
        cells = [row["config"], fmt_time(r["all on"])]
        cells += [f"{r[s + ' off']['median_s']:.3f} ({abl['speedup'][s][row['config']]:.2f}x)"
                  for s in switches]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_inference(report):
    lines = ["Inference (median of many calls):", "",
             "| network | drawn digit end to end | draw_strokes | to_mnist | predict_proba, one "
             "| forward, one: nn / torch | test set at once: nn / torch |",
             "|---|---|---|---|---|---|---|"]
    for key, inf in report["inference"].items():
        ts, f1 = inf["test_set"], inf["forward_one_us"]
        torch_one = f"{f1['torch']:.1f} us" if "torch" in f1 else "-"
        torch_set = f"{ts['torch_ms']:.1f} ms" if "torch_ms" in ts else "-"
        digit = inf["drawn_digit"]
        lines.append(f"| {key}: {inf['model']} ({inf['source']}) | "
                     f"{inf['drawn_digit_ms']['median']:.2f} ms (read as {digit['predicted']}) | "
                     f"{inf['draw_strokes_ms']['median']:.2f} ms | "
                     f"{inf['to_mnist_ms']['median']:.2f} ms | "
                     f"{inf['predict_proba_one_us']['nn']:.0f} us | "
                     f"{f1['nn']:.1f} us / {torch_one} | "
                     f"{ts['n']} images: {ts['nn_ms']:.1f} ms / {torch_set} |")
    return lines


def markdown(report):
    m, peak = report["machine"], report["matmul_peak"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads)"
                     for b in m["blas"]) or "unknown BLAS"
    lines = [f"## Digit Lab benchmark ({report['created']}{', QUICK' if report['quick'] else ''})", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}); "
             f"Python {m['python']}, numpy {m['numpy']} with {blas}; scikit-learn {m['sklearn']}; "
             + (f"torch {m['torch']} ({m['torch_threads']} threads)." if m["torch"] else "torch: -."),
             f"float32 matmul peak ({peak['n']}^3): numpy {peak['numpy_gflops']:.0f} GFLOP/s"
             + (f", torch {peak['torch_gflops']:.0f} GFLOP/s" if "torch_gflops" in peak else "")
             + f". Sections: {', '.join(report['sections'])}."]
    pk = peak["numpy_gflops"]
    parts = {"mlp": lambda: markdown_mlp(report, pk), "cnn": lambda: markdown_cnn(report, pk),
             "augmentation": lambda: markdown_augmentation(report),
             "ablation": lambda: markdown_ablation(report),
             "inference": lambda: markdown_inference(report)}
    for section in report["sections"]:
        if section in parts:
            lines += [""] + parts[section]()
    if "quick_preset" in report:
        q = report["quick_preset"]
        lines += ["", f'Retrain tab default, nn.train(PRESETS["quick"]) ({q["arch"]}, {q["epochs"]} '
                      f'epochs on {q["n_train"]} images, augmented): {q["seconds"]:.1f} s for the '
                      f'whole call, test accuracy {100 * q["test_acc"]:.2f}% ({q["n_test"]} images).']
    if "mlp_to_98" in report:
        tt = report["mlp_to_98"]
        what = (f"{100 * TARGET_ACC:.0f}% test accuracy after {tt['epochs']} epochs in "
                f"{tt['seconds']:.1f} s" if tt["reached"] else
                f"{100 * TARGET_ACC:.0f}% not reached: {100 * tt['test_acc']:.2f}% after "
                f"{tt['epochs']} epochs, {tt['seconds']:.1f} s")
        lines += ["", f"MLP recipe ({tt['arch']}, dropout 0.1, Adam, cosine over "
                      f"{tt['recipe']['epochs']} epochs, {tt['n_train']} images): {what}."]
    lines += ["", "| goal | measured | limit | met |", "|---|---|---|---|"]
    for g in report["targets"]:
        op = ">=" if g.get("higher_is_better") else "<="
        lines.append(f"| {g['name']} | {g['value']:.3g} | {op} {g['limit']:g} | {'yes' if g['met'] else 'NO'} |")
    if report["notes"]:
        lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines)


COLORS = {"nn": "#1f77b4", "torch": "#ee4c2c", "sklearn": "#f7931e"}


def _bars(ax, rows, labels, impls, value):
    """Grouped bars: one group per row, one bar per implementation; ``value(result)``
    returns (height, low, high) or height."""
    width = 0.8 / len(impls)
    x = np.arange(len(rows))
    for i, k in enumerate(impls):
        vals = [value(r["results"][k]) if k in r["results"] else (np.nan, np.nan, np.nan)
                for r in rows]
        vals = np.array([v if isinstance(v, tuple) else (v, v, v) for v in vals], float)
        pos = x + (i - (len(impls) - 1) / 2) * width
        ax.bar(pos, vals[:, 0], width, color=COLORS.get(k), label=k,
               yerr=np.vstack([vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]]), capsize=3)
    ax.set_xticks(x, labels, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def chart(report, path):
    """Epoch times (with min-max whiskers) and share of the matmul peak of the MLPs, the
    CNN epoch times, and the ablation's speed-ups: one panel each, for the sections run."""
    from matplotlib.figure import Figure

    peak = report["matmul_peak"]["numpy_gflops"]
    spread = lambda r: (r["median_s"], r["min_s"], r["max_s"])  # noqa: E731
    panels = []
    if "mlp" in report:
        rows = report["mlp"]
        labels = [f"{r['arch']}\nbatch {r['batch_size']}" for r in rows]
        impls = [k for k in ("nn", "torch", "sklearn") if any(k in r["results"] for r in rows)]
        panels.append((f"MLP: seconds per epoch ({report['settings']['n_train']} images)",
                       lambda ax: _bars(ax, rows, labels, impls, spread)))
        panels.append((f"MLP: % of the float32 matmul peak ({peak:.0f} GFLOP/s)",
                       lambda ax: _bars(ax, rows, labels, impls,
                                        lambda r: 100 * r["gflops"] / peak)))
    if "cnn" in report:
        crows = report["cnn"]
        clabels = [f"{r['name']}\n{r['arch'].replace('1x28x28-', '')}" for r in crows]
        cimpls = [k for k in ("nn", "torch") if any(k in r["results"] for r in crows)]
        panels.append((f"CNN: seconds per epoch (batch {CNN_BATCH})",
                       lambda ax: _bars(ax, crows, clabels, cimpls, spread)))
    if "ablation" in report:
        speedup = report["ablation"]["speedup"]
        configs = [row["config"] for row in report["ablation"]["rows"]]

        def ablation_panel(ax):
            width = 0.8 / len(speedup)
            x = np.arange(len(configs))
            for i, (switch, values) in enumerate(speedup.items()):
                ax.bar(x + (i - (len(speedup) - 1) / 2) * width, [values[c] for c in configs],
                       width, label=switch)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xticks(x, [c.replace(" batch", "\nbatch") for c in configs], fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        panels.append(("speed-up of each trick in nn/speed.py (time off / on)", ablation_panel))
    if not panels:
        panels.append(("nothing timed per epoch in this run", lambda ax: ax.axis("off")))
    cols = min(2, len(panels))
    rows_n = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(5.8 * cols, 4.0 * rows_n), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    for ax, (title, draw) in zip(axes, panels):
        draw(ax)
        ax.set_title(title, fontsize=10)
    for ax in axes[len(panels):]:
        ax.axis("off")
    m = report["machine"]
    fig.suptitle(f"Digit Lab training speed: {m['cpu']}, {m['logical_cores']} cores"
                 + (" (QUICK run)" if report["quick"] else ""), fontsize=10)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_DATA)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                   help="folder for latest.json and latest.png")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after a warm-up)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_IMAGES} images, 1 repetition, no warm-up, no ablation unless "
                        "--ablation (a smoke test)")
    p.add_argument("--ablation", action="store_true",
                   help="include the ablation of nn/speed.py's tricks (always in a full run)")
    p.add_argument("--skip-ablation", action="store_true", help="leave the ablation out")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections: {', '.join(SECTIONS)}")
    p.add_argument("--skip-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--skip-sklearn", action="store_true", help="leave scikit-learn out")
    args = p.parse_args(argv)
    if args.only:
        args.sections = [s for s in SECTIONS if s in args.only]
    else:
        ablation = args.ablation or not (args.quick or args.skip_ablation)
        args.sections = [s for s in SECTIONS if s != "ablation" or ablation]
    return p, args


def main(argv=None):
    p, args = parse_args(argv)
    reps, warmup = (1, False) if args.quick else (max(1, args.reps), True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(msg):
        print(f"[bench {time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    torch, torch_note = import_torch(args.skip_torch)
    notes = [f"torch: {torch_note}"] if torch_note else []
    try:
        (X, y), (X_test, y_test) = nn.data.load_mnist(args.data, download=False)
    except nn.data.DataError as e:
        p.exit(2, f"bench.py: error: {e}\n")
    if args.quick:
        X, y, X_test, y_test = X[:QUICK_IMAGES], y[:QUICK_IMAGES], X_test[:QUICK_IMAGES], y_test[:QUICK_IMAGES]
    # One writable, contiguous float32 copy that every implementation trains on.
    X, X_test = np.array(X, np.float32), np.array(X_test, np.float32)
    y, y_test = np.array(y, np.int64), np.array(y_test, np.int64)
    data = ((X, y), (X_test, y_test))

    report = {"created": _dt.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
              "sections": args.sections, "machine": machine_info(torch),
              "settings": {"n_train": len(X), "n_test": len(X_test), "reps": reps, "warmup": warmup,
                           "lr": LR, "momentum": MOMENTUM, "cnn_batch_size": CNN_BATCH}}
    guard = QuietGuard(enabled=not args.quick)
    log("matmul peak")
    report["matmul_peak"] = matmul_peak(torch, 2048, 2 if args.quick else 5, guard)
    peak = report["matmul_peak"]["numpy_gflops"]
    loads = {}

    def epochs_section(name, rows):
        log(f"{name}: epoch times")
        with ForeignLoad() as load:
            report[name] = time_epochs(rows, reps, warmup, guard, log)
        loads[name] = load.cores

    def once_section(name, fn):
        log(name)
        guard.wait_until_quiet()
        with ForeignLoad() as load:
            report[name] = fn()
        loads[name] = load.cores

    for section in args.sections:
        if section == "mlp":
            epochs_section("mlp", bench_mlp(X, y, torch, args.skip_sklearn))
            for row in report["mlp"]:
                for res in row["results"].values():
                    res["peak_fraction"] = res["gflops"] / peak
        elif section == "cnn":
            epochs_section("cnn", bench_cnn(X, y, torch))
            for row in report["cnn"]:
                r = row["results"]
                row["nn_over_torch"] = r["nn"]["median_s"] / r["torch"]["median_s"] if "torch" in r else None
        elif section == "augmentation":
            epochs_section("augmentation", bench_augmentation(X, y))
            aug = report["augmentation"] = report["augmentation"][0]   # one row
            aug["ratio"] = aug["results"]["augmented"]["median_s"] / aug["results"]["plain"]["median_s"]
        elif section == "ablation":
            epochs_section("ablation", bench_ablation(X, y))
            rows = report["ablation"]
            report["ablation"] = {"switches": list(nn.speed.ENABLED), "rows": rows,
                                  "speedup": ablation_speedups(rows)}
            assert all(nn.speed.ENABLED.values()), "the ablation left a switch off"
        elif section == "inference":
            def inference():
                default = load_network(DEFAULT_WEIGHTS, PRESETS["default"].spec())
                mlp = load_network(MLP_WEIGHTS, nn.mlp_spec(INFERENCE_MLP))
                return {"default": bench_inference(*default, X_test, torch, args.quick),
                        "mlp": bench_inference(*mlp, X_test, torch, args.quick)}
            once_section("inference", inference)
        elif section == "quick_preset":
            once_section("quick_preset", lambda: bench_quick_preset(data))
        elif section == "mlp_to_98":
            once_section("mlp_to_98", lambda: bench_mlp_to_98(data, args.quick))

    report["foreign_load_cores"] = loads
    report["quiet_guard"] = {"threshold_cores": guard.threshold, "repeated": guard.repeated,
                             "still_disturbed": guard.disturbed,
                             "wait_budget_left_s": max(0.0, guard.wait_left)}
    report["targets"] = evaluate_targets(report)
    sub = [f"{k} {row['arch']} batch {row['batch_size']}: {100 * res['subnormal_state_fraction']:.0f}%"
           for section in ("mlp", "cnn") for row in report.get(section, [])
           for k, res in row["results"].items() if res["subnormal_state_fraction"] > 0.01]
    if sub:
        notes.append("momentum entries that are float32 subnormals after the run (slow arithmetic): "
                     + "; ".join(sub))
    busy = {k: round(v, 2) for k, v in loads.items() if v is not None and v > guard.threshold}
    if guard.repeated or guard.disturbed or busy:
        notes.append(f"other processes were busy: {guard.repeated} measurements were repeated, "
                     f"{guard.disturbed} stayed disturbed (> {guard.threshold} foreign cores); "
                     f"foreign load per section in cores: {busy or 'below the threshold'}")
    if args.quick:
        notes.append(f"quick run: {QUICK_IMAGES} images, 1 repetition, no warm-up; "
                     "the numbers are not comparable with the goals")
    report["notes"] = notes
    report["wall_s"] = time.perf_counter() - started

    print(markdown(report))
    json_path = out_dir / "latest.json"
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, json_path)
    chart(report, out_dir / "latest.png")
    log(f"wrote {json_path} and {out_dir / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
