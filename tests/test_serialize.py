"""Model files: a faithful round trip, atomic saves, and one clear ModelFileError
for every kind of bad file (never a crash, never code execution)."""

import json
import os
import pickle
import stat

import numpy as np
import pytest

import nn
from nn import serialize
from nn.serialize import ModelFileError


class Payload:
    """Unpickling this creates ``path``: a stand-in for arbitrary code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model with everything a model file carries, and its saved file."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (300, 784)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    model = nn.Network(hidden=(16, 8), activation="tanh", dropout=0.2, seed=3)
    nn.fit(model, X, y, optimizer="momentum", lr=0.05, nesterov=True, l2=1e-4, epochs=2,
           batch_size=32, val_size=0.2, schedule="cosine", seed=4)
    model.metrics = nn.metrics.classification_report(y[:100], model.predict(X[:100]))
    model.metrics["loss"] = model.loss_and_accuracy(X[:100], y[:100])[0]
    model.hyperparams["limit"] = None
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    return model, path, X


def read_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    return header, arrays


def rewrite(src, dst, header_update=None, drop=(), **replace):
    """Copy the model file ``src`` to ``dst`` with header keys updated, arrays dropped
    or replaced (np.savez, as ``save`` does)."""
    old_header, arrays = read_arrays(src)
    if header_update is not None:
        old_header.update(header_update)
    arrays["header"] = np.frombuffer(json.dumps(old_header).encode(), dtype=np.uint8)
    for name in drop:
        del arrays[name]
    arrays.update(replace)
    np.savez(dst, **arrays)
    return dst


def assert_bad(path, pattern):
    with pytest.raises(ModelFileError, match=pattern) as info:
        nn.load(path)
    assert os.path.basename(str(path)) in str(info.value)  # says which file
    return info.value


# -- round trip ------------------------------------------------------------------------

def test_round_trip_is_exact(trained):
    model, path, X = trained
    loaded = nn.load(path)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert loaded.config == model.config
    assert loaded.history == model.history and len(loaded.history) == 2
    assert loaded.metrics == model.metrics
    assert loaded.hyperparams == model.hyperparams
    assert loaded.hyperparams["optimizer"] == "momentum" and loaded.hyperparams["nesterov"]
    assert loaded.seed == 3
    assert loaded.train_seconds == pytest.approx(model.train_seconds)
    assert loaded.describe() == "784-16(tanh)-8(tanh)-10"


def test_file_holds_only_plain_arrays(trained):
    _, path, _ = trained
    header, arrays = read_arrays(path)
    assert sorted(arrays) == ["W0", "W1", "W2", "b0", "b1", "b2", "header"]
    assert header["format"] == serialize.FORMAT
    assert header["format_version"] == serialize.FORMAT_VERSION
    assert all(a.dtype != object for a in arrays.values())


def test_fresh_untrained_model_round_trips(tmp_path):
    model = nn.Network(hidden=(), seed=5)  # logistic regression, empty history and metrics
    model.save(tmp_path / "lr.npz")
    loaded = nn.load(tmp_path / "lr.npz")
    assert loaded.config["hidden"] == [] and loaded.history == [] and loaded.metrics == {}
    assert np.array_equal(loaded.dense_layers[0].W, model.dense_layers[0].W)


def test_saved_file_is_readable_by_others(tmp_path):
    nn.Network(hidden=(4,)).save(tmp_path / "m.npz")
    mode = stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode)
    assert mode & 0o044 == 0o044, oct(mode)  # group/other readable, like the PNGs beside it


# -- atomic save -----------------------------------------------------------------------

def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    nn.Network(hidden=(4,), seed=1).save(target)
    before = target.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        nn.Network(hidden=(8,), seed=2).save(target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    assert nn.load(target).config["hidden"] == [4]


def test_save_replaces_an_existing_file(tmp_path):
    target = tmp_path / "m.npz"
    nn.Network(hidden=(4,)).save(target)
    nn.Network(hidden=(6,)).save(target)
    assert nn.load(target).config["hidden"] == [6]
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_into_a_missing_folder_fails_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        nn.Network(hidden=(4,)).save(tmp_path / "missing" / "m.npz")
    assert os.listdir(tmp_path) == []


# -- bad files ---------------------------------------------------------------------------

def test_payload_really_would_run(tmp_path):
    """The pickle payload used below is live: unpickling it does create the marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.npz"
    bad.write_bytes(pickle.dumps({"W0": Payload(marker)}))
    assert_bad(bad, "not an .npz archive")
    assert not marker.exists()


@pytest.mark.parametrize("member", ["header", "W0"])
def test_object_array_in_npz_is_refused_without_running_it(tmp_path, member):
    # A tiny architecture, so that the declared size fits and the object array is reached.
    model = nn.Network(hidden=(2,), n_inputs=4, n_classes=3)
    model.save(tmp_path / "ok.npz")
    marker = tmp_path / "pwned"
    evil = np.empty((4, 2) if member == "W0" else 1, dtype=object)
    evil[...] = Payload(marker)
    bad = rewrite(tmp_path / "ok.npz", tmp_path / "bad.npz", **{member: evil})
    assert_bad(bad, "pickle|unreadable")
    assert not marker.exists()


def test_truncated_in_half(trained, tmp_path):
    _, path, _ = trained
    data = path.read_bytes()
    bad = tmp_path / "half.npz"
    bad.write_bytes(data[:len(data) // 2])
    assert_bad(bad, "not an .npz archive|damaged|truncated")


@pytest.mark.parametrize("keep", [1, 4, 30, 100, 1000, 5000, -1, -10, -22, -23, -100, -1000])
def test_truncated_at_offsets(trained, tmp_path, keep):
    _, path, _ = trained
    data = path.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:keep])
    assert_bad(bad, "not an .npz archive|damaged|truncated")


def test_corrupted_byte_is_detected(trained, tmp_path):
    _, path, _ = trained
    data = bytearray(path.read_bytes())
    header, _ = read_arrays(path)
    data[len(data) // 3] ^= 0xFF  # inside W0's float data: the zip CRC no longer matches
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    assert_bad(bad, "damaged|CRC")


def test_empty_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    assert_bad(tmp_path / "empty.npz", "empty")


def test_nonexistent_path(tmp_path):
    assert_bad(tmp_path / "nope.npz", "No such file|cannot read")


def test_directory(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    assert_bad(tmp_path / "dir.npz", "directory")


def test_not_a_zip_at_all(tmp_path):
    (tmp_path / "text.npz").write_text("hello, I am a model\n")
    assert_bad(tmp_path / "text.npz", "not an .npz archive")


def test_huge_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.npz"
    with open(big, "wb") as f:
        f.truncate(serialize.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert_bad(big, "MiB")


def test_missing_array(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz", drop=["b1"])
    assert_bad(bad, "missing arrays: b1")


def test_missing_header(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz", drop=["header"])
    assert_bad(bad, "no header")


def test_extra_array(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz", W9=np.zeros((2, 2), np.float32))
    assert_bad(bad, "unexpected arrays: W9")


def test_wrong_shape(trained, tmp_path):
    _, arrays = read_arrays(trained[1])
    bad = rewrite(trained[1], tmp_path / "bad.npz", W0=np.ascontiguousarray(arrays["W0"].T))
    assert_bad(bad, r"W0 has shape \(16, 784\), expected \(784, 16\)")


@pytest.mark.parametrize("name", ["W0", "b1"])
def test_wrong_dtype_float64(trained, tmp_path, name):
    _, arrays = read_arrays(trained[1])
    bad = rewrite(trained[1], tmp_path / "bad.npz", **{name: arrays[name].astype(np.float64)})
    assert_bad(bad, f"{name} has dtype float64, expected float32")


def test_oversized_array_is_refused_before_reading(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz", b0=np.zeros(100_000, np.float32))
    assert_bad(bad, "b0 is larger than the architecture allows")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(trained, tmp_path, value):
    _, arrays = read_arrays(trained[1])
    W1 = arrays["W1"].copy()
    W1[3, 2] = value
    bad = rewrite(trained[1], tmp_path / "bad.npz", W1=W1)
    assert_bad(bad, "W1 contains NaN or infinite")


def test_format_version_from_the_future(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz",
                  header_update={"format_version": serialize.FORMAT_VERSION + 1})
    assert_bad(bad, "format version 2, newer")


@pytest.mark.parametrize("version", [0, "1", None, 1.5])
def test_invalid_format_version(trained, tmp_path, version):
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={"format_version": version})
    assert_bad(bad, "format version")


def test_wrong_format_name(trained, tmp_path):
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={"format": "keras"})
    assert_bad(bad, "not a digitlab-mlp file")


def test_unknown_activation(trained, tmp_path):
    header, _ = read_arrays(trained[1])
    config = dict(header["config"], activation="swish")
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={"config": config})
    assert_bad(bad, "activation.*swish")


@pytest.mark.parametrize("hidden", [[4096] * 8, [10**9], [2**62, 2**62]])
def test_huge_architecture_in_a_tiny_file(trained, tmp_path, hidden):
    header, _ = read_arrays(trained[1])
    config = dict(header["config"], hidden=hidden)
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={"config": config})
    assert os.path.getsize(bad) < 200_000
    assert_bad(bad, "declares .* weights but the file is only")


@pytest.mark.parametrize("change", [{"hidden": [16, "8"]}, {"hidden": [16, 8.5]},
                                    {"hidden": [16, -8]}, {"dropout": 1.5},
                                    {"n_classes": None}])
def test_invalid_architecture(trained, tmp_path, change):
    header, _ = read_arrays(trained[1])
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={"config": {**header["config"], **change}})
    assert_bad(bad, "architecture is invalid|declares")


@pytest.mark.parametrize("key", ["config", "history", "metrics", "hyperparams"])
def test_header_missing_a_section(trained, tmp_path, key):
    bad = rewrite(trained[1], tmp_path / "bad.npz", header_update={key: "oops"})
    assert_bad(bad, f"no valid '{key}'")


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b""])
def test_header_not_json_object(trained, tmp_path, raw):
    bad = tmp_path / "bad.npz"
    _, arrays = read_arrays(trained[1])
    arrays["header"] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(bad, **arrays)
    assert_bad(bad, "not valid JSON|not a digitlab-mlp file")


def test_header_of_the_wrong_dtype(trained, tmp_path):
    header, _ = read_arrays(trained[1])
    _, arrays = read_arrays(trained[1])
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8).astype(np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert_bad(bad, "header is not a JSON byte string")


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)
