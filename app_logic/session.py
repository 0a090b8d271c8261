"""Which network a browser session is using, and what a finished training changes.

A session's state is a mutable mapping (``st.session_state`` in the app, a
plain dict in tests) with these keys, all optional:

- ``"model"``, ``"model_key"``: the session's retrained network and its cache key
- ``"previous_model"``, ``"previous_key"``: the network the last retraining
  replaced, still selectable as "previous network" until the next one
- ``"active_choice"``: the sidebar's selection; ``"last_good_choice"``: the last
  one that loaded
- ``"job"``: the ``app_logic.jobs.TrainingJob`` under way; ``"train_message"``:
  ``(kind, text)`` about the last one

Networks from files are shared by every session and never modified; a
session's own networks live only in its state.
"""

from dataclasses import dataclass

import nn

from . import jobs, library

__all__ = ["RETRAINED", "PREVIOUS", "ActiveNetwork", "choices", "resolve",
           "collect_finished_job"]

RETRAINED = "this session's retrained network"
PREVIOUS = "previous network"
_SESSION_NETWORKS = ((RETRAINED, "model", "model_key"),
                     (PREVIOUS, "previous_model", "previous_key"))


@dataclass(frozen=True)
class ActiveNetwork:
    """The network every tab shows: the sidebar's ``choice``, a ``key`` that
    identifies it for caches (file path and mtime, or a session's run id),
    and the ``nn.Network`` itself."""
    choice: str
    key: str
    model: nn.Network


def choices(state, saved):
    """The sidebar's options: "default", the ``saved`` names, then this session's
    retrained and previous networks when it has them."""
    return [library.DEFAULT_NAME, *saved,
            *(name for name, model_key, _ in _SESSION_NETWORKS if state.get(model_key) is not None)]


def resolve(state, choice, load_file):
    """``(ActiveNetwork or None, error message or None)`` for a sidebar choice.

    ``load_file(path)`` returns ``(network, cache key)`` for a model file and
    may raise ``OSError`` or ``nn.ModelFileError`` (the app's is cached per server).
    """
    for name, model_key, id_key in _SESSION_NETWORKS:
        if choice == name:
            if state.get(model_key) is None:
                return None, f"This session has no {name}."
            return ActiveNetwork(choice, state[id_key], state[model_key]), None
    path = library.network_file(choice)
    try:
        model, key = load_file(path)
    except FileNotFoundError:
        hint = " Run `python train.py` to create it." if choice == library.DEFAULT_NAME else ""
        return None, f"{path.name} was not found.{hint}"
    except OSError as e:
        return None, f"{path.name} could not be read ({e.strerror or e})."
    except nn.ModelFileError as e:
        return None, str(e)
    return ActiveNetwork(choice, key, model), None


def collect_finished_job(state, load_file):
    """Hand a finished training job's result to the session; True if there was one.

    A usable result ("done") becomes the active network, and the network that
    was active becomes "previous network". A stopped, failed, diverged or
    near-chance run changes nothing but the message.
    """
    job = state.get("job")
    if job is None or job.running:
        return False
    del state["job"]
    if job.outcome == "done":
        previous, _ = resolve(state, state.get("last_good_choice") or library.DEFAULT_NAME,
                              load_file)
        if previous is not None:
            state["previous_model"], state["previous_key"] = previous.model, previous.key
        state["model"], state["model_key"] = job.model, f"session:{job.id}"
        state["active_choice"] = RETRAINED
    state["train_message"] = jobs.finished_message(job)
    return True
