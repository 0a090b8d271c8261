"""Train a Digit Lab network on MNIST and write it to weights/.

    python train.py                                  # reproduces weights/default.npz (a CNN)
    python train.py --preset mlp --out weights/mlp.npz          # reproduces weights/mlp.npz
    python train.py --conv 8 16 --kernel 5 --hidden 64 --epochs 3 --out weights/small.npz
    python train.py --preset plain --hidden 128 64 --n-images 5000 --epochs 3 --out /tmp/quick.npz

Every option is a setting of ``nn.Recipe`` (its help text comes from there);
``--preset`` picks the recipe they start from (``default``: the shipped CNN;
``mlp``: the shipped MLP; ``quick``: the app's Retrain tab; ``plain``:
``nn.Recipe()``, no augmentation). Prints a progress bar per epoch, a line per
epoch and the test report; writes the model (.npz) and a JSON copy of its
history and evaluation beside it.
A bad argument prints one line and exits with status 2, writing nothing.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import nn
from nn.data import DataError
from nn.recipe import PRESETS, SETTINGS

PRESET_NAMES = {**PRESETS, "plain": nn.Recipe()}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse prints the usage too)
        self.exit(2, f"train.py: error: {message}\n")


def _val_size(text):
    value = float(text)
    return value if value < 1 else int(value)


def _option_type(name, default):
    if name == "val_size":
        return dict(type=_val_size)
    if isinstance(default, bool):
        return dict(action=argparse.BooleanOptionalAction)
    if isinstance(default, tuple):
        return dict(type=int, nargs="*", metavar="N")
    if isinstance(default, str):
        return dict(choices=SETTINGS[name].choices)
    return dict(type=type(default))


def parse_args(argv=None):
    p = _Parser(description="Train a neural network on MNIST (NumPy only). Every setting "
                            "starts from --preset and can be changed by its option.")
    p.add_argument("--preset", default="default", choices=sorted(PRESET_NAMES),
                   help="the recipe to start from (default: the shipped CNN)")
    groups = {}
    for field in dataclasses.fields(nn.Recipe):
        s = SETTINGS[field.name]
        group = groups.setdefault(s.group, p.add_argument_group(s.group))
        defaults = {name: getattr(r, field.name) for name, r in PRESET_NAMES.items()}
        shown = ", ".join(f"{name}: {_show(v)}" for name, v in defaults.items())
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                           help=f"{s.label}. {s.help} ({shown})",
                           **_option_type(field.name, field.default))
    p.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_DATA or data/mnist)")
    p.add_argument("--no-download", action="store_true", help="never download MNIST")
    p.add_argument("--out", default="weights/default.npz", help="where to write the model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(nn.Recipe)
               if getattr(args, f.name) is not None}
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    try:
        recipe = PRESET_NAMES[args.preset].replace(**changes).check()
    except ValueError as e:
        p.error(str(e))
    out = Path(args.out)
    if out.suffix != ".npz":
        p.error(f"--out must end in .npz, got {args.out}")
    if not out.parent.is_dir():
        p.error(f"--out: folder {out.parent} does not exist")
    return p, args, recipe


def _show(v):
    if isinstance(v, tuple):
        return " ".join(map(str, v)) or "none"
    return f"{v:g}" if isinstance(v, float) else str(v)


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
    """The model and, beside it, a JSON copy of its history and evaluation."""
    nn.save(model, out)
    report = {"architecture": model.describe(), "spec": model.spec, "recipe": model.recipe,
              "trained_on": model.trained_on, "train_seconds": model.train_seconds,
              "history": model.history, "metrics": model.metrics}
    json_path = out.with_suffix(".json")
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, json_path)
    return [out, json_path]


def main(argv=None):
    parser, args, recipe = parse_args(argv)
    try:
        data = nn.data.load_mnist(args.data, download=not args.no_download,
                                  progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except DataError as e:
        parser.error(str(e).replace("\n", " "))
    model = nn.Network(recipe.spec(), seed=recipe.seed)
    n = min(recipe.n_images, len(data[0][0]))
    changed = ", ".join(f"{name} {_show(new)}" for name, _, new in
                        nn.Recipe().differences(recipe)) or "plain defaults"
    print(f"training {model.describe()} ({model.n_parameters:,} parameters) on {n:,} images: "
          f"{changed}", flush=True)
    start = time.perf_counter()
    try:
        model = nn.train(recipe, data, callbacks=[ProgressBar(args.quiet)])
    except ValueError as e:  # e.g. a batch larger than the data
        parser.error(str(e))
    except nn.TrainingDiverged as e:
        print(f"train.py: error: {e}; nothing written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; nothing written", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    print()
    print(format_report(model.metrics))
    written = write_outputs(model, Path(args.out))
    print(f"\ntrained in {model.train_seconds:.1f}s ({wall:.1f}s wall, with validation and "
          f"the test evaluation); wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
