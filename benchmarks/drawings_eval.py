"""How well networks read real pen-drawn digits, drawn the way the app's canvas shows them.

MNIST's own test set says little about the app: its users draw with a mouse,
finger or stylus on a 280x280 canvas, at any size and place. This script takes
the UNIPEN development set (7,270 digits by 42 writers who never wrote MNIST;
see its README), draws each digit on the canvas as a person would (longer side
35-85% of the canvas, anywhere on it, the app's 18 px pen, nn.preprocess.draw_strokes),
sends the canvas through exactly the app's path (nn.preprocess.to_mnist, then
predict_proba in one batch) and reports, per network: accuracy on all the
drawings, the mean of the writers' accuracies (every writer counts once), the
worst writer, accuracy per source lab and per digit, beside its MNIST test accuracy.

    python benchmarks/drawings_eval.py [--data FILE] [--models A.npz B.npz ...]
                                       [--seed 0] [--limit N] [--mnist DIR] [--out FILE]

The data are read from --data, else $UNIPEN_DATA, else
../shared/data/unipen-dev/unipen_dev.npz beside the repository; they are only
measured, never trained on, and nothing derived from them but the accuracies is
written (benchmarks/results/drawings.json by default).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nn  # noqa: E402
from nn.preprocess import to_mnist  # noqa: E402
from nn.strokes import draw_strokes  # noqa: E402

ENV_VAR = "UNIPEN_DATA"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "unipen-dev" / "unipen_dev.npz"
DEFAULT_MODELS = (ROOT / "weights" / "default.npz", ROOT / "weights" / "mlp.npz")
RESULTS = ROOT / "benchmarks" / "results" / "drawings.json"
SOURCES = ("syn", "ibm", "gmd")
CANVAS, PEN = 280, 18          # the app's canvas side and default pen width (px)
SPAN = (0.35, 0.85)            # the digit's longer side, as a fraction of the canvas
MARGIN = PEN / 2 + 4           # px between the points' bounding box and the edge
MIN_WRITER_SAMPLES = 20        # the worst writer is chosen among writers with this many
ARRAYS = ("points", "stroke_offsets", "sample_offsets", "labels", "writer", "source")


class DataError(ValueError):
    """The data file is missing or not in the expected format (message says which)."""


# ---------------------------------------------------------------- data

def data_path(arg=None):
    """The file to read: ``arg``, else $UNIPEN_DATA, else DEFAULT_DATA."""
    return Path(arg or os.environ.get(ENV_VAR) or DEFAULT_DATA).expanduser()


def load_unipen(path):
    """Read unipen_dev.npz (format in its README).

    Returns (samples, labels, writers, sources): ``samples`` a list of n
    samples, each a list of float32 (k, 2) stroke arrays (x right, y down,
    bounding box's longer side 1); labels (n,) int64; writers (n,) int64;
    sources (n,) str. Raises DataError for a missing or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"UNIPEN data not found: {path} (give --data FILE or set ${ENV_VAR})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ARRAYS if k not in npz.files]
            if missing:
                raise DataError(f"{path} lacks the arrays {missing}")
            a = {k: npz[k] for k in ARRAYS}
    except DataError:
        raise
    except Exception as exc:  # not a zip, damaged member, pickled objects
        raise DataError(f"{path} is not a readable .npz file: {exc}") from None
    strokes, samples = a["stroke_offsets"].astype(np.int64), a["sample_offsets"].astype(np.int64)
    n = len(samples) - 1
    _check_offsets(path, "stroke_offsets", strokes, len(a["points"]))
    _check_offsets(path, "sample_offsets", samples, len(strokes) - 1)
    if a["points"].ndim != 2 or a["points"].shape[1] != 2:
        raise DataError(f"{path}: points must be (P, 2), got {a['points'].shape}")
    for key in ("labels", "writer", "source"):
        if a[key].shape != (n,):
            raise DataError(f"{path}: {key} must have shape ({n},), got {a[key].shape}")
    points = a["points"].astype(np.float32)
    split = [points[strokes[k]:strokes[k + 1]] for k in range(len(strokes) - 1)]
    out = [split[samples[i]:samples[i + 1]] for i in range(n)]
    return out, a["labels"].astype(np.int64), a["writer"].astype(np.int64), a["source"].astype(str)


def _check_offsets(path, name, offsets, end):
    if (offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != end
            or (np.diff(offsets) < 1).any()):
        raise DataError(f"{path}: {name} must rise from 0 to {end} with no empty entries")


def subset(n, limit, seed):
    """Indices to evaluate: all n, or a seeded random ``limit`` of them (sorted)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


# ---------------------------------------------------------------- drawing

def render_like_a_person(strokes, rng, size=CANVAS, width=PEN):
    """Draw one sample on the canvas at a size and place a person might choose.

    strokes: list of (k, 2) arrays, bounding box's longer side 1 (the data's
    normalisation). The longer side becomes uniform in SPAN * size pixels; the
    box is then placed uniformly so that it stays MARGIN px inside the canvas
    (the ink, ``width / 2`` wider, stays on it). rng: numpy Generator.
    Returns the (size, size, 4) uint8 RGBA canvas of ``draw_strokes``.
    """
    points = np.concatenate(strokes)
    lo, extent = points.min(axis=0), np.ptp(points, axis=0)
    scale = rng.uniform(*SPAN) * size / max(float(extent.max()), 1e-6)
    room = np.maximum(size - 2 * MARGIN - extent * scale, 0.0)
    corner = MARGIN + rng.uniform(0.0, 1.0, 2) * room
    return draw_strokes([(s - lo) * scale + corner for s in strokes], size=size, width=width)


def prepare(samples, indices, seed):
    """Inputs as the app sees them: float32 (len(indices), 784), one row per sample.

    Sample i is drawn with its own Generator, seeded (seed, i), so a sample is
    placed the same way whichever subset it is evaluated in. A canvas that
    to_mnist finds blank (never with an 18 px pen) gives a row of zeros.
    """
    X = np.zeros((len(indices), 784), np.float32)
    for row, i in enumerate(indices):
        digit = to_mnist(render_like_a_person(samples[i], np.random.default_rng((seed, int(i)))))
        if digit is not None:
            X[row] = digit.ravel()
    return X


# ---------------------------------------------------------------- scoring

def _accuracy(correct, mask):
    n = int(mask.sum())
    return {"accuracy": float(correct[mask].mean()) if n else None, "n": n}


def score(predicted, labels, writers, sources):
    """Accuracies of ``predicted`` (n,) against ``labels`` (n,), overall and by group.

    Returns {"accuracy", "n", "writer_mean" (mean of per-writer accuracies),
    "worst_writer" {"writer", "accuracy", "n"}, "per_writer", "per_source",
    "per_digit"}; each group maps a key (str, for JSON) to {"accuracy", "n"}.
    The worst writer is picked among those with at least MIN_WRITER_SAMPLES
    samples (all writers if none has that many), so that a quick --limit run
    does not name a writer with one unlucky sample.
    """
    correct = np.asarray(predicted) == np.asarray(labels)
    per_writer = {str(w): _accuracy(correct, writers == w) for w in np.unique(writers)}
    enough = [w for w, v in per_writer.items() if v["n"] >= MIN_WRITER_SAMPLES] or list(per_writer)
    worst = min(enough, key=lambda w: (per_writer[w]["accuracy"], int(w)))
    return {
        "accuracy": float(correct.mean()),
        "n": int(len(correct)),
        "writer_mean": float(np.mean([v["accuracy"] for v in per_writer.values()])),
        "worst_writer": {"writer": int(worst), **per_writer[worst]},
        "per_writer": per_writer,
        "per_source": {s: _accuracy(correct, sources == s) for s in SOURCES},
        "per_digit": {str(d): _accuracy(correct, labels == d) for d in range(10)},
    }


def mnist_accuracy(model, mnist_dir=None):
    """(accuracy, how): on the MNIST test set when ``mnist_dir`` holds it, else
    the accuracy stored in the model file (how = "test set" or "stored")."""
    if mnist_dir and nn.data.mnist_available(mnist_dir):
        _, (X, y) = nn.data.load_mnist(mnist_dir, download=False)
        return float((model.predict(X) == y).mean()), "test set"
    stored = (model.metrics or {}).get("accuracy")
    return (float(stored) if stored is not None else None), "stored"


def evaluate_model(model, X, labels, writers, sources, mnist_dir=None):
    """All the numbers for one network: ``score`` of its predictions on X (one
    batch) plus "mnist_accuracy" and "mnist_from"."""
    result = score(model.predict_proba(X).argmax(axis=1), labels, writers, sources)
    result["mnist_accuracy"], result["mnist_from"] = mnist_accuracy(model, mnist_dir)
    return result


# ---------------------------------------------------------------- reporting

def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def markdown(results):
    """Two markdown tables (summary, per digit) for {name: evaluate_model result}.
    An MNIST accuracy read from the model file, not measured, is marked "(stored)"."""
    head = ("| network | MNIST test | real drawings | mean over writers | worst writer | "
            + " | ".join(SOURCES) + " |")
    lines = [head, "|" + " --- |" * (5 + len(SOURCES))]
    for name, r in results.items():
        worst = r["worst_writer"]
        stored = " (stored)" if r["mnist_from"] == "stored" else ""
        lines.append(f"| {name} | {_pct(r['mnist_accuracy'])}{stored} | {_pct(r['accuracy'])} | "
                     f"{_pct(r['writer_mean'])} | {_pct(worst['accuracy'])} (writer "
                     f"{worst['writer']}, n={worst['n']}) | "
                     + " | ".join(_pct(r["per_source"][s]["accuracy"]) for s in SOURCES) + " |")
    lines += ["", "| network | " + " | ".join(map(str, range(10))) + " |",
              "|" + " --- |" * 11]
    for name, r in results.items():
        lines.append(f"| {name} | "
                     + " | ".join(_pct(r["per_digit"][str(d)]["accuracy"]) for d in range(10)) + " |")
    return "\n".join(lines)


def write_json(obj, path):
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_name(path):
    """``weights/default.npz`` for files in the repository, else the path as given."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(data, model_paths, seed=0, limit=None, mnist_dir=None):
    """Load, draw, evaluate: the JSON-ready report for ``model_paths``."""
    samples, labels, writers, sources = load_unipen(data)
    idx = subset(len(samples), limit, seed)
    X = prepare(samples, idx, seed)
    results = {}
    for path in model_paths:
        results[model_name(path)] = evaluate_model(nn.load(path), X, labels[idx], writers[idx],
                                                   sources[idx], mnist_dir)
    return {"data": str(Path(data).resolve()), "n": int(len(idx)), "of": len(samples),
            "seed": seed, "limit": limit,
            "drawing": {"canvas": CANVAS, "pen": PEN, "span": list(SPAN), "margin": MARGIN},
            "models": results}


# ---------------------------------------------------------------- teaching

TEACH_PER_DIGIT = 2          # drawings per digit a writer teaches (20 in all)
REHEARSAL = 10_000           # MNIST training images rehearsed while teaching


def teach_writers(model, X, labels, writers, mnist, seed=0, rehearsal=True, steps=None):
    """Teach ``model`` each writer's handwriting and measure how it reads the rest.

    For every writer with at least TEACH_PER_DIGIT + 1 drawings of each digit:
    a seeded choice of TEACH_PER_DIGIT drawings per digit is taught with
    ``nn.fine_tune`` (rehearsing REHEARSAL MNIST training images, as the app's
    Teach button does: ``app_logic.teaching.TEACH_SETTINGS``), then accuracy on
    the writer's other drawings is measured, before and after, and the taught
    network's MNIST test accuracy. ``mnist``: ((X_train, y_train), (X_test, y_test)).
    """
    from app_logic.teaching import TEACH_SETTINGS

    (X_train, y_train), (X_test, y_test) = mnist
    pick = np.sort(np.random.default_rng(seed).permutation(len(X_train))[:REHEARSAL])
    base = {"X_base": X_train[pick], "y_base": y_train[pick]} if rehearsal else {}
    settings = dict(TEACH_SETTINGS, **({"steps": steps} if steps else {}))
    mnist_before = float((model.predict(X_test) == y_test).mean())
    rows = []
    for w in np.unique(writers):
        mine = np.flatnonzero(writers == w)
        counts = np.bincount(labels[mine], minlength=10)
        if counts.min() <= TEACH_PER_DIGIT:
            continue
        rng = np.random.default_rng((seed, int(w)))
        taught = np.concatenate([rng.choice(mine[labels[mine] == d], TEACH_PER_DIGIT, replace=False)
                                 for d in range(10)])
        rest = np.setdiff1d(mine, taught)
        started = time.perf_counter()
        new = nn.fine_tune(model, X[taught], labels[taught], seed=seed, **base, **settings)
        seconds = time.perf_counter() - started
        rows.append({"writer": int(w), "n_rest": int(len(rest)), "seconds": round(seconds, 2),
                     "before": float((model.predict(X[rest]) == labels[rest]).mean()),
                     "after": float((new.predict(X[rest]) == labels[rest]).mean()),
                     "mnist_after": float((new.predict(X_test) == y_test).mean())})
    summary = {"writers": len(rows), "rehearsal": rehearsal, "settings": settings,
               "before_mean": float(np.mean([r["before"] for r in rows])),
               "after_mean": float(np.mean([r["after"] for r in rows])),
               "mnist_before": mnist_before,
               "mnist_after_mean": float(np.mean([r["mnist_after"] for r in rows])),
               "mnist_after_min": float(np.min([r["mnist_after"] for r in rows])),
               "seconds_median": float(np.median([r["seconds"] for r in rows])),
               "seconds_max": float(np.max([r["seconds"] for r in rows]))}
    return {"summary": summary, "writers": rows}


def teaching_markdown(name, result):
    s = result["summary"]
    return (f"| {name} | {s['writers']} | {'yes' if s['rehearsal'] else 'no'} | "
            f"{_pct(s['before_mean'])} | {_pct(s['after_mean'])} | {100 * s['mnist_before']:.2f}% | "
            f"{100 * s['mnist_after_mean']:.2f}% (lowest {100 * s['mnist_after_min']:.2f}%) | "
            f"{s['seconds_median']:.1f} s (max {s['seconds_max']:.1f} s) |")


def teaching_figure(name, with_rehearsal, without_rehearsal, path):
    """The README's picture of teaching and forgetting, for one network: each
    writer's accuracy on their other drawings before and after teaching, and
    the taught networks' MNIST test accuracy with and without rehearsal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(with_rehearsal["writers"], key=lambda r: r["before"])
    plain = {r["writer"]: r for r in without_rehearsal["writers"]}
    x = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=(3, 2))
    for i, r in enumerate(rows):
        left.plot([i, i], [100 * r["before"], 100 * r["after"]], color="#bbb", lw=1, zorder=1)
    left.scatter(x, [100 * r["before"] for r in rows], s=18, color="#999", label="before", zorder=2)
    left.scatter(x, [100 * r["after"] for r in rows], s=18, color="#1f77b4",
                 label="after teaching 2 per digit", zorder=3)
    left.set(xlabel="writer (sorted by accuracy before)", ylabel="accuracy on their other drawings (%)",
             title="It learns each writer's handwriting", xticks=[])
    left.legend(loc="lower right", frameon=False)
    s = with_rehearsal["summary"]
    right.axhline(100 * s["mnist_before"], color="#999", lw=1, ls="--", label="before teaching")
    right.scatter(x, [100 * r["mnist_after"] for r in rows], s=18, color="#1f77b4",
                  label="taught with rehearsal")
    right.scatter(x, [100 * plain[r["writer"]]["mnist_after"] for r in rows], s=18,
                  color="#d62728", marker="x", label="taught without rehearsal")
    right.set(ylabel="MNIST test accuracy (%)", xticks=[],
              title="Rehearsal keeps it from forgetting MNIST")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False,
                 fontsize=8)   # below the axes: the forgetting can reach any corner
    fig.suptitle(f"Teaching {name} (UNIPEN writers, python benchmarks/drawings_eval.py --teach)",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help=f"unipen_dev.npz (default: ${ENV_VAR}, "
                   "else ../shared/data/unipen-dev/unipen_dev.npz)")
    p.add_argument("--models", nargs="+", default=None,
                   help="model files (default: weights/default.npz and weights/mlp.npz if present)")
    p.add_argument("--seed", type=int, default=0, help="drawing and subset seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a seeded random N samples")
    p.add_argument("--mnist", default=os.environ.get("MNIST_DATA"),
                   help="MNIST folder for the test accuracy (default: $MNIST_DATA; "
                   "without it the accuracy stored in the model file)")
    p.add_argument("--out", default=str(RESULTS), help="JSON report (default: %(default)s)")
    p.add_argument("--teach", action="store_true",
                   help="also teach each network every writer's handwriting (2 drawings per "
                        "digit, with and without rehearsing 10,000 MNIST images) and measure "
                        "the rest; needs MNIST")
    p.add_argument("--figure", default=None,
                   help="with --teach: draw the first network's teaching and forgetting here (PNG)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    models = args.models or [str(m) for m in DEFAULT_MODELS if m.exists()]
    missing = [m for m in models if not Path(m).is_file()]
    if not models or missing:
        print(f"error: model file not found: {', '.join(missing) or 'weights/default.npz'}",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        report = run(data_path(args.data), models, args.seed, args.limit, args.mnist)
    except (DataError, nn.ModelFileError, nn.data.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.teach:
        if not (args.mnist and nn.data.mnist_available(args.mnist)):
            print("error: --teach needs MNIST (--mnist or $MNIST_DATA)", file=sys.stderr)
            return 2
        samples, labels, writers, _ = load_unipen(data_path(args.data))
        X = prepare(samples, np.arange(len(samples)), args.seed)
        mnist = nn.data.load_mnist(args.mnist, download=False)
        report["teaching"] = {
            model_name(m): {how: teach_writers(nn.load(m), X, labels, writers, mnist, args.seed,
                                               rehearsal=how == "rehearsal")
                            for how in ("rehearsal", "no_rehearsal")}
            for m in models}
        if args.figure:
            name, result = next(iter(report["teaching"].items()))
            teaching_figure(name, result["rehearsal"], result["no_rehearsal"], args.figure)
    report["seconds"] = round(time.perf_counter() - start, 2)
    write_json(report, args.out)
    print(f"{report['n']} of {report['of']} real pen-drawn digits (UNIPEN dev), drawn on a "
          f"{CANVAS}x{CANVAS} canvas with a {PEN} px pen, seed {args.seed}\n")
    print(markdown(report["models"]))
    if args.teach:
        print("\nTeaching each writer 2 drawings per digit, then reading their other drawings:\n")
        print("| network | writers | rehearsal | before | after | MNIST test before | "
              "MNIST test after | time to teach |")
        print("|" + " --- |" * 8)
        for name, results in report["teaching"].items():
            for result in results.values():
                print(teaching_markdown(name, result))
    print(f"\nTook {report['seconds']:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
