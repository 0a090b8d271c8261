"""A session's run history: every training and every teaching, kept side by side.

"Did a higher learning rate help?" can only be answered with both runs on one
screen. Each finished training or teaching becomes a ``Run``: its settings,
per-epoch curves, test metrics and confusion matrix, and the network itself
(so any run can be made the active network again). ``RunHistory`` keeps them
in order for one browser session and builds what the Runs tab shows: a table
whose differing settings are marked, curves to overlay, two confusion
matrices to compare, and exports (JSON with the curves and metrics, CSV).

Memory: a session keeps at most ``MAX_NETWORKS`` networks (the newest, and
the active one); older runs keep their numbers but not their weights.
"""

import csv
import io
import itertools
import json
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nn.recipe import SETTINGS

__all__ = ["Run", "RunHistory", "confusion_pair", "MAX_RUNS", "MAX_NETWORKS"]

MAX_RUNS = 50
MAX_NETWORKS = 8


@dataclass
class Run:
    """One training or teaching in this session.

    ``kind``: "training" or "teaching"; ``settings``: the recipe as a dict
    (teaching: the fine-tuning settings); ``history``: per-epoch records;
    ``metrics``: the test report (``nn.metrics.classification_report``);
    ``model``: the network, or None once dropped to save memory; ``frames``:
    the first layer's weights before training and after each epoch; ``notes``:
    for a teaching, accuracies before and after on the drawings and on MNIST.
    """
    id: int
    kind: str
    name: str
    settings: dict
    history: list
    metrics: dict
    model: object = None
    frames: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    seconds: float = 0.0

    @property
    def key(self):
        """Cache key of this run's network (figures are cached per network)."""
        return f"run:{id(self)}:{self.id}"

    @property
    def accuracy(self):
        return self.metrics.get("accuracy")


class RunHistory:
    """The runs of one browser session, oldest first (see the module docstring)."""

    def __init__(self):
        self.runs = []
        self._ids = itertools.count(1)

    def __len__(self):
        return len(self.runs)

    def add(self, kind, name, model, settings, *, frames=(), notes=None, seconds=0.0, keep=()):
        """Record a finished run of ``model`` and return it. ``keep``: run ids whose
        networks must not be dropped (the active one)."""
        run = Run(id=next(self._ids), kind=kind, name=name, settings=dict(settings),
                  history=list(model.history), metrics=dict(model.metrics), model=model,
                  frames=list(frames), notes=dict(notes or {}), seconds=float(seconds))
        self.runs.append(run)
        del self.runs[:-MAX_RUNS]
        with_model = [r for r in self.runs if r.model is not None]
        excess = len(with_model) - MAX_NETWORKS
        for old in with_model:  # oldest first; the kept one (the active network) stays
            if excess <= 0:
                break
            if old.id not in keep and old is not run:
                old.model = None
                old.frames = []
                excess -= 1
        return run

    def get(self, run_id):
        return next((r for r in self.runs if r.id == run_id), None)

    def label(self, run):
        """How the page names a run: "Run 3: <what it is>"."""
        return f"Run {run.id}: {run.name}"

    @staticmethod
    def short_label(run):
        """The name charts give a run (their legends are narrow): "Run 3"."""
        return f"Run {run.id}"

    # -- the table ------------------------------------------------------------------------
    def table(self):
        """One row per run: its number, kind, name, test accuracy, time, and every
        setting (human labels as column names). Returns ``(DataFrame, differing)``
        where ``differing`` lists the setting columns whose values are not the same
        in every run (the page highlights them)."""
        rows, names = [], []
        for run in self.runs:
            row = {"run": run.id, "kind": run.kind, "name": run.name,
                   "test accuracy (%)": None if run.accuracy is None else round(100 * run.accuracy, 2),
                   "epochs": len(run.history), "seconds": round(run.seconds, 1)}
            for name, value in run.settings.items():
                label = SETTINGS[name].label if name in SETTINGS else name.replace("_", " ")
                row[label] = _show(value)
                if label not in names:
                    names.append(label)
            rows.append(row)
        frame = pd.DataFrame(rows)
        differing = [c for c in names if c in frame and frame[c].astype(str).nunique(dropna=False) > 1]
        return frame, differing

    def curves(self, run_ids):
        """``[(short label, history)]`` of the chosen runs, for ``figures.curves_chart``."""
        return [(self.short_label(r), r.history) for r in self.runs if r.id in run_ids and r.history]

    # -- exports --------------------------------------------------------------------------
    def export_json(self):
        """Every run's settings, curves and test metrics as JSON text (no weights)."""
        return json.dumps({"runs": [{
            "run": r.id, "kind": r.kind, "name": r.name, "created": r.created, "seconds": r.seconds,
            "settings": r.settings, "history": r.history, "metrics": r.metrics, "notes": r.notes}
            for r in self.runs]}, indent=1, allow_nan=False)

    def export_csv(self):
        """One row per run and epoch: run, name, epoch, the four curves and the run's
        test accuracy, as CSV text."""
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["run", "name", "kind", "epoch", "train_loss", "train_acc", "val_loss",
                    "val_acc", "lr", "test_accuracy"])
        for r in self.runs:
            for rec in r.history or [{}]:
                w.writerow([r.id, r.name, r.kind, rec.get("epoch", ""),
                            *(_csv(rec.get(k)) for k in ("train_loss", "train_acc", "val_loss",
                                                          "val_acc", "lr")),
                            _csv(r.accuracy)])
        return out.getvalue()


def _show(value):
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _csv(v):
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


def confusion_pair(run_a, run_b):
    """The two runs' confusion matrices as (10, 10) int arrays, for a difference map."""
    return (np.asarray(run_a.metrics["confusion_matrix"]),
            np.asarray(run_b.metrics["confusion_matrix"]))
