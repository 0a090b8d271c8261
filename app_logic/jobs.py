"""Trainings in the background: one ``TrainingJob`` per run, found again by its visitor.

The page must stay responsive while a network trains, so ``nn.train`` runs in
a daemon thread owned by a ``TrainingJob``. The thread never touches the page;
it writes plain attributes that the page reads when it polls:

    job, problem = trainings.start(visitor, recipe, mnist)   # one per visitor at a time
    ... job.touch(); job.progress, job.records, job.frames ... (page, while job.running)
    job.outcome, job.model, job.error                       (page, once finished)
    trainings.collect(visitor, collected)                    (each page takes the result once)

``Trainings`` (one per server) owns the jobs by visitor, not by browser tab
or Streamlit session: a page reloaded during a training finds its job again
and shows its progress, and a visitor cannot start a second training while
one runs. It also bounds the trainings running at once on the server.

A run ends by itself after ``max_seconds`` (keeping its finished epochs), when
the visitor presses Stop, or when no page has polled for ``heartbeat_timeout``
seconds (every tab was closed): a run nobody watches should not hold one of
the server's training slots.
"""

import logging
import threading
import time
import uuid
import weakref

import nn

__all__ = ["Trainings", "TrainingJob", "finished_message", "running_jobs", "MAX_CONCURRENT_TRAININGS",
           "MAX_TRAIN_SECONDS", "HEARTBEAT_TIMEOUT", "CHANCE_ACCURACY", "FRAME_UNITS"]

log = logging.getLogger("digitlab")

MAX_CONCURRENT_TRAININGS = 2   # per server: each run keeps a core busy
MAX_TRAIN_SECONDS = 600        # a run is stopped (keeping its finished epochs) after this
HEARTBEAT_TIMEOUT = 90         # s without a poll from any page: nobody is watching, stop.
# (Not less: Chrome slows timers in a tab hidden for 5+ minutes to about one a minute.)
CHANCE_ACCURACY = 0.20         # below this (guessing is 10%) a network has not learned
FRAME_UNITS = 32               # first-layer units (or filters) kept per epoch for the film
COLLECT_AFTER_S = 3600         # a finished job no page collected is dropped after this
RELOAD_GRACE_S = 120           # after the first page took a result, others may for this long
_LIVE = weakref.WeakSet()      # every started job of this process, for running_jobs()


def running_jobs():
    """The trainings running in this process (server shutdown, tests)."""
    return [job for job in list(_LIVE) if job.running]


def first_layer_weights(model, units=FRAME_UNITS):
    """What the first layer looks for, as images: (units, h, w) float32. A dense
    layer's first ``units`` columns as 28x28 pictures, or a convolution's first
    ``units`` filters (their first input channel)."""
    layer = model.param_layers[0]
    w = layer.weight.value
    if w.ndim == 4:
        return w[:units, 0].copy()
    side = int(round(w.shape[0] ** 0.5))
    if side * side != w.shape[0]:
        return w[:, :units].T.reshape(-1, 1, w.shape[0]).copy()
    return w[:, :units].T.reshape(-1, side, side).copy()


class _Watch(nn.Callback):
    """Feeds a ``TrainingJob`` from inside ``nn.fit`` (in the training thread);
    returning True stops training after the current batch."""

    def __init__(self, job):
        self.job = job

    def on_train_begin(self, info):
        self.model = info["model"]
        self.job.frames.append(first_layer_weights(self.model))

    def on_batch_end(self, info):
        self.job.progress = info
        return self.job.should_stop(info["elapsed"])

    def on_epoch_end(self, record):
        self.job.records.append(dict(record))
        self.job.frames.append(first_layer_weights(self.model))
        return self.job.should_stop(time.monotonic() - self.job.started)


class TrainingJob:
    """One training run in a daemon thread.

    ``recipe``: an ``nn.Recipe`` that passed ``check(app=True)``. ``mnist``:
    ``((X_train, y_train), (X_test, y_test))``, only read. ``release``: called
    once when the thread ends, whatever happens (frees the server slot).

    The thread writes ``progress`` (latest batch info), ``records`` (finished
    epochs) and ``frames`` (the first layer's weights before training and after
    each epoch), then ``model``, ``error`` and ``outcome``, and sets
    ``finished`` last. ``outcome`` is one of: "done", "chance" (finished but no
    better than guessing: not to be used), "stopped" (no epoch finished),
    "diverged", "failed". ``stop_reason`` says why a run ended early:
    "button", "time", "abandoned".
    """

    def __init__(self, recipe, mnist, release=lambda: None, *, max_seconds=None,
                 heartbeat_timeout=None):
        self.id = uuid.uuid4().hex
        self.recipe = recipe
        self.stop_event = threading.Event()
        self.records, self.frames = [], []
        self.progress = None
        self.started = time.monotonic()
        self.last_seen = self.started
        self.finished = None
        self.taken = None        # when a page first took the result (Trainings.collect)
        self.model = self.error = self.outcome = self.stop_reason = None
        # None: the module's limits, read now (so that tests can lower them).
        self.max_seconds = MAX_TRAIN_SECONDS if max_seconds is None else max_seconds
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT if heartbeat_timeout is None else heartbeat_timeout
        self._mnist, self._release = mnist, release
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"digitlab-train-{self.id[:8]}")

    def start(self):
        _LIVE.add(self)
        self._thread.start()
        return self

    def join(self, timeout=None):
        """Wait for the thread to end (tests and shutdown; the page never blocks on it)."""
        self._thread.join(timeout)

    def touch(self):
        """A page is still watching (called on every poll)."""
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
            text = (f"Epoch {info['epoch']} of {self.recipe.epochs}, batch {info['batch']} "
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
        try:
            model = nn.train(self.recipe, self._mnist, callbacks=[_Watch(self)])
            if not model.history:
                self.outcome = "stopped"
            else:
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
                self._release()
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


class Trainings:
    """The server's trainings: at most ``limit`` running at once, one per visitor,
    each found again by its visitor until the page collects its result.

    One instance per server (the app keeps it in ``st.cache_resource``).
    """

    def __init__(self, limit=MAX_CONCURRENT_TRAININGS):
        self.limit = limit
        self._lock = threading.Lock()
        self._jobs = {}          # visitor -> TrainingJob (running, or finished: its result)

    @property
    def running(self):
        with self._lock:
            return sum(job.running for job in self._jobs.values())

    def start(self, visitor, recipe, mnist, **job_options):
        """``(job, None)`` for a started training, or ``(None, why not)``."""
        with self._lock:
            self._forget_old()
            current = self._jobs.get(visitor)
            if current is not None and current.running:
                return None, "Your training is still running; stop it before starting another."
            busy = sum(job.running for job in self._jobs.values())
            if busy >= self.limit:
                return None, (f"{busy} other trainings are running on this server right now; "
                              "please try again in a minute.")
            job = TrainingJob(recipe, mnist, **job_options)
            self._jobs[visitor] = job
        return job.start(), None

    @staticmethod
    def _takeable(job, collected, now):
        return job.id not in collected and (job.taken is None or now - job.taken <= RELOAD_GRACE_S)

    def current(self, visitor, collected=()):
        """The visitor's job, running, or finished with a result this session may still
        take (see ``collect``); otherwise None."""
        with self._lock:
            job = self._jobs.get(visitor)
            if job is not None and not job.running and \
                    not self._takeable(job, collected, time.monotonic()):
                return None
            return job

    def collect(self, visitor, collected):
        """The visitor's finished job, for a session that has not taken it yet (its id
        is not in ``collected``, the session's set, which this adds it to); None while
        it runs, when there is none, or when this session took it already.

        The first page to ask takes it. Other pages of the visitor may take it too
        for ``RELOAD_GRACE_S`` after that: a page reloaded just as the training ends
        must get the result even when the dying old page took it first. A page opened
        later does not get an old result. A new training replaces the job, and an
        hour after it finished it is dropped."""
        with self._lock:
            job = self._jobs.get(visitor)
            now = time.monotonic()
            if job is None or job.running or not self._takeable(job, collected, now):
                return None
            if job.taken is None:
                job.taken = now
            collected.add(job.id)
            return job

    def _forget_old(self):
        now = time.monotonic()
        for visitor, job in list(self._jobs.items()):
            if not job.running and now - job.finished > COLLECT_AFTER_S:
                del self._jobs[visitor]


def finished_message(job):
    """``(kind, text)`` describing a finished job; kind is "success", "info",
    "warning" or "error" (the st.* call the page uses)."""
    r = job.recipe
    if job.outcome in ("done", "chance"):
        h = job.model.history
        val = h[-1]["val_acc"]
        parts = [f"validation accuracy {val:.2%}" if val is not None else None,
                 f"test accuracy {job.model.metrics['accuracy']:.2%}"]
        why = {"time": f" (stopped after {job.max_seconds // 60} minutes",
               "abandoned": " (stopped because no page was watching it"}.get(
            job.stop_reason, " (stopped")
        stopped = (f"{why} after epoch {len(h)} of {r.epochs}; the weights of that epoch "
                   f"are kept)" if len(h) < r.epochs else "")
        summary = (f"Training finished{stopped}: " + ", ".join(p for p in parts if p)
                   + f" after {len(h)} epoch{'s' * (len(h) != 1)} in {job.elapsed:.1f} s.")
        if job.outcome == "chance":
            return "warning", (
                f"{summary} That is no better than guessing (10%): the network did not learn. "
                f"Most often the learning rate ({r.lr:g}) is too high for the "
                f"“{r.optimizer}” optimizer; try a smaller one (e.g. 0.001 with adam). "
                "This network was not activated: the active network is unchanged.")
        return "success", (f"{summary} It is now the active network in every tab (for you "
                           "only) and a new run on the Runs tab.")
    if job.outcome == "stopped":
        return "info", ("Training stopped before the first epoch finished, so there is no new "
                        "network; the active network is unchanged.")
    if job.outcome == "diverged":
        return "error", f"{job.error[:1].upper()}{job.error[1:]}. The active network is unchanged."
    return "error", f"Training failed ({job.error}). The active network is unchanged."
