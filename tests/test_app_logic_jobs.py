"""app_logic.jobs: trainings in a background thread, one per visitor, bounded per server.

Real trainings are tiny (500 images, an 8-unit MLP); where training itself is
not what is tested, ``nn.train`` is replaced by a stand-in that returns at
once or waits for the test to let it finish (no sleeps, no clocks). Stops are
caused, not waited for: a pressed Stop button, a time limit already passed,
a last poll long ago.
"""

import threading
import time
import types

import numpy as np
import pytest

import nn
from app_logic import jobs

# A recipe that trains in a blink: 450 training and 50 validation images, 9 batches an epoch.
TINY = nn.Recipe(hidden=(8,), epochs=2, n_images=500, batch_size=50, lr=0.01, seed=3)
JOIN_S = 120      # generous: only reached if a job hangs


class Release:
    """A ``release`` callback that counts its calls."""

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def __call__(self):
        self.calls += 1
        if self.fail:
            raise RuntimeError("release failed")


def finish(job):
    job.start()
    job.join(JOIN_S)
    assert not job.running, "the job did not end"
    return job


def fake_trained(val_acc=0.9, epochs=1, test_acc=None):
    """A small network that looks trained: ``epochs`` history records ending at
    ``val_acc`` and a 10-class test report."""
    model = nn.Network(nn.mlp_spec((4,)), seed=0)
    model.history = [{"epoch": e, "train_loss": 0.5, "train_acc": val_acc, "val_loss": 0.5,
                      "val_acc": val_acc, "seconds": 0.01, "lr": 0.001}
                     for e in range(1, epochs + 1)]
    y = np.arange(100) % 10
    pred = np.where(np.arange(100) < round(100 * (val_acc if test_acc is None else test_acc)),
                    y, (y + 1) % 10)
    model.metrics = nn.metrics.classification_report(y, pred)
    model.train_seconds = 0.5
    return model


# ---------------------------------------------------------------- one job, really trained

@pytest.fixture(scope="module")
def trained_job(mnist):
    release = Release()
    job = finish(jobs.TrainingJob(TINY, mnist, release))
    return job, release


def test_a_job_trains_evaluates_and_releases_once(trained_job, mnist):
    job, release = trained_job
    assert job.outcome == "done" and job.error is None and job.stop_reason is None
    assert release.calls == 1
    model = job.model
    assert model.describe() == nn.Network(TINY.spec()).describe()
    assert model.trained_on == {"n_train": 450, "n_val": 50}
    assert model.metrics["n"] == len(mnist[1][1])              # evaluated on the test set
    assert job.accuracy == model.history[-1]["val_acc"] > jobs.CHANCE_ACCURACY
    assert job.fraction_done == 1.0
    assert job.progress_text().startswith("Epoch 2 of 2, batch 9 of 9 · ")
    assert job._mnist is None   # the job lets go of the data set
    (X, _), _ = mnist
    assert not X.flags.writeable  # the shared arrays were only read


def test_a_job_slices_the_training_set_without_copying(mnist, monkeypatch):
    seen = {}

    def fake_fit(model, X, y, recipe, **kwargs):
        seen["X"], seen["y"] = X, y
        return []

    monkeypatch.setattr(nn.training, "fit", fake_fit)
    job = finish(jobs.TrainingJob(TINY, mnist))
    (X, y), _ = mnist
    assert seen["X"].shape == (TINY.n_images, 784) and np.shares_memory(seen["X"], X)
    assert np.shares_memory(seen["y"], y)
    assert job.outcome == "stopped"        # nothing trained: no network to keep


def test_records_follow_the_epochs(trained_job):
    job, _ = trained_job
    assert [r["epoch"] for r in job.records] == [1, 2]
    assert job.records == job.model.history
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert all(key in r for r in job.records)


def test_frames_show_the_first_layer_before_and_after_each_epoch(trained_job):
    job, _ = trained_job
    assert len(job.frames) == TINY.epochs + 1
    untrained = nn.Network(TINY.spec(), seed=TINY.seed)
    np.testing.assert_array_equal(job.frames[0], jobs.first_layer_weights(untrained))
    np.testing.assert_array_equal(job.frames[-1], jobs.first_layer_weights(job.model))
    w = job.model.param_layers[0].weight.value     # (784, 8)
    np.testing.assert_array_equal(job.frames[-1], w.T.reshape(8, 28, 28))
    assert job.frames[0].shape == (8, 28, 28) and job.frames[0].dtype == np.float32
    assert not np.array_equal(job.frames[0], job.frames[1])   # training changed them
    assert not np.array_equal(job.frames[1], job.frames[2])


def test_first_layer_weights_of_other_networks():
    wide = nn.Network(nn.mlp_spec((64,)), seed=0)
    frames = jobs.first_layer_weights(wide)
    assert frames.shape == (jobs.FRAME_UNITS, 28, 28)
    np.testing.assert_array_equal(frames[5], wide.param_layers[0].W[:, 5].reshape(28, 28))
    cnn = nn.Network(nn.cnn_spec((6, 8), 3, (16,)), seed=0)
    filters = jobs.first_layer_weights(cnn)
    assert filters.shape == (6, 3, 3)
    np.testing.assert_array_equal(filters, cnn.param_layers[0].weight.value[:, 0])
    odd = nn.Network(nn.mlp_spec((4,), n_inputs=300), seed=0)   # not a square image
    assert jobs.first_layer_weights(odd).shape == (4, 1, 300)
    # Copies: the film does not change when training goes on.
    frames[0, 0, 0] += 1
    assert frames[0, 0, 0] != wide.param_layers[0].W[0, 0]


# ---------------------------------------------------------------- stops

def test_stop_button(mnist):
    release = Release()
    job = jobs.TrainingJob(TINY, mnist, release)
    job.stop_event.set()            # pressed before the first batch ends
    finish(job)
    assert job.stop_reason == "button" and job.outcome == "stopped"
    assert job.model is None and job.records == [] and len(job.frames) == 1
    assert job.accuracy is None and release.calls == 1
    assert jobs.finished_message(job) == ("info", (
        "Training stopped before the first epoch finished, so there is no new network; the "
        "active network is unchanged."))


def test_time_limit(mnist):
    release = Release()
    job = finish(jobs.TrainingJob(TINY, mnist, release, max_seconds=0))
    assert job.stop_reason == "time" and job.outcome == "stopped" and release.calls == 1


def test_no_page_watching_stops_the_job(mnist):
    release = Release()
    job = jobs.TrainingJob(TINY, mnist, release, heartbeat_timeout=60)
    job.last_seen -= 3600          # the last poll was an hour ago: every tab was closed
    finish(job)
    assert job.stop_reason == "abandoned" and job.outcome == "stopped" and release.calls == 1


def test_polls_keep_a_job_alive():
    job = jobs.TrainingJob(TINY, None, heartbeat_timeout=60)
    job.last_seen -= 3600
    job.touch()                    # a page polled just now
    assert not job.should_stop(0.0) and job.stop_reason is None
    assert job.should_stop(job.max_seconds + 1) and job.stop_reason == "time"
    job.stop_event.set()
    assert job.should_stop(0.0) and job.stop_reason == "time"   # the first reason stays


def test_the_limits_are_read_when_a_job_is_made(monkeypatch):
    monkeypatch.setattr(jobs, "MAX_TRAIN_SECONDS", 7)
    monkeypatch.setattr(jobs, "HEARTBEAT_TIMEOUT", 3)
    job = jobs.TrainingJob(TINY, None)
    assert (job.max_seconds, job.heartbeat_timeout) == (7, 3)


def test_a_stop_after_an_epoch_keeps_that_epoch(mnist, monkeypatch):
    """The time limit passes during epoch 1 of 2: the run ends with epoch 1's network,
    a usable result."""
    real = jobs._Watch.on_epoch_end

    def limit_passes(self, record):
        self.job.max_seconds = -1
        return real(self, record)

    monkeypatch.setattr(jobs._Watch, "on_epoch_end", limit_passes)
    release = Release()
    job = finish(jobs.TrainingJob(TINY, mnist, release))
    assert job.stop_reason == "time" and job.outcome == "done" and release.calls == 1
    assert len(job.model.history) == len(job.records) == 1 and len(job.frames) == 2
    kind, text = jobs.finished_message(job)
    assert kind == "success" and "after epoch 1 of 2; the weights of that epoch are kept)" in text


# ---------------------------------------------------------------- outcomes

def diverge(recipe, data, callbacks=()):
    raise nn.TrainingDiverged("training diverged in epoch 2 (loss became inf); try a smaller "
                              "learning rate than 0.5", [])


def fail(recipe, data, callbacks=()):
    raise KeyError("oops")


def near_chance(recipe, data, callbacks=()):
    return fake_trained(val_acc=0.11)


def nothing_finished(recipe, data, callbacks=()):
    return nn.Network(recipe.spec(), seed=0)  # no history: stopped in epoch 1


def fine(recipe, data, callbacks=()):
    return fake_trained(val_acc=0.9)


@pytest.mark.parametrize("train, outcome", [(fine, "done"), (near_chance, "chance"),
                                            (nothing_finished, "stopped"),
                                            (diverge, "diverged"), (fail, "failed")])
def test_every_outcome_releases_exactly_once(monkeypatch, train, outcome):
    monkeypatch.setattr(nn, "train", train)
    release = Release()
    job = finish(jobs.TrainingJob(TINY, ((None, None), (None, None)), release))
    assert job.outcome == outcome and release.calls == 1 and job.finished is not None
    assert (job.model is not None) == (outcome in ("done", "chance"))
    assert (job.error is not None) == (outcome in ("diverged", "failed"))


def test_a_failing_release_still_ends_the_job(monkeypatch):
    monkeypatch.setattr(nn, "train", fine)
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    release = Release(fail=True)
    job = finish(jobs.TrainingJob(TINY, None, release))
    assert release.calls == 1 and not job.running and job.outcome == "done"
    assert [str(e) for e in seen] == ["release failed"]


def test_failures_are_reported(monkeypatch, caplog):
    monkeypatch.setattr(nn, "train", diverge)
    job = finish(jobs.TrainingJob(TINY, None))
    assert jobs.finished_message(job) == ("error", (
        "Training diverged in epoch 2 (loss became inf); try a smaller learning rate than 0.5. "
        "The active network is unchanged."))
    monkeypatch.setattr(nn, "train", fail)
    job = finish(jobs.TrainingJob(TINY, None))
    assert job.error == "KeyError: 'oops'"
    assert jobs.finished_message(job) == (
        "error", "Training failed (KeyError: 'oops'). The active network is unchanged.")
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_near_chance_result_is_flagged(monkeypatch):
    monkeypatch.setattr(nn, "train", near_chance)
    job = finish(jobs.TrainingJob(TINY.replace(lr=1.0, optimizer="sgd"), None))
    assert job.outcome == "chance" and job.accuracy < jobs.CHANCE_ACCURACY
    kind, text = jobs.finished_message(job)
    assert kind == "warning"
    assert "no better than guessing (10%)" in text
    assert "the learning rate (1) is too high for the “sgd” optimizer" in text
    assert text.endswith("This network was not activated: the active network is unchanged.")


# ---------------------------------------------------------------- messages

def finished_job(**changes):
    """What finished_message reads of a job, made by hand."""
    fields = dict(outcome="done", model=fake_trained(0.9, epochs=1, test_acc=0.89),
                  recipe=TINY.replace(epochs=3), stop_reason=None, elapsed=12.34,
                  max_seconds=600, error=None)
    return types.SimpleNamespace(**{**fields, **changes})


def test_finished_message_texts():
    kind, text = jobs.finished_message(finished_job(recipe=TINY.replace(epochs=1)))
    assert (kind, text) == ("success", (
        "Training finished: validation accuracy 90.00%, test accuracy 89.00% after 1 epoch in "
        "12.3 s. It is now the active network in every tab (for you only) and a new run on the "
        "Runs tab."))
    text = jobs.finished_message(finished_job(stop_reason="abandoned"))[1]
    assert text.startswith(
        "Training finished (stopped because no page was watching it after epoch 1 of 3; the "
        "weights of that epoch are kept): validation accuracy 90.00%, test accuracy 89.00% "
        "after 1 epoch in 12.3 s.")
    assert "(stopped after 10 minutes after epoch 1 of 3;" in jobs.finished_message(
        finished_job(stop_reason="time"))[1]
    assert "Training finished (stopped after epoch 1 of 3;" in jobs.finished_message(
        finished_job(stop_reason="button"))[1]
    # Without a validation split the message gives the test accuracy alone.
    model = fake_trained(0.9, epochs=2, test_acc=0.89)
    for record in model.history:
        record["val_acc"] = None
    text = jobs.finished_message(finished_job(model=model, recipe=TINY))[1]
    assert text.startswith("Training finished: test accuracy 89.00% after 2 epochs in 12.3 s.")


# ---------------------------------------------------------------- the server's trainings

class Gate:
    """Stands in for ``nn.train``: each training waits until the test opens the gate."""

    def __init__(self):
        self.open = threading.Event()
        self.started = threading.Semaphore(0)

    def __call__(self, recipe, data, callbacks=()):
        self.started.release()
        if not self.open.wait(JOIN_S):
            raise AssertionError("the test never let the training finish")
        return fake_trained(0.9)


@pytest.fixture
def gate(monkeypatch):
    gate = Gate()
    monkeypatch.setattr(nn, "train", gate)
    yield gate
    gate.open.set()


def test_one_running_training_per_visitor(gate):
    trainings = jobs.Trainings(limit=2)
    job, problem = trainings.start("alice", TINY, None)
    assert problem is None and job.running
    assert trainings.start("alice", TINY, None) == (
        None, "Your training is still running; stop it before starting another.")
    assert trainings.current("alice") is job
    gate.open.set()
    job.join(JOIN_S)
    # Finished (not yet collected): the visitor may start again.
    again, problem = trainings.start("alice", TINY, None)
    assert problem is None and again is not job
    again.join(JOIN_S)


def test_trainings_are_bounded_server_wide(gate):
    trainings = jobs.Trainings(limit=2)
    a, _ = trainings.start("alice", TINY, None)
    b, _ = trainings.start("bob", TINY, None)
    assert trainings.running == 2
    assert trainings.start("carol", TINY, None) == (None, (
        "2 other trainings are running on this server right now; please try again in a "
        "minute."))
    assert trainings.current("carol") is None
    gate.open.set()
    a.join(JOIN_S), b.join(JOIN_S)
    assert trainings.running == 0
    c, problem = trainings.start("carol", TINY, None)
    assert problem is None
    c.join(JOIN_S)


def test_a_reloaded_page_finds_its_job_and_collects_it_once(gate):
    trainings = jobs.Trainings()
    job, _ = trainings.start("alice", TINY, None)
    assert gate.started.acquire(timeout=JOIN_S)
    # The page is reloaded: a new session asks by visitor and re-attaches.
    assert trainings.current("alice") is job and job.running
    assert trainings.current("bob") is None
    assert trainings.collect("alice", set()) is None   # still running: nothing to take
    assert trainings.current("alice") is job
    gate.open.set()
    job.join(JOIN_S)
    assert trainings.current("alice") is job            # finished, waiting to be collected
    page = set()
    assert trainings.collect("alice", page) is job and job.outcome == "done"
    assert page == {job.id}
    assert trainings.collect("alice", page) is None     # once per page
    assert trainings.current("alice", page) is None
    assert trainings.collect("nobody", set()) is None


def test_the_old_page_taking_the_result_during_a_reload_does_not_lose_it(gate):
    """The training ends while the page reloads: the dying old page's last rerun takes
    the result first; the reloaded page must still get it."""
    trainings = jobs.Trainings()
    job, _ = trainings.start("alice", TINY, None)
    assert gate.started.acquire(timeout=JOIN_S)
    gate.open.set()
    job.join(JOIN_S)
    old_page, new_page = set(), set()
    assert trainings.collect("alice", old_page) is job
    assert trainings.current("alice", new_page) is job
    assert trainings.collect("alice", new_page) is job
    assert trainings.collect("alice", new_page) is None and trainings.collect("alice", old_page) is None


def test_a_page_opened_later_does_not_get_an_old_result(gate, monkeypatch):
    trainings = jobs.Trainings()
    job, _ = trainings.start("alice", TINY, None)
    assert gate.started.acquire(timeout=JOIN_S)
    gate.open.set()
    job.join(JOIN_S)
    assert trainings.collect("alice", set()) is job
    later = time.monotonic() + jobs.RELOAD_GRACE_S + 1
    monkeypatch.setattr(jobs, "time", types.SimpleNamespace(monotonic=lambda: later))
    assert trainings.current("alice", set()) is None
    assert trainings.collect("alice", set()) is None


def test_uncollected_results_are_dropped_after_a_while(gate, monkeypatch):
    trainings = jobs.Trainings()
    gate.open.set()
    job, _ = trainings.start("alice", TINY, None)
    job.join(JOIN_S)
    trainings.start("bob", TINY, None)[0].join(JOIN_S)
    assert trainings.current("alice") is job
    monkeypatch.setattr(jobs, "COLLECT_AFTER_S", -1)   # "an hour later"
    trainings.start("carol", TINY, None)[0].join(JOIN_S)   # any start tidies up
    assert trainings.current("alice") is None and trainings.current("bob") is None
