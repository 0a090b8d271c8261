"""Train a Digit Lab network on MNIST and write it to weights/.

    python train.py                      # reproduces weights/default.npz
    python train.py --hidden 128 64 --optimizer momentum --lr 0.05 --epochs 10 --out weights/sgd.npz
    python train.py --limit 5000 --epochs 3 --out /tmp/quick.npz

Prints a progress bar per epoch, a line per epoch, and the test report at the
end; writes the model (.npz), a JSON copy of its history and evaluation, and
PNG plots (curves, confusion matrix) beside it. A bad argument prints one
line and exits with status 2, writing nothing.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nn
from nn.data import DataError
from nn.optim import OPTIMIZERS, SCHEDULES

DEFAULTS = dict(hidden=[256, 128], activation="relu", optimizer="adam", lr=1e-3, momentum=0.9,
                batch_size=128, epochs=15, l2=0.0, dropout=0.1, schedule="cosine",
                val_size=5000, seed=0)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse prints the usage too)
        self.exit(2, f"train.py: error: {message}\n")


def _val_size(text):
    value = float(text)
    return value if value < 1 else int(value)


def parse_args(argv=None):
    p = _Parser(description="Train a neural network on MNIST (NumPy only).",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = DEFAULTS
    p.add_argument("--hidden", type=int, nargs="*", default=d["hidden"], metavar="WIDTH",
                   help="widths of the hidden layers (none: logistic regression)")
    p.add_argument("--activation", default=d["activation"], choices=sorted(nn.ACTIVATIONS))
    p.add_argument("--optimizer", default=d["optimizer"], choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=d["lr"], help="learning rate")
    p.add_argument("--momentum", type=float, default=d["momentum"], help="for --optimizer momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument("--l2", type=float, default=d["l2"], help="L2 weight decay")
    p.add_argument("--dropout", type=float, default=d["dropout"], help="dropout after each hidden layer")
    p.add_argument("--schedule", default=d["schedule"], choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--val-size", type=_val_size, default=None,
                   help=f"validation hold-out: a fraction (<1) or a count "
                        f"(default: {d['val_size']}, or 10%% with --limit)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_DATA or data/mnist)")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--out", default="weights/default.npz", help="where to write the model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if any(w < 1 for w in args.hidden):
        p.error(f"--hidden: every width must be at least 1, got {args.hidden}")
    if args.limit is not None and args.limit < 10:
        p.error(f"--limit must be at least 10, got {args.limit}")
    out = Path(args.out)
    if out.suffix != ".npz":
        p.error(f"--out must end in .npz, got {args.out}")
    if not out.parent.is_dir():
        p.error(f"--out: folder {out.parent} does not exist")
    return p, args


class ProgressBar(nn.Callback):
    """A tqdm bar per epoch with the running loss, and a summary line per epoch."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.bar = None

    def on_batch_end(self, info):
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info["batches_per_epoch"], desc=f"epoch {info['epoch']}",
                            unit="batch", leave=False, file=sys.stderr)
        self.bar.update(1)
        if info["batch"] % 20 == 0:
            self.bar.set_postfix(loss=f"{info['loss']:.4f}")

    def on_epoch_end(self, r):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        val = (f"  val loss {r['val_loss']:.4f}  val acc {100 * r['val_acc']:.2f}%"
               if r["val_loss"] is not None else "")
        print(f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f}  "
              f"train acc {100 * r['train_acc']:.2f}%{val}  lr {r['lr']:.2g}  {r['seconds']:.1f}s",
              flush=True)


def format_report(metrics):
    """The test report as text: accuracy, per-class table, confusion matrix."""
    pc = metrics["per_class"]
    lines = [f"test accuracy {100 * metrics['accuracy']:.2f}%  (loss {metrics['loss']:.4f}, "
             f"{metrics['n']} images)", "",
             f"{'digit':>7} {'precision':>10} {'recall':>8} {'f1':>8} {'support':>8}"]
    for k in range(len(pc["f1"])):
        lines.append(f"{k:>7} {pc['precision'][k]:>10.4f} {pc['recall'][k]:>8.4f} "
                     f"{pc['f1'][k]:>8.4f} {pc['support'][k]:>8d}")
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        lines.append(f"{avg:>7} {m['precision']:>10.4f} {m['recall']:>8.4f} {m['f1']:>8.4f} "
                     f"{metrics['n']:>8d}")
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "      " + "".join(f"{j:>6}" for j in range(10))]
    for i, row in enumerate(metrics["confusion_matrix"]):
        lines.append(f"{i:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def write_outputs(model, out):
    """The model, a JSON copy of its history and metrics, and PNG plots, all beside each other."""
    import plots

    model.save(out)
    report = {"architecture": model.describe(), "config": model.config,
              "hyperparams": model.hyperparams, "train_seconds": model.train_seconds,
              "history": model.history, "metrics": model.metrics}
    json_path = out.with_suffix(".json")
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, json_path)
    figures = {"curves": plots.training_curves(model.history, title=model.describe()),
               "confusion": plots.confusion_matrix_figure(model.metrics["confusion_matrix"])}
    paths = []
    for name, fig in figures.items():
        path = out.with_name(f"{out.stem}_{name}.png")
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
        paths.append(path)
    return [out, json_path, *paths]


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        model = nn.Network(hidden=args.hidden, activation=args.activation,
                           dropout=args.dropout, seed=args.seed)
        # Build the optimizer once here only to validate its settings before loading data.
        nn.make_optimizer(args.optimizer, model.parameters(), lr=args.lr, momentum=args.momentum,
                          nesterov=args.nesterov, weight_decay=args.l2)
        if not 1 <= args.epochs <= nn.training.MAX_EPOCHS:
            raise ValueError(f"--epochs must be in [1, {nn.training.MAX_EPOCHS}], got {args.epochs}")
        if not 1 <= args.batch_size <= nn.training.MAX_BATCH_SIZE:
            raise ValueError(f"--batch-size must be in [1, {nn.training.MAX_BATCH_SIZE}], got {args.batch_size}")
    except ValueError as e:
        parser.error(str(e))

    try:
        (X, y), (X_test, y_test) = nn.data.load_mnist(
            args.data, download=not args.no_download,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except DataError as e:
        parser.error(str(e).replace("\n", " "))
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
    if args.val_size is None:
        args.val_size = 0.1 if args.limit else DEFAULTS["val_size"]

    print(f"training {model.describe()} ({model.n_parameters:,} parameters) on {len(X):,} images "
          f"with {args.optimizer}, lr {args.lr:g}, batch {args.batch_size}, {args.epochs} epochs",
          flush=True)
    start = time.perf_counter()
    try:
        nn.fit(model, X, y, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
               nesterov=args.nesterov, l2=args.l2, epochs=args.epochs, batch_size=args.batch_size,
               val_size=args.val_size, schedule=args.schedule, seed=args.seed,
               callbacks=[ProgressBar(args.quiet)])
    except ValueError as e:  # e.g. a batch larger than the data, a bad --val-size
        parser.error(str(e))
    except nn.TrainingDiverged as e:
        print(f"train.py: error: {e}; nothing written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; nothing written", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    model.hyperparams["limit"] = args.limit
    model.metrics = model.evaluate(X_test, y_test)
    print()
    print(format_report(model.metrics))
    written = write_outputs(model, Path(args.out))
    print(f"\ntrained in {model.train_seconds:.1f}s ({wall:.1f}s wall, with validation); wrote "
          + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
