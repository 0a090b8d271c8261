"""How fast is Digit Lab's NumPy engine? Side by side with PyTorch (CPU) and
scikit-learn, in one process, on the same MNIST arrays.

    python benchmarks/bench.py                       # full run (2-6 minutes)
    python benchmarks/bench.py --data DIR --reps 5   # MNIST folder (default: $MNIST_DATA)
    python benchmarks/bench.py --quick --skip-torch --out /tmp/bench   # seconds (the test)

Measures, in one run:

* training: one epoch over the 60,000 training images of a ReLU MLP with SGD +
  momentum (lr 0.01, momentum 0.9, PyTorch semantics), 784-128-64-10 at
  batch 32, 128 and 512 and 784-512-256-10 at batch 128, for ``nn`` (nn.fit,
  epochs=1, val_size=0; the epoch's own time from its history), PyTorch (plain
  loop, randperm + tensor indexing, default threads) and scikit-learn's
  MLPClassifier (partial_fit, alpha=0);
* the float32 matmul peak of this machine (2048^3 numpy matmul) and each
  implementation's GFLOP/s (convention: 3 x 2 x MACs x 60000 per epoch) as a
  fraction of it;
* inference: a drawn digit end to end (280x280 RGBA canvas -> to_mnist ->
  predict_proba), the forward pass of one 784-vector, the 10k test set at once;
* the wall time for train.py's default settings to reach 98% test accuracy
  (test accuracy checked after every epoch, outside the timing).

Method: each implementation trains one untimed warm-up epoch (so weights and
optimizer state are realistic, e.g. dead ReLU units and decayed momentum),
then the repetitions are the OUTER loop over every (config, implementation),
so a slow moment of the machine hits all of them alike. Each epoch waits for
a quiet machine and is repeated if other processes used more than 0.15 cores
meanwhile (``QuietGuard``). Reported: the median of the repetitions and the
min-max spread. Results go to OUT/latest.json and OUT/latest.png; a markdown
table is printed.
"""

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nn  # noqa: E402  (needs the sys.path line above)

LR, MOMENTUM = 0.01, 0.9
CONFIGS = [((128, 64), 32), ((128, 64), 128), ((128, 64), 512), ((512, 256), 128)]
QUICK_IMAGES = 2000
TARGET_ACC = 0.98


# -- helpers ---------------------------------------------------------------------------

def arch_name(hidden):
    return "-".join(str(w) for w in (784, *hidden, 10))


def macs(hidden):
    sizes = (784, *hidden, 10)
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def summary(times):
    """median / min / max of a list of seconds."""
    return {"median_s": float(np.median(times)), "min_s": float(min(times)),
            "max_s": float(max(times)), "times_s": [float(t) for t in times]}


def median_call_seconds(fn, calls, warmup=3):
    """Median wall time of ``fn()`` over ``calls`` separately timed calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return float(np.median(times)), float(times.min()), float(times.max())


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
    the least disturbed one is kept. ``enabled=False`` (--quick) just measures.
    """

    def __init__(self, enabled, threshold=0.15, retries=2, max_wait=180.0, settle=0.15):
        self.enabled, self.threshold, self.retries = enabled, threshold, retries
        self.wait_left, self.settle = max_wait, settle
        self.repeated = self.disturbed = 0

    def wait_until_quiet(self):
        while self.wait_left > 0:
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
            if cores <= self.threshold:
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


# -- trainers: one object per (implementation, config); .epoch() trains one epoch ------------

class NnTrainer:
    name = "nn"

    def __init__(self, hidden, batch, X, y):
        self.model = nn.Network(hidden=hidden, activation="relu", seed=0)
        self.opt = nn.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.batch, self.X, self.y = batch, X, y
        self.epochs = 0
        self.fit_call_s = {}  # epoch seconds -> the whole fit call's seconds

    def epoch(self):
        """The epoch's own time from fit's history: the training loop only. (Not the
        per-call checks of the 188 MB input, which a multi-epoch fit pays once;
        they are in ``fit_call_s``.)"""
        self.epochs += 1
        t0 = time.perf_counter()
        history = nn.fit(self.model, self.X, self.y, optimizer=self.opt, epochs=1,
                         batch_size=self.batch, val_size=0, seed=self.epochs)
        seconds = history[-1]["seconds"]
        self.fit_call_s[seconds] = time.perf_counter() - t0
        return seconds

    def state(self):
        return [s["velocity"] for s in self.opt.state]


class TorchTrainer:
    name = "torch"

    def __init__(self, torch, hidden, batch, X, y):
        self.torch = torch
        torch.manual_seed(0)
        sizes = (784, *hidden, 10)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = torch.nn.Linear(a, b)
            last = i == len(sizes) - 2
            if last:  # like nn: Glorot for the softmax layer, He for the ReLU layers
                torch.nn.init.xavier_uniform_(lin.weight)
            else:
                torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            torch.nn.init.zeros_(lin.bias)
            layers += [lin] if last else [lin, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
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


def bench_training(X, y, torch, reps, warmup, skip_sklearn, guard, log):
    n = len(X)
    rows = []
    for hidden, batch in CONFIGS:
        trainers = [NnTrainer(hidden, batch, X, y)]
        if torch is not None:
            trainers.append(TorchTrainer(torch, hidden, batch, X, y))
        if not skip_sklearn:
            trainers.append(SklearnTrainer(hidden, batch, X, y))
        rows.append({"arch": arch_name(hidden), "hidden": list(hidden), "batch_size": batch,
                     "gflop_per_epoch": 3 * 2 * macs(hidden) * n / 1e9,
                     "trainers": trainers, "times": {t.name: [] for t in trainers},
                     "load": {t.name: [] for t in trainers}})
    if warmup:
        log("warm-up: one epoch per implementation and config")
        for row in rows:
            for t in row["trainers"]:
                t.epoch()
    for rep in range(reps):
        log(f"repetition {rep + 1}/{reps}")
        for row in rows:
            for t in row["trainers"]:
                seconds, cores = guard.measure(t.epoch)
                row["times"][t.name].append(seconds)
                row["load"][t.name].append(cores)
    for row in rows:
        row["results"] = {}
        for t in row.pop("trainers"):
            res = summary(row["times"][t.name])
            res["gflops"] = row["gflop_per_epoch"] / res["median_s"]
            res["subnormal_state_fraction"] = subnormal_fraction(t.state())
            if hasattr(t, "fit_call_s"):
                # The fit calls of the kept measurements (the guard may repeat an epoch).
                res["fit_call_median_s"] = float(np.median(
                    [t.fit_call_s[s] for s in row["times"][t.name]]))
            loads = [c for c in row["load"][t.name] if c is not None]
            res["foreign_load_cores_max"] = max(loads) if loads else None
            row["results"][t.name] = res
        del row["times"], row["load"]
    return rows


# -- inference ----------------------------------------------------------------------------

def drawn_canvas(image28):
    """A 280x280x4 uint8 RGBA canvas as a drawing widget returns it: white strokes whose
    alpha is the ink, on a transparent background (the MNIST digit enlarged 10x)."""
    from PIL import Image

    big = Image.fromarray((image28.reshape(28, 28) * 255).astype(np.uint8)).resize(
        (280, 280), Image.BILINEAR)
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[..., :3] = 255
    canvas[..., 3] = np.asarray(big)
    return canvas


def torch_copy(torch, model):
    """A torch.nn.Sequential with ``model``'s weights (eval mode), for inference timing."""
    layers = []
    dense = model.dense_layers
    for i, d in enumerate(dense):
        lin = torch.nn.Linear(d.in_features, d.out_features)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(d.W.T)))
            lin.bias.copy_(torch.from_numpy(d.b))
        layers += [lin] if i == len(dense) - 1 else [lin, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()


def bench_inference(model, X_test, torch, quick):
    from nn.preprocess import to_mnist

    calls = 30 if quick else 300
    canvas = drawn_canvas(X_test[0])
    x1 = np.ascontiguousarray(X_test[:1])
    out = {"model": model.describe()}
    med, lo, hi = median_call_seconds(lambda: model.predict_proba(to_mnist(canvas)), calls)
    out["drawn_digit_ms"] = {"median": med * 1e3, "min": lo * 1e3, "max": hi * 1e3}
    med, lo, hi = median_call_seconds(lambda: to_mnist(canvas), calls)
    out["to_mnist_ms"] = {"median": med * 1e3, "min": lo * 1e3, "max": hi * 1e3}
    med, lo, hi = median_call_seconds(lambda: model.forward(x1), 10 * calls)
    out["forward_one_us"] = {"nn": med * 1e6, "nn_min": lo * 1e6}
    med, lo, hi = median_call_seconds(lambda: model.predict_proba(x1), 10 * calls)
    out["predict_proba_one_us"] = {"nn": med * 1e6, "nn_min": lo * 1e6}
    flop_10k = 2 * macs(model.config["hidden"]) * len(X_test)
    med, lo, hi = median_call_seconds(lambda: model.predict_proba(X_test), 3 if quick else 20)
    out["test_set"] = {"n": len(X_test), "nn_ms": med * 1e3, "nn_gflops": flop_10k / med / 1e9}
    if torch is not None:
        tmodel = torch_copy(torch, model)
        t1, tX = torch.from_numpy(x1), torch.from_numpy(X_test)
        with torch.no_grad():
            med, lo, hi = median_call_seconds(lambda: tmodel(t1), 10 * calls)
            out["forward_one_us"]["torch"] = med * 1e6
            med, lo, hi = median_call_seconds(lambda: torch.softmax(tmodel(tX), 1),
                                              3 if quick else 20)
            out["test_set"]["torch_ms"] = med * 1e3
            out["test_set"]["torch_gflops"] = flop_10k / med / 1e9
            diff = np.abs(torch.softmax(tmodel(tX), 1).numpy() - model.predict_proba(X_test)).max()
        out["test_set"]["max_abs_prob_diff_nn_vs_torch"] = float(diff)
    return out


# -- train.py's defaults to 98% ---------------------------------------------------------------

class _StopAtAccuracy(nn.Callback):
    """Evaluates test accuracy after every epoch (time excluded) and stops at the target."""

    def __init__(self, model, X_test, y_test, target):
        self.model, self.X_test, self.y_test, self.target = model, X_test, y_test, target
        self.eval_seconds, self.accuracies = 0.0, []

    def on_epoch_end(self, record):
        t0 = time.perf_counter()
        acc = float(np.mean(self.model.predict(self.X_test) == self.y_test))
        self.accuracies.append(acc)
        self.eval_seconds += time.perf_counter() - t0
        return acc >= self.target


def bench_time_to_target(X, y, X_test, y_test, quick):
    import train

    d = dict(train.DEFAULTS)
    val_size = 0.1 if quick else d["val_size"]  # as train.py does with --limit
    epochs = 2 if quick else d["epochs"]
    model = nn.Network(hidden=d["hidden"], activation=d["activation"], dropout=d["dropout"],
                       seed=d["seed"])
    stop = _StopAtAccuracy(model, X_test, y_test, TARGET_ACC)
    t0 = time.perf_counter()
    history = nn.fit(model, X, y, optimizer=d["optimizer"], lr=d["lr"], momentum=d["momentum"],
                     l2=d["l2"], epochs=epochs, batch_size=d["batch_size"], val_size=val_size,
                     schedule=d["schedule"], seed=d["seed"], callbacks=[stop])
    wall = time.perf_counter() - t0 - stop.eval_seconds
    settings = {k: d[k] for k in ("hidden", "activation", "dropout", "optimizer", "lr",
                                  "batch_size", "epochs", "schedule", "val_size", "seed")}
    settings.update(epochs_planned=epochs, n_train=len(X), val_size=val_size)
    return model, {"seconds": wall, "epochs": len(history), "test_acc": stop.accuracies[-1],
                   "test_acc_per_epoch": stop.accuracies, "reached": stop.accuracies[-1] >= TARGET_ACC,
                   "target": TARGET_ACC, "epoch_seconds": [r["seconds"] for r in history],
                   "settings": settings}


# -- targets, report ----------------------------------------------------------------------------

def evaluate_targets(training, inference, to_target, peak):
    """The project's speed goals (for this 2-core machine) against what was measured."""
    goals = []

    def ratio(row, other):
        r = row["results"]
        if other not in r or "nn" not in r:
            return None
        return r["nn"]["median_s"] / r[other]["median_s"]

    limits = {("784-128-64-10", 32): (0.8, 0.6), ("784-128-64-10", 128): (0.95, 0.6),
              ("784-128-64-10", 512): (1.05, 0.75)}
    for row in training:
        key = (row["arch"], row["batch_size"])
        if key not in limits:
            continue
        for other, limit in zip(("torch", "sklearn"), limits[key]):
            value = ratio(row, other)
            if value is not None:
                goals.append({"name": f"epoch time nn/{other}, {key[0]} batch {key[1]}",
                              "value": value, "limit": limit, "met": value <= limit})
        if key[1] == 512:
            frac = row["results"]["nn"]["gflops"] / peak
            goals.append({"name": "batch 512: share of the matmul peak", "value": frac,
                          "limit": 0.40, "met": frac >= 0.40, "higher_is_better": True})
    goals.append({"name": "drawn digit end to end (ms)", "value": inference["drawn_digit_ms"]["median"],
                  "limit": 2.0, "met": inference["drawn_digit_ms"]["median"] < 2.0})
    goals.append({"name": "forward pass, one image (us)", "value": inference["forward_one_us"]["nn"],
                  "limit": 50.0, "met": inference["forward_one_us"]["nn"] < 50.0})
    goals.append({"name": "default settings to 98% test accuracy (s)", "value": to_target["seconds"],
                  "limit": 20.0, "met": bool(to_target["reached"] and to_target["seconds"] < 20.0)})
    return goals


def fmt_time(res):
    if res is None:
        return "-"
    return f"{res['median_s']:.3f} ({res['min_s']:.3f}-{res['max_s']:.3f})"


def markdown(report):
    m, peak = report["machine"], report["matmul_peak"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} threads)"
                     for b in m["blas"]) or "unknown BLAS"
    lines = [f"## Digit Lab benchmark ({report['created']}{', QUICK' if report['quick'] else ''})", "",
             f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}); "
             f"Python {m['python']}, numpy {m['numpy']} with {blas}; scikit-learn {m['sklearn']}; "
             + (f"torch {m['torch']} ({m['torch_threads']} threads)." if m["torch"] else "torch: -."),
             f"float32 matmul peak ({peak['n']}^3): numpy {peak['numpy_gflops']:.0f} GFLOP/s"
             + (f", torch {peak['torch_gflops']:.0f} GFLOP/s" if "torch_gflops" in peak else ""),
             f"Training: {report['settings']['n_train']} images per epoch, SGD lr {LR} momentum "
             f"{MOMENTUM}, median of {report['settings']['reps']} epochs (min-max), "
             f"{'after a warm-up epoch' if report['settings']['warmup'] else 'no warm-up'}. "
             "GF/s = 3 x 2 x MACs x images / time; % = of the numpy matmul peak.", "",
             "| network | batch | nn s/epoch | torch s/epoch | sklearn s/epoch | nn/torch | nn/sklearn "
             "| nn GF/s (%) | torch GF/s (%) | sklearn GF/s (%) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["training"]:
        r = row["results"]
        cells = [row["arch"], str(row["batch_size"])]
        cells += [fmt_time(r.get(k)) for k in ("nn", "torch", "sklearn")]
        for other in ("torch", "sklearn"):
            cells.append(f"{r['nn']['median_s'] / r[other]['median_s']:.2f}" if other in r else "-")
        for k in ("nn", "torch", "sklearn"):
            cells.append(f"{r[k]['gflops']:.0f} ({100 * r[k]['gflops'] / peak['numpy_gflops']:.0f}%)"
                         if k in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    inf = report["inference"]
    ts = inf["test_set"]
    lines += ["", f"Inference ({inf['model']}):", "",
              "| case | nn | torch |", "|---|---|---|",
              f"| drawn 280x280 RGBA canvas -> to_mnist -> predict_proba | "
              f"{inf['drawn_digit_ms']['median']:.2f} ms (to_mnist {inf['to_mnist_ms']['median']:.2f} ms) | - |",
              f"| forward pass, one 784-vector | {inf['forward_one_us']['nn']:.1f} us | "
              + (f"{inf['forward_one_us']['torch']:.1f} us |" if "torch" in inf["forward_one_us"] else "- |"),
              f"| predict_proba, one image | {inf['predict_proba_one_us']['nn']:.1f} us | - |",
              f"| {ts['n']} test images in one batch | {ts['nn_ms']:.2f} ms ({ts['nn_gflops']:.0f} GF/s) | "
              + (f"{ts['torch_ms']:.2f} ms ({ts['torch_gflops']:.0f} GF/s) |" if "torch_ms" in ts else "- |")]
    tt = report["time_to_98"]
    s = tt["settings"]
    lines += ["", f"train.py defaults ({arch_name(s['hidden'])} {s['activation']}, dropout {s['dropout']}, "
              f"{s['optimizer']} lr {s['lr']}, batch {s['batch_size']}, {s['schedule']} over "
              f"{s['epochs']} epochs, {s['n_train']} images, val {s['val_size']}): "
              + (f"{100 * TARGET_ACC:.0f}% test accuracy after {tt['epochs']} epochs in {tt['seconds']:.1f} s"
                 if tt["reached"] else
                 f"{100 * TARGET_ACC:.0f}% not reached: {100 * tt['test_acc']:.2f}% after "
                 f"{tt['epochs']} epochs, {tt['seconds']:.1f} s"), "",
              "| goal | measured | limit | met |", "|---|---|---|---|"]
    for g in report["targets"]:
        op = ">=" if g.get("higher_is_better") else "<="
        lines.append(f"| {g['name']} | {g['value']:.3g} | {op} {g['limit']:g} | {'yes' if g['met'] else 'NO'} |")
    if report["notes"]:
        lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines)


def chart(report, path):
    """Epoch times (with min-max whiskers) and share of the matmul peak, per config."""
    from matplotlib.figure import Figure

    rows = report["training"]
    impls = [k for k in ("nn", "torch", "sklearn") if any(k in r["results"] for r in rows)]
    colors = {"nn": "#1f77b4", "torch": "#ee4c2c", "sklearn": "#f7931e"}
    labels = [f"{r['arch']}\nbatch {r['batch_size']}" for r in rows]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_t, ax_p = fig.subplots(1, 2)
    width = 0.8 / len(impls)
    x = np.arange(len(rows))
    peak = report["matmul_peak"]["numpy_gflops"]
    for i, k in enumerate(impls):
        med = np.array([r["results"][k]["median_s"] if k in r["results"] else np.nan for r in rows])
        lo = np.array([r["results"][k]["min_s"] if k in r["results"] else np.nan for r in rows])
        hi = np.array([r["results"][k]["max_s"] if k in r["results"] else np.nan for r in rows])
        pos = x + (i - (len(impls) - 1) / 2) * width
        ax_t.bar(pos, med, width, color=colors[k], label=k,
                 yerr=np.vstack([med - lo, hi - med]), capsize=3)
        gflop = np.array([r["gflop_per_epoch"] for r in rows])
        ax_p.bar(pos, 100 * gflop / med / peak, width, color=colors[k], label=k)
    for ax, title in ((ax_t, f"seconds per epoch ({report['settings']['n_train']} images; lower is better)"),
                      (ax_p, f"% of the float32 matmul peak ({peak:.0f} GFLOP/s)")):
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"Digit Lab training speed: {m['cpu']}, {m['logical_cores']} cores", fontsize=10)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# -- main -----------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_DATA)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                   help="folder for latest.json and latest.png")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (after a warm-up)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_IMAGES} images, 1 repetition, no warm-up (a smoke test)")
    p.add_argument("--skip-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--skip-sklearn", action="store_true", help="leave scikit-learn out")
    args = p.parse_args(argv)
    reps, warmup = (1, False) if args.quick else (max(1, args.reps), True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

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

    report = {"created": _dt.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
              "machine": machine_info(torch),
              "settings": {"n_train": len(X), "n_test": len(X_test), "reps": reps, "warmup": warmup,
                           "lr": LR, "momentum": MOMENTUM}}
    guard = QuietGuard(enabled=not args.quick)
    log("matmul peak")
    report["matmul_peak"] = matmul_peak(torch, 2048, 2 if args.quick else 5, guard)
    log("training epochs")
    with ForeignLoad() as load:
        report["training"] = bench_training(X, y, torch, reps, warmup, args.skip_sklearn, guard, log)
    report["foreign_load_cores"] = load.cores
    report["quiet_guard"] = {"threshold_cores": guard.threshold, "repeated": guard.repeated,
                             "still_disturbed": guard.disturbed}
    peak = report["matmul_peak"]["numpy_gflops"]
    for row in report["training"]:
        for res in row["results"].values():
            res["peak_fraction"] = res["gflops"] / peak
    log("train.py defaults to 98% test accuracy")
    if guard.enabled:
        guard.wait_until_quiet()
    with ForeignLoad() as load98:
        model, report["time_to_98"] = bench_time_to_target(X, y, X_test, y_test, args.quick)
    report["time_to_98"]["foreign_load_cores"] = load98.cores
    log("inference")
    if guard.enabled:
        guard.wait_until_quiet()
    with ForeignLoad() as load_inf:
        report["inference"] = bench_inference(model, X_test, torch, args.quick)
    report["inference"]["foreign_load_cores"] = load_inf.cores
    report["targets"] = evaluate_targets(report["training"], report["inference"],
                                         report["time_to_98"], peak)
    sub = [f"{k} {row['arch']} batch {row['batch_size']}: {100 * res['subnormal_state_fraction']:.0f}%"
           for row in report["training"] for k, res in row["results"].items()
           if res["subnormal_state_fraction"] > 0.01]
    if sub:
        notes.append("momentum entries that are float32 subnormals after the run (slow arithmetic): "
                     + "; ".join(sub))
    if guard.repeated or guard.disturbed:
        notes.append(f"other processes were busy: {guard.repeated} epoch measurements were repeated, "
                     f"{guard.disturbed} stayed disturbed (> {guard.threshold} foreign cores); "
                     f"foreign load over the whole training benchmark {load.cores:.2f} cores")
    if args.quick:
        notes.append(f"quick run: {QUICK_IMAGES} images, 1 repetition, no warm-up; "
                     "the numbers are not comparable with the goals")
    report["notes"] = notes

    text = markdown(report)
    print(text)
    json_path = out_dir / "latest.json"
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, json_path)
    chart(report, out_dir / "latest.png")
    log(f"wrote {json_path} and {out_dir / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
