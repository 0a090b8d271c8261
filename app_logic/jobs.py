"""Training in the background: one ``TrainingJob`` per run, at most a few at once.

The page must stay responsive while a network trains, so ``nn.fit`` runs in
a daemon thread owned by a ``TrainingJob``. The thread never touches the page;
it writes plain attributes that the page reads when it polls (twice a second):

    job = TrainingJob(settings, mnist, slots)   # slots.try_acquire() succeeded
    job.start()
    ... job.touch(); job.progress, job.records ... (page, while job.running)
    job.outcome, job.model, job.error            (page, once job.finished is set)

A run ends by itself after ``max_seconds`` (keeping its finished epochs), when
the page presses Stop (``stop_event``), or when the page has stopped polling
for ``heartbeat_timeout`` seconds (the browser tab was closed): a run nobody
watches should not hold one of the server's training slots.
"""

import logging
import threading
import time
import uuid

import nn

from .settings import VAL_FRACTION

__all__ = ["TrainingSlots", "TrainingJob", "finished_message", "MAX_CONCURRENT_TRAININGS",
           "MAX_TRAIN_SECONDS", "HEARTBEAT_TIMEOUT", "CHANCE_ACCURACY"]

log = logging.getLogger("digitlab")

MAX_CONCURRENT_TRAININGS = 2   # per server: each run keeps a core busy
MAX_TRAIN_SECONDS = 600        # a run is stopped (keeping its finished epochs) after this
HEARTBEAT_TIMEOUT = 90         # s without a poll from the page: nobody is watching, stop.
# (Not less: Chrome slows timers in a tab hidden for 5+ minutes to about one a minute.)
CHANCE_ACCURACY = 0.20         # below this (guessing is 10%) a network has not learned


class TrainingSlots:
    """At most ``n`` trainings at once on this server: a bounded semaphore plus a
    count of the running ones (for the "N other trainings are running" message).

    One instance per server (the app keeps it in ``st.cache_resource``).
    """

    def __init__(self, n=MAX_CONCURRENT_TRAININGS):
        self._semaphore = threading.BoundedSemaphore(n)
        self._lock = threading.Lock()
        self.running = 0

    def try_acquire(self):
        """Take a slot without waiting; False when all are taken."""
        if not self._semaphore.acquire(blocking=False):
            return False
        with self._lock:
            self.running += 1
        return True

    def release(self):
        with self._lock:
            self.running -= 1
        self._semaphore.release()


class _JobCallback(nn.Callback):
    """Feeds a ``TrainingJob`` from inside ``nn.fit`` (runs in the training thread);
    returning True stops training after the current batch."""

    def __init__(self, job):
        self.job = job

    def on_batch_end(self, info):
        self.job.progress = info
        return self.job.should_stop(info["elapsed"])

    def on_epoch_end(self, record):
        self.job.records.append(dict(record))
        return self.job.should_stop(time.monotonic() - self.job.started)


class TrainingJob:
    """One training run in a daemon thread.

    ``settings``: a dict checked by ``app_logic.settings.settings_problem``.
    ``mnist``: ``((X_train, y_train), (X_test, y_test))``, images (n, 784)
    float32, labels (n,) ints. The arrays are only read: the job slices the
    first ``n_images`` rows (a view, no copy; ``nn.fit`` copies its training
    split once). ``slots``: a ``TrainingSlots`` whose slot the caller has
    acquired; the job releases it when the thread ends, whatever happens.

    The thread writes ``progress`` (latest batch info), ``records`` (finished
    epochs), then ``model``, ``error`` and ``outcome``, and sets ``finished``
    last. ``outcome`` is one of:
    "done", "chance" (finished but no better than guessing: not to be used),
    "stopped" (no epoch finished), "diverged", "failed".
    ``stop_reason`` says why a run ended early: "button", "time", "abandoned".
    """

    def __init__(self, settings, mnist, slots, *, max_seconds=None, heartbeat_timeout=None):
        self.id = uuid.uuid4().hex
        self.settings = dict(settings)
        self.stop_event = threading.Event()
        self.records = []
        self.progress = None
        self.started = time.monotonic()
        self.last_seen = self.started
        self.finished = None
        self.model = None
        self.error = None
        self.outcome = None
        self.stop_reason = None
        # None: the module's limits, read now (so that tests can lower them).
        self.max_seconds = MAX_TRAIN_SECONDS if max_seconds is None else max_seconds
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT if heartbeat_timeout is None else heartbeat_timeout
        self._mnist = mnist
        self._slots = slots
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"digitlab-train-{self.id[:8]}")

    def start(self):
        self._thread.start()

    def join(self, timeout=None):
        """Wait for the thread to end (tests and shutdown; the page never blocks on it)."""
        self._thread.join(timeout)

    def touch(self):
        """The page is still watching (called on every poll)."""
        self.last_seen = time.monotonic()

    @property
    def running(self):
        return self.finished is None

    @property
    def elapsed(self):
        return (self.finished or time.monotonic()) - self.started

    @property
    def fraction_done(self):
        """How much of the run is done, 0..1 (by batches)."""
        return min(self.progress["progress"], 1.0) if self.progress else 0.0

    def progress_text(self):
        """One line for the progress bar, e.g. "Epoch 2 of 5, batch 10 of 141 · 12 s
        elapsed · about 20 s left" (the estimate once 2% is done)."""
        info, done, elapsed = self.progress, self.fraction_done, self.elapsed
        text = f"{elapsed:.0f} s elapsed"
        if info:
            text = (f"Epoch {info['epoch']} of {self.settings['epochs']}, batch {info['batch']} "
                    f"of {info['batches_per_epoch']} · " + text)
        if done > 0.02:
            text += f" · about {elapsed * (1 - done) / done:.0f} s left"
        return text

    def should_stop(self, elapsed):
        """True when the run must end now; records why in ``stop_reason``."""
        if self.stop_reason is None:
            if self.stop_event.is_set():
                self.stop_reason = "button"
            elif elapsed > self.max_seconds:
                self.stop_reason = "time"
            elif time.monotonic() - self.last_seen > self.heartbeat_timeout:
                self.stop_reason = "abandoned"
        return self.stop_reason is not None

    def _run(self):
        s = self.settings
        try:
            (X, y), (X_test, y_test) = self._mnist
            n = min(s["n_images"], len(X))
            model = nn.Network(hidden=s["hidden"], activation=s["activation"],
                               dropout=s["dropout"], seed=s["seed"])
            nn.fit(model, X[:n], y[:n], optimizer=s["optimizer"], lr=s["lr"],
                   momentum=s["momentum"], l2=s["l2"], epochs=s["epochs"],
                   batch_size=s["batch_size"], val_size=VAL_FRACTION, seed=s["seed"],
                   callbacks=[_JobCallback(self)])
            if not model.history:
                self.outcome = "stopped"
            else:
                model.hyperparams["limit"] = n
                model.metrics = model.evaluate(X_test, y_test)
                self.model = model
                self.outcome = "chance" if self.accuracy < CHANCE_ACCURACY else "done"
        except nn.TrainingDiverged as e:
            self.error, self.outcome = str(e), "diverged"
        except Exception as e:  # reported on the page; the traceback goes to the log
            log.exception("training job %s failed", self.id)
            self.error, self.outcome = f"{type(e).__name__}: {e}", "failed"
        finally:
            self._mnist = None
            try:
                self._slots.release()
            finally:
                self.finished = time.monotonic()  # last: the page reads the results after this

    @property
    def accuracy(self):
        """The trained network's last validation accuracy (its test accuracy when it
        has no validation split), or None before there is a network."""
        if self.model is None:
            return None
        val = self.model.history[-1].get("val_acc")
        return val if val is not None else self.model.metrics.get("accuracy")


def finished_message(job):
    """``(kind, text)`` describing a finished job; kind is "success", "info",
    "warning" or "error" (the st.* call the page uses)."""
    s = job.settings
    if job.outcome in ("done", "chance"):
        h = job.model.history
        val = h[-1]["val_acc"]
        parts = [f"validation accuracy {val:.2%}" if val is not None else None,
                 f"test accuracy {job.model.metrics['accuracy']:.2%}"]
        why = {"time": f" (stopped after {job.max_seconds // 60} minutes",
               "abandoned": " (stopped because the page stopped checking in"}.get(
            job.stop_reason, " (stopped")
        stopped = (f"{why} after epoch {len(h)} of {s['epochs']}; the weights of that epoch "
                   f"are kept)" if len(h) < s["epochs"] else "")
        summary = (f"Training finished{stopped}: " + ", ".join(p for p in parts if p)
                   + f" after {len(h)} epoch{'s' * (len(h) != 1)} in {job.elapsed:.1f} s.")
        if job.outcome == "chance":
            return "warning", (
                f"{summary} That is no better than guessing (10%): the network did not learn. "
                f"Most often the learning rate ({s['lr']:g}) is too high for the "
                f"“{s['optimizer']}” optimizer; try a smaller one (e.g. 0.001 with adam). "
                "This network was not activated: the active network is unchanged.")
        return "success", (f"{summary} This network is now the active one in every tab (for "
                           "this browser session only); the one it replaces stays selectable in "
                           "the sidebar as “previous network”.")
    if job.outcome == "stopped":
        return "info", ("Training stopped before the first epoch finished, so there is no new "
                        "network; the active network is unchanged.")
    if job.outcome == "diverged":
        return "error", f"{job.error[:1].upper()}{job.error[1:]}. The active network is unchanged."
    return "error", f"Training failed ({job.error}). The active network is unchanged."
