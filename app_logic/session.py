"""Which network a browser session is using, and what finished work changes.

A session picks its *active network* among: the shipped networks, the saved
ones (``app_logic.library``) and its own runs (``app_logic.runs``). Choices
are strings: ``"file:<name>"`` or ``"run:<id>"``. ``resolve`` turns a choice
into an ``ActiveNetwork``, falling back (to the last choice that worked, then
the shipped default, then the shipped MLP) when a file has gone or turned bad,
and says so.

``collect_training`` and ``record_teaching`` are the only places where a
finished training or teaching enters the session: as a new run that becomes
the active network.
"""

from dataclasses import dataclass

import nn

from . import jobs, library

__all__ = ["ActiveNetwork", "DEFAULT_CHOICE", "choices", "resolve", "resolve_with_fallback",
           "collect_training", "record_teaching", "file_choice", "run_choice"]

DEFAULT_CHOICE = "file:default"
FALLBACKS = ("file:default", "file:mlp")


@dataclass(frozen=True)
class ActiveNetwork:
    """The network every tab shows: the sidebar ``choice``, a ``key`` that identifies
    it for caches (file path, modification time and size, or a run's identity),
    the ``nn.Network`` itself and a ``label`` for people."""
    choice: str
    key: str
    model: nn.Network
    label: str


def file_choice(name):
    return f"file:{name}"


def run_choice(run_id):
    return f"run:{run_id}"


def choices(runs, saved):
    """``{choice: label}`` for the sidebar: shipped networks, saved ones, then this
    session's runs that still hold their network (newest first)."""
    out = {file_choice("default"): "default: the shipped CNN",
           file_choice("mlp"): "mlp: the shipped multi-layer perceptron"}
    out.update({file_choice(name): f"{name} (saved)" for name in saved})
    for run in reversed(runs.runs):
        if run.model is not None:
            out[run_choice(run.id)] = runs.label(run)
    return out


def resolve(choice, runs, load=library.load_checked):
    """``(ActiveNetwork or None, error message or None)`` for one choice.

    ``load(path)`` returns ``(network, cache key)`` and may raise ``OSError`` or
    ``nn.ModelFileError``."""
    kind, _, what = str(choice).partition(":")
    if kind == "run":
        run = runs.get(int(what)) if what.isascii() and what.isdigit() else None
        if run is None or run.model is None:
            return None, "That run's network is no longer kept in this session."
        return ActiveNetwork(choice, run.key, run.model, runs.label(run)), None
    if kind != "file":
        return None, f"Unknown network {choice!r}."
    try:
        path = library.network_file(what)
        model, key = load(path)
    except ValueError as e:  # also nn.ModelFileError
        return None, str(e)
    except FileNotFoundError:
        hint = " Run `python train.py` to create it." if what == "default" else ""
        return None, f"{what}.npz was not found.{hint}"
    except OSError as e:
        return None, f"{what}.npz could not be read ({e.strerror or e})."
    return ActiveNetwork(choice, key, model, what), None


def resolve_with_fallback(choice, runs, last_good=None, load=library.load_checked):
    """Resolve ``choice``; if that fails, the first of ``last_good`` and the shipped
    networks that works. Returns ``(ActiveNetwork or None, error or None)``: the
    error (why ``choice`` failed) comes with the network used instead."""
    active, error = resolve(choice, runs, load)
    if active is not None:
        return active, None
    for other in (last_good, *FALLBACKS):
        if other and other != choice:
            fallback, _ = resolve(other, runs, load)
            if fallback is not None:
                return fallback, error
    return None, error


def collect_training(trainings, visitor, runs, active_choice, collected):
    """Take the visitor's finished training, if any, into the session.

    ``collected``: the ids of the trainings this session took already (a set, added
    to). Returns ``(new active choice, message)``; ``(active_choice, None)`` when there
    was nothing to collect. A usable result ("done") becomes a run and the active
    network; a stopped, failed, diverged or near-chance run changes nothing but
    the message.
    """
    job = trainings.collect(visitor, collected)
    if job is None:
        return active_choice, None
    message = jobs.finished_message(job)
    if job.outcome != "done":
        return active_choice, message
    run = runs.add("training", job.model.describe(), job.model, job.recipe.to_dict(),
                   frames=job.frames, seconds=job.model.train_seconds,
                   keep={_run_id(active_choice)})
    return run_choice(run.id), message


def record_teaching(result, runs, parent_label, active_choice):
    """A finished teaching (``app_logic.teaching.TeachResult``) as a run that becomes
    the active network; returns the new active choice."""
    name = (f"{parent_label} taught {result.n_examples} drawing"
            f"{'s' * (result.n_examples != 1)}{'' if result.rehearsal else ' (no rehearsal)'}")
    run = runs.add("teaching", name, result.model, result.settings,
                   notes={"before": result.before, "after": result.after},
                   seconds=result.seconds, keep={_run_id(active_choice)})
    return run_choice(run.id)


def _run_id(choice):
    kind, _, what = str(choice).partition(":")
    return int(what) if kind == "run" and what.isascii() and what.isdigit() else None
