"""app_logic.library: the saved networks on disk, shared by every visitor.

Every test saves into its own ``tmp_path`` (never the repository's
``weights/``). Networks are tiny MLPs: what is tested is names, owners,
quotas and hostile files, not the networks.
"""

import importlib
import logging
import multiprocessing
import os

import numpy as np
import pytest

import nn
from app_logic import cache, identity, library
from conftest import DEFAULT_MODEL, ROOT

ALICE = identity.visitor_id("a" * 32)
BOB = identity.visitor_id("b" * 32)
ALREADY = "A network with this name already exists; choose another name."


def tiny(seed=0, **kw):
    return nn.Network(nn.mlp_spec((4,), **kw), seed=seed)


def listing(folder):
    """Every name directly in ``folder`` (claims included), sorted."""
    return sorted(p.name for p in folder.iterdir())


def state(folder):
    """What ``folder`` holds, to compare before and after: {relative path: bytes}."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("name", [
    "../x", "", "a" * 41, "has space", "x.npz", "a/b", "a\\b", ".hidden", "ünï", "x\n", "tab\t",
    "default", "DEFAULT", "Default", "mlp", "MLP", "Mlp", "CON", "con", "Prn", "aux", "NUL",
    "COM1", "com9", "LPT1", "lpt9", None, 5, b"bytes"])
def test_bad_names_are_refused(name):
    assert library.check_name(name) is not None


@pytest.mark.parametrize("name", ["a", "small-relu", "Net_2", "a" * 40, "COM", "COM10", "LPT0",
                                  "console", "nul-net", "defaults", "mlp2", "_", "-"])
def test_good_names_are_accepted(name):
    assert library.check_name(name) is None


def test_name_messages_say_why():
    assert "shipped network" in library.check_name("Default")
    assert "“mlp”" in library.check_name("MLP")
    assert "device name on Windows" in library.check_name("lpt3")
    assert "letters, digits" in library.check_name("a b")


# ---------------------------------------------------------------- saving, replacing, deleting

def test_saving_rules_follow_the_owner(tmp_path):
    save = library.save_network
    first = tiny(seed=1)
    ok, message = save(first, "mine", ALICE, folder=tmp_path)
    assert ok and message == ("Saved as “mine”: it now appears under “Active network” in the "
                              "sidebar.")
    assert listing(tmp_path) == [".claims", "mine.npz"]   # no staging files left
    np.testing.assert_array_equal(nn.load(tmp_path / "mine.npz").param_layers[0].W,
                                  first.param_layers[0].W)
    assert library.owner_of("mine", tmp_path) == (ALICE, "mine")
    assert library.owned_by(ALICE, tmp_path) == ["mine"] and library.owned_by(BOB, tmp_path) == []
    before = state(tmp_path)
    # Someone else's: never replaced, whatever the letter case or "Overwrite".
    for name in ("mine", "MINE", "Mine"):
        assert save(tiny(2), name, BOB, overwrite=True, folder=tmp_path) == (False, ALREADY)
    assert save(tiny(2), "MINE", ALICE, overwrite=True, folder=tmp_path) == (False, ALREADY)
    # One's own: only with "Overwrite".
    assert save(tiny(2), "mine", ALICE, folder=tmp_path) == (
        False, "You saved “mine” before. Tick “Overwrite” to replace it.")
    assert state(tmp_path) == before
    assert save(tiny(2), "mine", ALICE, overwrite=True, folder=tmp_path)[0]
    np.testing.assert_array_equal(nn.load(tmp_path / "mine.npz").param_layers[0].W,
                                  tiny(2).param_layers[0].W)
    assert library.owner_of("mine", tmp_path) == (ALICE, "mine")
    assert listing(tmp_path) == [".claims", "mine.npz"]


def test_only_the_owner_deletes(tmp_path):
    library.save_network(tiny(), "mine", ALICE, folder=tmp_path)
    before = state(tmp_path)
    assert library.delete_network("mine", BOB, tmp_path) == (
        False, "“mine” is not one of your networks, so you cannot delete it.")
    assert library.delete_network("MINE", ALICE, tmp_path)[0] is False
    assert library.delete_network("../mine", ALICE, tmp_path) == (
        False, "There is no such saved network.")
    assert library.delete_network("gone", ALICE, tmp_path)[0] is False
    assert state(tmp_path) == before
    assert library.delete_network("mine", ALICE, tmp_path) == (True, "Deleted “mine”.")
    assert listing(tmp_path) == [".claims"] and listing(tmp_path / ".claims") == []
    # The name is free again, for anyone.
    assert library.save_network(tiny(), "MINE", BOB, folder=tmp_path)[0]
    assert library.owner_of("mine", tmp_path) == (BOB, "MINE")


def test_the_shipped_networks_are_never_replaced(tmp_path):
    before = DEFAULT_MODEL.read_bytes() if DEFAULT_MODEL.exists() else None
    for name in ("default", "Default", "MLP"):
        ok, message = library.save_network(tiny(), name, ALICE, overwrite=True,
                                           folder=DEFAULT_MODEL.parent)
        assert not ok and "shipped network" in message
    assert (DEFAULT_MODEL.read_bytes() if DEFAULT_MODEL.exists() else None) == before
    assert library.delete_network("default", ALICE, DEFAULT_MODEL.parent)[0] is False
    assert not (DEFAULT_MODEL.parent / library.CLAIMS).exists()


def test_unfit_networks_and_names_are_not_saved(tmp_path):
    assert library.save_network(tiny(n_inputs=300), "wide", ALICE, folder=tmp_path) == (
        False, "This network cannot be saved: it reads 300 inputs, not a 28x28 image (784).")
    assert library.save_network(tiny(n_classes=4096), "many", ALICE, folder=tmp_path) == (
        False, "This network cannot be saved: it answers 4096 classes, not the 10 digits.")
    assert library.save_network(tiny(), "a b", ALICE, folder=tmp_path)[0] is False
    assert listing(tmp_path) == []
    assert library.save_network(tiny(), "  spaced  ", ALICE, folder=tmp_path)[0]
    assert "spaced.npz" in listing(tmp_path)


def test_names_are_unique_whatever_their_case(tmp_path):
    assert library.save_network(tiny(), "Net", ALICE, folder=tmp_path)[0]
    assert library.save_network(tiny(), "net", BOB, folder=tmp_path) == (False, ALREADY)
    assert library.save_network(tiny(), "NET", ALICE, folder=tmp_path) == (False, ALREADY)
    # A file nobody claimed (an older version wrote it) also holds its name.
    nn.save(tiny(), tmp_path / "Legacy.npz")
    before = state(tmp_path)
    assert library.save_network(tiny(), "legacy", ALICE, overwrite=True, folder=tmp_path) == (
        False, ALREADY)
    assert state(tmp_path) == before
    assert library.saved_networks(tmp_path) == ["Legacy", "Net"]


def test_simultaneous_saves_in_threads(tmp_path):
    import threading

    results, barrier = [], threading.Barrier(4)

    def save(visitor, name):
        barrier.wait()
        results.append(library.save_network(tiny(), name, visitor, folder=tmp_path)[0])

    names = ["same", "Same", "SAME", "same"]
    threads = [threading.Thread(target=save, args=(identity.visitor_id(f"{i}" * 32), n))
               for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len([n for n in listing(tmp_path) if n.endswith(".npz")]) == 1


def _save_in_another_process(folder, name, visitor, model_path, barrier, results):
    """Run in a spawned process: load a network, wait for the others, save it."""
    import nn as nn_
    from app_logic import library as library_

    model = nn_.load(model_path)
    barrier.wait(120)
    results.put((visitor, name, *library_.save_network(model, name, visitor, folder=folder)))


def test_two_processes_racing_for_one_name(tmp_path):
    """Three server processes save "Race", "race" and "RACE" at the same moment: the
    claim file decides; exactly one wins and its file loads."""
    folder = tmp_path / "weights"
    model_path = tmp_path / "model.npz"
    nn.save(tiny(seed=4), model_path)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    visitors = [identity.visitor_id(c * 32) for c in "123"]
    procs = [ctx.Process(target=_save_in_another_process,
                         args=(str(folder), name, v, str(model_path), barrier, results))
             for name, v in zip(("Race", "race", "RACE"), visitors)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    winners = [(v, name) for v, name, ok, _ in outcomes if ok]
    assert len(winners) == 1, outcomes
    assert all(message == ALREADY for _, _, ok, message in outcomes if not ok)
    (visitor, name), = winners
    assert [n for n in listing(folder) if n.endswith(".npz")] == [f"{name}.npz"]
    assert library.owner_of(name.lower(), folder) == (visitor, name)
    loaded, _ = library.load_checked(folder / f"{name}.npz")
    np.testing.assert_array_equal(loaded.param_layers[0].W, tiny(seed=4).param_layers[0].W)


# ---------------------------------------------------------------- quotas

def test_a_visitor_may_keep_max_per_visitor_networks(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "MAX_PER_VISITOR", 2)
    for name in ("a", "b"):
        assert library.save_network(tiny(), name, ALICE, folder=tmp_path)[0]
    before = state(tmp_path)
    assert library.save_network(tiny(), "c", ALICE, folder=tmp_path) == (False, (
        "You have saved 2 networks, the most one visitor may keep here; delete one of yours "
        "to save another."))
    assert state(tmp_path) == before
    assert library.save_network(tiny(), "a", ALICE, overwrite=True, folder=tmp_path)[0]
    assert library.save_network(tiny(), "c", BOB, folder=tmp_path)[0]       # others may
    assert library.delete_network("b", ALICE, tmp_path)[0]
    assert library.save_network(tiny(), "c2", ALICE, folder=tmp_path)[0]


def test_the_folder_has_a_file_and_a_byte_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(library, "MAX_FILES", 2)
    assert library.save_network(tiny(), "a", ALICE, folder=tmp_path)[0]
    assert library.save_network(tiny(), "b", BOB, folder=tmp_path)[0]
    before = state(tmp_path)
    ok, message = library.save_network(tiny(), "c", identity.visitor_id("c" * 32),
                                       folder=tmp_path)
    assert not ok and message.startswith("The saved-networks folder is full (2 networks, 0 MB; "
                                         "the limit is 2 networks and 200 MB)")
    assert state(tmp_path) == before
    # Replacing one's own adds no file: allowed at the file limit.
    assert library.save_network(tiny(1), "a", ALICE, overwrite=True, folder=tmp_path)[0]
    monkeypatch.setattr(library, "MAX_FILES", 50)
    monkeypatch.setattr(library, "MAX_BYTES", 100_000)
    before = state(tmp_path)
    ok, message = library.save_network(tiny(), "c", identity.visitor_id("c" * 32),
                                       folder=tmp_path)
    assert not ok and "folder is full" in message and state(tmp_path) == before


# ---------------------------------------------------------------- ownership across restarts

def test_ownership_survives_a_restart(tmp_path):
    secret = "c" * 32
    owner = identity.visitor_id(secret)
    assert library.save_network(tiny(), "kept", owner, folder=tmp_path)[0]
    claim = (tmp_path / library.CLAIMS / "kept.json").read_text()
    assert owner in claim and secret not in claim      # a hash, never the secret
    # A restart: nothing in memory survives; the claim on disk decides.
    cache.clear()
    importlib.reload(library)
    assert library.owner_of("kept", tmp_path) == (owner, "kept")
    assert library.owned_by(owner, tmp_path) == ["kept"]
    assert library.save_network(tiny(), "kept", BOB, overwrite=True, folder=tmp_path) == (
        False, ALREADY)
    assert library.delete_network("kept", BOB, tmp_path)[0] is False
    assert library.save_network(tiny(1), "kept", owner, overwrite=True, folder=tmp_path)[0]
    assert library.delete_network("kept", owner, tmp_path)[0]


def test_a_damaged_claim_owns_nothing(tmp_path):
    library.save_network(tiny(), "x", ALICE, folder=tmp_path)
    (tmp_path / library.CLAIMS / "x.json").write_text("{not json")
    assert library.owner_of("x", tmp_path) == (None, None)
    assert library.delete_network("x", ALICE, tmp_path)[0] is False
    # The file still holds its name.
    assert library.save_network(tiny(), "X", BOB, folder=tmp_path) == (False, ALREADY)


# ---------------------------------------------------------------- hostile folders and files

def test_links_and_other_non_files_are_not_listed(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    outside = tmp_path / "outside.npz"
    nn.save(tiny(), outside)
    nn.save(tiny(), folder / "good.npz")
    (folder / "link.npz").symlink_to(folder / "good.npz")
    (folder / "escape.npz").symlink_to(outside)
    (folder / "dangling.npz").symlink_to(tmp_path / "missing.npz")
    os.mkfifo(folder / "fifo.npz")          # opening it would block until a writer comes
    (folder / "dir.npz").mkdir()
    (folder / "dir.npz" / "header.npy").write_bytes(b"")
    assert library.saved_networks(folder) == ["good"]
    for name in ("link", "escape", "dangling", "fifo", "dir"):
        with pytest.raises(nn.ModelFileError, match="not a regular file"):
            library.load_checked(folder / f"{name}.npz")
    with pytest.raises(FileNotFoundError):
        library.load_checked(folder / "nothing.npz")
    # A link's name cannot be saved through, so nothing is written where it points.
    before = outside.read_bytes()
    assert library.save_network(tiny(9), "escape", ALICE, overwrite=True, folder=folder) == (
        False, ALREADY)
    assert outside.read_bytes() == before


def write_hostile_files(folder):
    """Files nn.load accepts but the app cannot use, and files it refuses."""
    nn.save(tiny(n_classes=4096), folder / "classes.npz")
    nn.save(tiny(n_inputs=300), folder / "inputs.npz")
    good = folder / "good.npz"
    nn.save(tiny(), good)
    (folder / "cut.npz").write_bytes(good.read_bytes()[:1000])
    (folder / "noise.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "empty.npz").write_bytes(b"")
    return ["classes", "inputs", "cut", "noise", "empty"]


def test_unfit_and_corrupt_files_are_not_listed(tmp_path, caplog):
    bad = write_hostile_files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="digitlab"):
        assert library.saved_networks(tmp_path) == ["good"]
    for name in bad:
        with pytest.raises(nn.ModelFileError):
            library.load_checked(tmp_path / f"{name}.npz")
        assert sum(f"{name}.npz" in r.getMessage() for r in caplog.records) == 1, name
    with pytest.raises(nn.ModelFileError, match="not usable here: it answers 4096 classes"):
        library.load_checked(tmp_path / "classes.npz")
    with pytest.raises(nn.ModelFileError, match="not usable here: it reads 300 inputs"):
        library.load_checked(tmp_path / "inputs.npz")
    model, key = library.load_checked(tmp_path / "good.npz")
    assert model.n_inputs == 784 and key.startswith(f"file:{tmp_path / 'good.npz'}:")


def test_each_file_is_loaded_once_not_on_every_listing(tmp_path, monkeypatch, caplog):
    write_hostile_files(tmp_path)
    loads = []
    real = nn.load

    def counting(path):
        loads.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(nn, "load", counting)
    with caplog.at_level(logging.WARNING, logger="digitlab"):
        for _ in range(3):
            assert library.saved_networks(tmp_path) == ["good"]
            library.owned_by(ALICE, tmp_path)
    assert sorted(loads) == sorted(["classes.npz", "inputs.npz", "good.npz", "cut.npz",
                                    "noise.npz", "empty.npz"])
    assert len([r for r in caplog.records if "noise.npz" in r.getMessage()]) == 1
    # A file that changed is read again (its key holds size and modification time).
    (tmp_path / "noise.npz").write_bytes(b"different and shorter")
    library.saved_networks(tmp_path)
    assert loads.count("noise.npz") == 2 and loads.count("good.npz") == 1


def test_the_folder_comes_from_digitlab_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(library.WEIGHTS_ENV, raising=False)
    assert library.weights_dir() == ROOT / "weights"
    monkeypatch.setenv(library.WEIGHTS_ENV, str(tmp_path))
    assert library.weights_dir() == tmp_path
    assert library.network_file("a_net") == tmp_path / "a_net.npz"
    assert library.network_file("default") == library.SHIPPED["default"] == DEFAULT_MODEL
    assert library.network_file("mlp") == ROOT / "weights" / "mlp.npz"
    with pytest.raises(ValueError):
        library.network_file("../a_net")
    for name in ("default", "CON", "bad name", ".hidden"):
        nn.save(tiny(), tmp_path / f"{name}.npz")
    (tmp_path / "notes.txt").write_text("not a network")
    assert library.saved_networks() == []
    assert library.save_network(tiny(), "b-net", ALICE)[0]
    assert library.save_network(tiny(), "a_net", ALICE)[0]
    assert (tmp_path / "a_net.npz").exists()
    assert library.saved_networks() == ["a_net", "b-net"]
    assert library.owned_by(ALICE) == ["a_net", "b-net"]
    assert library.delete_network("b-net", ALICE)[0] and library.saved_networks() == ["a_net"]
    monkeypatch.setenv(library.WEIGHTS_ENV, str(tmp_path / "missing"))
    assert library.saved_networks() == [] and library.owned_by(ALICE) == []
