"""Model files: a faithful round trip, atomic saves, and one clear ModelFileError
for every kind of bad file (never a crash, never code execution).

Files are written in today's format (version 2, ``nn.save``: arrays named by
their layer's index, "0.weight", "3.bias", ...) and in the legacy format
(version 1: arrays "W0", "b0", ..., header ``config``/``hyperparams``), which
``nn.load`` still reads; every check on a bad file runs against both (``fmt``).
"""

import json
import os
import pickle
import re
import stat

import numpy as np
import pytest

import nn
from helpers import FORMATS, small_model, weight_name, write_model
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
    """A small model with everything a model file carries, and its file in each format."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (300, 784)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    model = nn.Network(nn.mlp_spec((16, 8), "tanh", 0.2), seed=3)
    nn.fit(model, X, y, optimizer="momentum", lr=0.05, nesterov=True, l2=1e-4, epochs=2,
           batch_size=32, val_size=0.2, schedule="cosine", seed=4)
    model.metrics = model.evaluate(X[:100], y[:100])
    model.recipe["limit"] = None  # a None value survives the round trip
    folder = tmp_path_factory.mktemp("model")
    paths = {fmt: write_model(model, folder / f"{fmt}.npz", fmt) for fmt in FORMATS}
    return model, paths, X


@pytest.fixture(params=FORMATS)
def fmt(request):
    return request.param


def name(trained, fmt, dense_index, kind="weight"):
    """An array's name in that format: ("v2", 1, "bias") -> "3.bias", ("v1", ...) -> "b1"."""
    return weight_name(trained[0], fmt, dense_index, kind)


def read_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["header"].tobytes().decode())
    return header, arrays


def rewrite(src, dst, header_update=None, drop=(), replace=None):
    """Copy the model file ``src`` to ``dst`` with header keys updated, arrays dropped
    or replaced (np.savez, as ``save`` does)."""
    old_header, arrays = read_arrays(src)
    if header_update is not None:
        old_header.update(header_update)
    arrays["header"] = np.frombuffer(json.dumps(old_header).encode(), dtype=np.uint8)
    for key in drop:
        del arrays[key]
    arrays.update(replace or {})
    np.savez(dst, **arrays)
    return dst


def assert_bad(path, pattern):
    with pytest.raises(ModelFileError, match=pattern) as info:
        nn.load(path)
    assert os.path.basename(str(path)) in str(info.value)  # says which file
    return info.value


def raw_spec(hidden, activation="tanh", dropout=0.2, n_inputs=784, n_classes=10):
    """An MLP spec written out by hand, without validation (it may be invalid)."""
    layers = []
    for width in hidden:
        layers += [{"type": "dense", "out_features": width}, {"type": activation}]
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
    layers.append({"type": "dense", "out_features": n_classes})
    return {"input_shape": [n_inputs], "layers": layers}


def architecture(header, fmt, **change):
    """The header update that gives the file the trained model's architecture with
    ``change`` (hidden, activation, dropout, n_classes) in format ``fmt``."""
    config = {"hidden": [16, 8], "activation": "tanh", "dropout": 0.2, "n_inputs": 784,
              "n_classes": 10, **change}
    if fmt == "v1":
        return {"config": {**header["config"], **change}}
    return {"spec": raw_spec(config["hidden"], config["activation"], config["dropout"],
                             config["n_inputs"], config["n_classes"])}


# -- round trip ------------------------------------------------------------------------

def test_round_trip_is_exact(trained):
    model, paths, X = trained
    loaded = nn.load(paths["v2"])
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert loaded.spec == model.spec
    assert loaded.history == model.history and len(loaded.history) == 2
    assert loaded.metrics == model.metrics
    assert loaded.recipe == model.recipe and loaded.recipe["limit"] is None
    assert loaded.recipe["optimizer"] == "momentum" and loaded.recipe["nesterov"]
    assert (loaded.recipe["lr"], loaded.recipe["l2"], loaded.recipe["schedule"]) == \
        (0.05, 1e-4, "cosine")
    assert loaded.trained_on == model.trained_on == {"n_train": 240, "n_val": 60}
    assert loaded.seed == 3
    assert loaded.train_seconds == pytest.approx(model.train_seconds)
    assert loaded.describe() == "784-16-8-10 (tanh)" and loaded.kind == "mlp"


def test_legacy_file_round_trip(trained):
    """A version-1 file of the same network loads as the same network, its
    hyperparameters becoming the recipe and n_train going to trained_on."""
    model, paths, X = trained
    loaded = nn.load(paths["v1"])
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert loaded.spec == model.spec and loaded.describe() == "784-16-8-10 (tanh)"
    assert loaded.history == model.history and loaded.metrics == model.metrics
    for key in ("optimizer", "lr", "nesterov", "l2", "schedule", "epochs", "batch_size",
                "val_size", "seed"):
        assert loaded.recipe[key] == model.recipe[key], key
    assert (loaded.recipe["hidden"], loaded.recipe["activation"], loaded.recipe["dropout"]) == \
        ([16, 8], "tanh", 0.2)
    assert loaded.trained_on == {"n_train": 240}
    assert loaded.seed == 3 and loaded.train_seconds == pytest.approx(model.train_seconds)


def test_convolutional_network_round_trips(tmp_path):
    model = nn.Network(nn.cnn_spec((3, 4), kernel=3, hidden=(8,), dropout=0.1), seed=2)
    nn.save(model, tmp_path / "cnn.npz")
    header, arrays = read_arrays(tmp_path / "cnn.npz")
    # conv, relu, pool, conv, relu, pool, flatten, dense, relu, dropout, dense
    assert sorted(arrays) == ["0.bias", "0.weight", "10.bias", "10.weight", "3.bias",
                              "3.weight", "7.bias", "7.weight", "header"]
    assert arrays["0.weight"].shape == (3, 1, 3, 3) and arrays["3.weight"].shape == (4, 3, 3, 3)
    loaded = nn.load(tmp_path / "cnn.npz")
    X = np.random.default_rng(1).random((5, 784), dtype=np.float32)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.kind == "cnn" and loaded.spec == model.spec == header["spec"]


def test_file_holds_only_plain_arrays(trained):
    _, paths, _ = trained
    header, arrays = read_arrays(paths["v2"])
    # dense, tanh, dropout, dense, tanh, dropout, dense: arrays named by layer index
    assert sorted(arrays) == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias",
                              "6.weight", "header"]
    assert header["format"] == serialize.FORMAT == "digitlab-network"
    assert header["format_version"] == serialize.FORMAT_VERSION == 2
    assert set(header) == {"format", "format_version", "spec", "seed", "recipe", "trained_on",
                           "history", "metrics", "train_seconds", "saved_at"}
    assert all(a.dtype != object for a in arrays.values())


def test_fresh_untrained_model_round_trips(tmp_path):
    model = nn.Network(nn.mlp_spec(()), seed=5)  # logistic regression, nothing trained
    nn.save(model, tmp_path / "lr.npz")
    loaded = nn.load(tmp_path / "lr.npz")
    assert loaded.spec["layers"] == [{"type": "dense", "out_features": 10}]
    assert loaded.history == [] and loaded.metrics == {} and loaded.recipe == {}
    assert loaded.trained_on == {} and loaded.seed == 5
    assert np.array_equal(loaded.dense_layers[0].W, model.dense_layers[0].W)


def test_saved_file_is_readable_by_others(tmp_path):
    nn.save(small_model((4,)), tmp_path / "m.npz")
    mode = stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode)
    assert mode & 0o044 == 0o044, oct(mode)  # group/other readable, like the PNGs beside it


def test_model_save_method_is_gone():
    """``model.save(path)`` became ``nn.save(model, path)``: one way to do it."""
    assert not hasattr(small_model(), "save")


# -- atomic save -----------------------------------------------------------------------

def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "m.npz"
    nn.save(small_model((4,), seed=1), target)
    before = target.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        nn.save(small_model((8,), seed=2), target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    assert nn.load(target).spec == nn.mlp_spec((4,))


def test_save_replaces_an_existing_file(tmp_path):
    target = tmp_path / "m.npz"
    nn.save(small_model((4,)), target)
    nn.save(small_model((6,)), target)
    assert nn.load(target).spec == nn.mlp_spec((6,))
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_into_a_missing_folder_fails_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        nn.save(small_model((4,)), tmp_path / "missing" / "m.npz")
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
    bad.write_bytes(pickle.dumps({"0.weight": Payload(marker)}))
    assert_bad(bad, "not an .npz archive")
    assert not marker.exists()


@pytest.mark.parametrize("member", ["header", "weight"])
def test_object_array_in_npz_is_refused_without_running_it(tmp_path, fmt, member):
    # A tiny architecture, so that the declared size fits and the object array is reached.
    model = small_model((2,), n_inputs=4, n_classes=3)
    write_model(model, tmp_path / "ok.npz", fmt)
    marker = tmp_path / "pwned"
    key = "header" if member == "header" else weight_name(model, fmt, 0)
    evil = np.empty((4, 2) if member == "weight" else 1, dtype=object)
    evil[...] = Payload(marker)
    bad = rewrite(tmp_path / "ok.npz", tmp_path / "bad.npz", replace={key: evil})
    assert_bad(bad, "pickle|unreadable")
    assert not marker.exists()


def test_truncated_in_half(trained, tmp_path, fmt):
    data = trained[1][fmt].read_bytes()
    bad = tmp_path / "half.npz"
    bad.write_bytes(data[:len(data) // 2])
    assert_bad(bad, "not an .npz archive|damaged|truncated")


@pytest.mark.parametrize("keep", [1, 4, 30, 100, 1000, 5000, -1, -10, -22, -23, -100, -1000])
def test_truncated_at_offsets(trained, tmp_path, fmt, keep):
    data = trained[1][fmt].read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:keep])
    assert_bad(bad, "not an .npz archive|damaged|truncated")


def test_corrupted_byte_is_detected(trained, tmp_path, fmt):
    data = bytearray(trained[1][fmt].read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the first weights: the zip CRC no longer matches
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


def test_missing_array(trained, tmp_path, fmt):
    b1 = name(trained, fmt, 1, "bias")
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", drop=[b1])
    assert_bad(bad, f"missing arrays: {re.escape(b1)}")


def test_missing_header(trained, tmp_path, fmt):
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", drop=["header"])
    assert_bad(bad, "no header")


def test_extra_array(trained, tmp_path, fmt):
    extra = "W9" if fmt == "v1" else "9.weight"
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  replace={extra: np.zeros((2, 2), np.float32)})
    assert_bad(bad, f"unexpected arrays: {re.escape(extra)}")


def test_weights_under_the_other_formats_names(trained, tmp_path, fmt):
    """Each format has its own names: a v2 header with W0, ... (or the reverse) is refused."""
    other = "v1" if fmt == "v2" else "v2"
    _, arrays = read_arrays(trained[1][fmt])
    renamed = {name(trained, other, i, kind): arrays[name(trained, fmt, i, kind)]
               for i in range(3) for kind in ("weight", "bias")}
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  drop=[name(trained, fmt, i, k) for i in range(3) for k in ("weight", "bias")],
                  replace=renamed)
    assert_bad(bad, "missing arrays")


def test_wrong_shape(trained, tmp_path, fmt):
    w0 = name(trained, fmt, 0)
    _, arrays = read_arrays(trained[1][fmt])
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  replace={w0: np.ascontiguousarray(arrays[w0].T)})
    assert_bad(bad, rf"{re.escape(w0)} has shape \(16, 784\), expected \(784, 16\)")


@pytest.mark.parametrize("which", [(0, "weight"), (1, "bias")])
def test_wrong_dtype_float64(trained, tmp_path, fmt, which):
    key = name(trained, fmt, *which)
    _, arrays = read_arrays(trained[1][fmt])
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  replace={key: arrays[key].astype(np.float64)})
    assert_bad(bad, f"{re.escape(key)} has dtype float64, expected float32")


def test_oversized_array_is_refused_before_reading(trained, tmp_path, fmt):
    b0 = name(trained, fmt, 0, "bias")
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  replace={b0: np.zeros(100_000, np.float32)})
    assert_bad(bad, f"{re.escape(b0)} is larger than the architecture allows")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(trained, tmp_path, fmt, value):
    w1 = name(trained, fmt, 1)
    _, arrays = read_arrays(trained[1][fmt])
    W1 = arrays[w1].copy()
    W1[3, 2] = value
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", replace={w1: W1})
    assert_bad(bad, f"{re.escape(w1)} contains NaN or infinite")


def test_format_version_from_the_future(trained, tmp_path, fmt):
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  header_update={"format_version": serialize.FORMAT_VERSION + 1})
    assert_bad(bad, "format version 3, newer")


@pytest.mark.parametrize("version", [0, "1", None, 1.5, True, -2])
def test_invalid_format_version(trained, tmp_path, fmt, version):
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", header_update={"format_version": version})
    assert_bad(bad, "format version")


def test_format_name_and_version_must_agree(trained, tmp_path, fmt):
    """digitlab-mlp is version 1 and digitlab-network version 2, never the other way round."""
    version = 1 if fmt == "v2" else 2
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", header_update={"format_version": version})
    assert_bad(bad, f"does not go with version {version}")


def test_wrong_format_name(trained, tmp_path, fmt):
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", header_update={"format": "keras"})
    assert_bad(bad, "not a digitlab-network file")


def test_unknown_activation(trained, tmp_path, fmt):
    header, _ = read_arrays(trained[1][fmt])
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  header_update=architecture(header, fmt, activation="swish"))
    assert_bad(bad, "its architecture is invalid.*swish")


@pytest.mark.parametrize("hidden,why", [
    ([4096, 4096], "declares 20,037,642 weights but the file is only"),  # fits the limits
    ([4096] * 8, "architecture is invalid.*more than the limit"),
    ([10**9], "architecture is invalid.*out_features"),
    ([2**62, 2**62], "architecture is invalid.*out_features"),
])
def test_huge_architecture_in_a_tiny_file(trained, tmp_path, fmt, hidden, why):
    header, _ = read_arrays(trained[1][fmt])
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  header_update=architecture(header, fmt, hidden=hidden, dropout=0.0))
    assert os.path.getsize(bad) < 200_000
    assert_bad(bad, why)


@pytest.mark.parametrize("change", [{"hidden": [16, "8"]}, {"hidden": [16, 8.5]},
                                    {"hidden": [16, -8]}, {"hidden": [16, True]},
                                    {"dropout": 1.5}, {"n_classes": None}])
def test_invalid_architecture(trained, tmp_path, fmt, change):
    header, _ = read_arrays(trained[1][fmt])
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz",
                  header_update=architecture(header, fmt, **change))
    assert_bad(bad, "architecture is invalid|declares")


SECTIONS = {"v1": [("config", "no valid 'config'"), ("history", "no valid 'history'"),
                   ("metrics", "no valid 'metrics'"), ("hyperparams", "no valid 'hyperparams'")],
            "v2": [("spec", "architecture is invalid"), ("history", "no valid 'history'"),
                   ("metrics", "no valid 'metrics'"), ("recipe", "no valid 'recipe'"),
                   ("trained_on", "no valid 'trained_on'")]}


@pytest.mark.parametrize("case", [(f, k, m) for f in FORMATS for k, m in SECTIONS[f]],
                         ids=[f"{f}-{k}" for f in FORMATS for k, _ in SECTIONS[f]])
def test_header_missing_a_section(trained, tmp_path, case):
    fmt, key, message = case
    bad = rewrite(trained[1][fmt], tmp_path / "bad.npz", header_update={key: "oops"})
    assert_bad(bad, message)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b""])
def test_header_not_json_object(trained, tmp_path, fmt, raw):
    bad = tmp_path / "bad.npz"
    _, arrays = read_arrays(trained[1][fmt])
    arrays["header"] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(bad, **arrays)
    assert_bad(bad, "not valid JSON|not a digitlab-network file")


def test_header_of_the_wrong_dtype(trained, tmp_path, fmt):
    header, arrays = read_arrays(trained[1][fmt])
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8).astype(np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert_bad(bad, "header is not a JSON byte string")


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)
