"""nn.architecture: specs (layer lists as plain JSON data) are checked before
anything is built, with a ValueError naming the layer and the parameter; the
two families ``mlp_spec`` and ``cnn_spec`` have the shapes they promise;
``describe`` summarises them; and a model file whose spec asks for absurd
amounts of memory is refused by ``nn.load`` before anything is allocated."""

import json

import numpy as np
import pytest

import nn
from helpers import Usage, header_of, model_members, small_model, write_zip
from nn.architecture import (MAX_ACTIVATIONS, MAX_CHANNELS, MAX_KERNEL, MAX_LAYERS,
                             MAX_PARAMETERS, MAX_WIDTH, build, check_spec, cnn_spec, count_macs,
                             count_parameters, describe, mlp_spec, shapes)

MiB = 2**20
IMAGE = [1, 28, 28]
FLAT = {"type": "flatten"}
RELU = {"type": "relu"}


def conv(out, k, padding=0):
    return {"type": "conv2d", "out_channels": out, "kernel_size": k, "padding": padding}


def pool(k=2):
    return {"type": "maxpool2d", "kernel_size": k}


def dense(n):
    return {"type": "dense", "out_features": n}


def spec(input_shape, *layers):
    return {"input_shape": list(input_shape), "layers": list(layers)}


# -- bad specs -------------------------------------------------------------------------------

BAD = [
    # kernel larger than the image
    ("kernel", spec([1, 5, 5], conv(2, 7), FLAT, dense(10)),
     r"layer 0 \(conv2d\): kernel_size 7 is larger than its 5x5 input \(padding 0\)"),
    ("kernel-2nd", spec(IMAGE, conv(4, 5, 2), pool(4), conv(4, 9), FLAT, dense(10)),
     r"layer 2 \(conv2d\): kernel_size 9 is larger than its 7x7 input"),
    ("kernel-max", spec(IMAGE, conv(4, MAX_KERNEL + 1), FLAT, dense(10)),
     r"layer 0 \(conv2d\): kernel_size must be a whole number from 1 to 15, got 16"),
    ("padding", spec(IMAGE, conv(4, 3, 3), FLAT, dense(10)),
     r"layer 0 \(conv2d\): padding must be a whole number from 0 to 2, got 3"),
    # zero (or too many) channels
    ("zero-channels", spec(IMAGE, conv(0, 3), FLAT, dense(10)),
     r"layer 0 \(conv2d\): out_channels must be a whole number from 1 to 512, got 0"),
    ("channels-max", spec(IMAGE, conv(MAX_CHANNELS + 1, 3), FLAT, dense(10)),
     r"layer 0 \(conv2d\): out_channels must be a whole number from 1 to 512, got 513"),
    ("zero-input-channels", spec([0, 28, 28], conv(4, 3), FLAT, dense(10)),
     r"spec: input_shape must be a whole number from 1 to 4096, got 0"),
    # a pool that leaves nothing
    ("pool", spec([1, 5, 5], pool(8), FLAT, dense(10)),
     r"layer 0 \(maxpool2d\): kernel_size 8 leaves nothing of its 5x5 input"),
    ("pool-3rd", spec(IMAGE, pool(4), pool(4), pool(4), FLAT, dense(10)),
     r"layer 2 \(maxpool2d\): kernel_size 4 leaves nothing of its 1x1 input"),
    # dense fed an image; convolution and pooling fed flat input
    ("dense-image", spec(IMAGE, dense(10)),
     r"layer 0 \(dense\): needs flat input, got shape \[1, 28, 28\]; put a flatten layer"),
    ("dense-after-conv", spec(IMAGE, conv(2, 3), RELU, dense(10)),
     r"layer 2 \(dense\): needs flat input, got shape \[2, 26, 26\]"),
    ("conv-flat", spec([784], conv(2, 3), FLAT, dense(10)),
     r"layer 0 \(conv2d\): needs \(channels, height, width\) input, got shape \[784\]"),
    ("pool-flat", spec([784], pool(2), dense(10)),
     r"layer 0 \(maxpool2d\): needs \(channels, height, width\) input"),
    # unknown layer types and keys
    ("unknown-type", spec([784], dense(8), {"type": "swish"}, dense(10)),
     r"layer 1: each layer needs a 'type', one of .*relu.*; got \{'type': 'swish'\}"),
    ("no-type", spec([784], {"out_features": 10}), r"layer 0: each layer needs a 'type'"),
    ("layer-not-dict", spec([784], "dense"), r"layer 0: each layer needs a 'type'"),
    ("unknown-spec-key", {"input_shape": [784], "layers": [dense(10)], "name": "mine"},
     r"spec: unknown keys \['name'\]"),
    ("unknown-layer-key", spec([784], {"type": "dense", "out_features": 10, "units": 5}),
     r"layer 0 \(dense\): unknown parameters \['units'\]"),
    ("activation-param", spec([784], dense(8), {"type": "leaky_relu", "slope": 0.2}, dense(10)),
     r"layer 1 \(leaky_relu\): unknown parameters \['slope'\]"),
    # the last layer must be dense
    ("last-activation", spec([784], dense(10), RELU),
     r"spec: the last layer must be dense"),
    ("last-image", spec(IMAGE, conv(2, 3)),
     r"spec: the last layer must output class scores \(n, classes\), got shape \[2, 26, 26\]"),
    # over the limits
    ("parameters", spec([784], *[dense(MAX_WIDTH)] * 4, dense(10)),
     r"spec: 53,\d{3},\d{3} parameters, more than the limit of 50,000,000"),
    ("width", spec([784], dense(MAX_WIDTH + 1), dense(10)),
     r"layer 0 \(dense\): out_features must be a whole number from 1 to 4096, got 4097"),
    ("layers", spec([784], *[dense(8)] * (MAX_LAYERS + 1)),
     r"spec: layers must be a list of 1 to 64 layers"),
    ("no-layers", spec([784]), r"spec: layers must be a list of 1 to 64 layers"),
    ("activations", spec([1, 2048, 2048], RELU, FLAT, dense(10)),
     r"layer 0 \(relu\): its output of shape \[1, 2048, 2048\] is too large"),
    ("conv-activations", spec([1, 64, 64], conv(MAX_CHANNELS, 3, 1), pool(8), FLAT, dense(10)),
     r"layer 0 \(conv2d\): its output of shape \[512, 64, 64\] is too large"),
    # wrong types
    ("width-bool", spec([784], {"type": "dense", "out_features": True}),
     r"layer 0 \(dense\): out_features must be a whole number"),
    ("width-float", spec([784], {"type": "dense", "out_features": 10.0}),
     r"layer 0 \(dense\): out_features must be a whole number"),
    ("width-str", spec([784], {"type": "dense", "out_features": "10"}),
     r"layer 0 \(dense\): out_features must be a whole number"),
    ("width-missing", spec([784], {"type": "dense"}),
     r"layer 0 \(dense\): out_features must be a whole number .* got None"),
    ("dropout-1", spec([784], dense(8), {"type": "dropout", "p": 1.0}, dense(10)),
     r"layer 1 \(dropout\): p must be in \[0, 1\), got 1.0"),
    ("dropout-nan", spec([784], dense(8), {"type": "dropout", "p": float("nan")}, dense(10)),
     r"layer 1 \(dropout\): p must be in \[0, 1\)"),
    ("dropout-bool", spec([784], dense(8), {"type": "dropout", "p": True}, dense(10)),
     r"layer 1 \(dropout\): p must be in \[0, 1\)"),
    ("input-2d", spec([28, 28], dense(10)),
     r"spec: input_shape must be \[features\] or \[channels, height, width\]"),
    ("input-str", {"input_shape": "784", "layers": [dense(10)]}, r"spec: input_shape must be"),
    ("not-a-dict", [dense(10)], r"spec must be a dict, got list"),
]


@pytest.mark.parametrize("bad,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec_is_refused_naming_layer_and_parameter(bad, message):
    with pytest.raises(ValueError, match=message):
        check_spec(bad)
    with pytest.raises(ValueError, match=message):  # and the network is never built
        nn.Network(bad)


@pytest.mark.parametrize("kind", [["dense"], {"dense": 1}])
def test_unhashable_layer_type_is_a_value_error(kind):
    with pytest.raises(ValueError, match=r"layer 0: each layer needs a 'type'"):
        check_spec(spec([784], {"type": kind, "out_features": 10}))


def test_checking_allocates_nothing():
    """A spec of 37M parameters (150 MB) is checked without allocating its weights."""
    big = spec([784], dense(MAX_WIDTH), dense(MAX_WIDTH), dense(MAX_WIDTH), dense(10))
    with Usage() as usage:
        _, _, n = check_spec(big)
    assert 30_000_000 < n <= MAX_PARAMETERS
    assert usage.peak < 1 * MiB


def test_network_keeps_a_private_json_copy_of_its_spec():
    original = mlp_spec((8,))
    model = nn.Network(original)
    original["layers"][0]["out_features"] = 999
    assert model.spec == mlp_spec((8,)) and json.loads(json.dumps(model.spec)) == model.spec


# -- the two families ---------------------------------------------------------------------------

def test_mlp_spec_layers_and_shapes():
    s = mlp_spec((256, 128))
    assert s == {"input_shape": [784], "layers": [dense(256), RELU, dense(128), RELU, dense(10)]}
    assert shapes(s) == [(256,), (256,), (128,), (128,), (10,)]
    assert check_spec(s) == ((784,), 10, 785 * 256 + 257 * 128 + 129 * 10)
    with_dropout = mlp_spec((16, 8), "tanh", 0.2, n_inputs=20, n_classes=3)
    assert [layer["type"] for layer in with_dropout["layers"]] == [
        "dense", "tanh", "dropout", "dense", "tanh", "dropout", "dense"]
    assert with_dropout["layers"][2] == {"type": "dropout", "p": 0.2}
    assert check_spec(with_dropout) == ((20,), 3, 21 * 16 + 17 * 8 + 9 * 3)
    assert mlp_spec(()) == {"input_shape": [784], "layers": [dense(10)]}  # logistic regression


def test_mlp_spec_refuses_bad_arguments():
    with pytest.raises(ValueError, match="activation: unknown 'swish'"):
        mlp_spec((8,), "swish")
    with pytest.raises(ValueError, match="out_features"):
        mlp_spec((0,))
    with pytest.raises(ValueError, match="p must be in"):
        mlp_spec((8,), dropout=1.0)


def test_cnn_spec_layers_and_shapes():
    s = cnn_spec((8, 16), kernel=5, hidden=(64,))
    assert s["input_shape"] == IMAGE
    assert s["layers"] == [conv(8, 5, 2), RELU, pool(2), conv(16, 5, 2), RELU, pool(2), FLAT,
                           dense(64), RELU, dense(10)]
    assert shapes(s) == [(8, 28, 28), (8, 28, 28), (8, 14, 14), (16, 14, 14), (16, 14, 14),
                         (16, 7, 7), (784,), (64,), (64,), (10,)]
    n = (25 + 1) * 8 + (8 * 25 + 1) * 16 + (784 + 1) * 64 + 65 * 10
    assert check_spec(s) == ((1, 28, 28), 10, n) and count_parameters(s) == n
    # an even kernel pads (k - 1) // 2: 28 + 2 - 4 + 1 = 27, pooled to 13
    even = cnn_spec((4,), kernel=4, hidden=(), activation="tanh", dropout=0.5)
    assert even["layers"][0] == conv(4, 4, 1)
    assert shapes(even)[:4] == [(4, 27, 27), (4, 27, 27), (4, 13, 13), (676,)]


def test_cnn_spec_refuses_bad_arguments():
    with pytest.raises(ValueError, match="conv: a convolutional network needs"):
        cnn_spec(())
    with pytest.raises(ValueError, match="kernel must be a whole number from 1 to 15"):
        cnn_spec((4,), kernel=16)
    with pytest.raises(ValueError, match="activation: unknown"):
        cnn_spec((4,), activation="gelu")
    with pytest.raises(ValueError, match="out_channels"):
        cnn_spec((0,))
    with pytest.raises(ValueError, match=r"maxpool2d\): kernel_size 2 leaves nothing"):
        cnn_spec((2,) * 6)  # 28 -> 14 -> 7 -> 3 -> 1 -> nothing


def test_networks_built_from_the_families_have_those_shapes():
    model = nn.Network(cnn_spec((3, 5), kernel=3, hidden=(7,)), seed=0)
    assert model.kind == "cnn" and model.input_shape == (1, 28, 28) and model.n_inputs == 784
    assert [p.value.shape for p in model.parameters()] == [
        (3, 1, 3, 3), (3,), (5, 3, 3, 3), (5,), (245, 7), (7,), (7, 10), (10,)]
    assert model.n_parameters == count_parameters(model.spec)
    X = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    assert [out.shape for _, out in model.activations(X[0, 0])] == shapes(model.spec)
    assert model.forward(X).shape == (4, 10)
    mlp = nn.Network(mlp_spec((6,), n_inputs=20, n_classes=3))
    assert mlp.kind == "mlp" and mlp.input_shape == (20,) and mlp.n_classes == 3
    assert [p.value.shape for p in mlp.parameters()] == [(20, 6), (6,), (6, 3), (3,)]


def test_count_macs_by_hand():
    assert count_macs(mlp_spec((16,), n_inputs=20, n_classes=3)) == 20 * 16 + 16 * 3
    # conv 4 filters of 3x3 on one channel, 26x26 outputs; then 4*13*13 = 676 -> 10
    s = spec(IMAGE, conv(4, 3), RELU, pool(2), FLAT, dense(10))
    assert count_macs(s) == 4 * 9 * 26 * 26 + 676 * 10


def test_build_is_reproducible_and_initialises_by_activation():
    s = mlp_spec((256, 128), "relu")
    a, b = build(s, np.random.default_rng(7)), build(s, np.random.default_rng(7))
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        for p, q in zip(x.parameters(), y.parameters(), strict=True):
            assert np.array_equal(p.value, q.value) and p.value.dtype == np.float32
    assert not np.array_equal(a[0].W, build(s, np.random.default_rng(8))[0].W)
    # He before a ReLU: standard deviation sqrt(2 / fan_in)
    assert a[0].W.std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    # Glorot (uniform within sqrt(6 / (fan_in + fan_out))) before tanh and for the output layer
    limit = np.sqrt(6 / (128 + 10))
    assert np.abs(a[-1].W).max() <= limit and np.abs(a[-1].W).max() > 0.9 * limit
    tanh = build(mlp_spec((256,), "tanh"), np.random.default_rng(7))
    limit = np.sqrt(6 / (784 + 256))
    assert np.abs(tanh[0].W).max() <= limit and np.abs(tanh[0].W).max() > 0.9 * limit
    assert all(not layer.b.any() for layer in a if isinstance(layer, nn.Dense))


# -- describe -----------------------------------------------------------------------------------

@pytest.mark.parametrize("made,text", [
    (mlp_spec((16, 8), "tanh"), "784-16-8-10 (tanh)"),
    (mlp_spec((256, 128), dropout=0.1), "784-256-128-10 (relu)"),
    (mlp_spec(()), "784-10"),
    (mlp_spec((6,), "sigmoid", n_inputs=20, n_classes=3), "20-6-3 (sigmoid)"),
    (cnn_spec((8, 16), kernel=5, hidden=(64,)), "1x28x28-conv8x5-conv16x5-64-10 (relu)"),
    (cnn_spec((4,), kernel=3, hidden=(), activation="leaky_relu"),
     "1x28x28-conv4x3-10 (leaky_relu)"),
    (spec([784], dense(8), RELU, dense(8), {"type": "tanh"}, dense(10)), "784-8-8-10 (relu, tanh)"),
])
def test_describe(made, text):
    assert describe(made) == text
    assert nn.Network(made).describe() == text


# -- absurd specs in model files ------------------------------------------------------------------

ABSURD = [
    ("conv512x15", spec(IMAGE, *[conv(MAX_CHANNELS, MAX_KERNEL, 7)] * 4, pool(4), FLAT,
                        dense(10)),
     r"architecture is invalid \(spec: [\d,]+ parameters, more than the limit"),
    ("conv200x15", spec(IMAGE, *[conv(200, MAX_KERNEL, 7)] * 3, pool(4), FLAT, dense(10)),
     r"its header declares [\d,]+ weights but the file is only"),
    ("dense4096x20", spec([784], *[dense(MAX_WIDTH)] * 20, dense(10)),
     r"architecture is invalid \(spec: [\d,]+ parameters, more than the limit"),
    ("dense4096x2", spec([784], dense(MAX_WIDTH), RELU, dense(MAX_WIDTH), RELU, dense(10)),
     r"its header declares 20,037,642 weights but the file is only"),
    ("conv1x1x64", spec(IMAGE, conv(MAX_CHANNELS, 1), *[conv(MAX_CHANNELS, 1)] * 60, pool(15),
                        FLAT, dense(10)),
     r"its header declares [\d,]+ weights but the file is only"),
    ("huge-input", spec([MAX_CHANNELS, MAX_WIDTH, MAX_WIDTH], RELU, FLAT, dense(10)),
     r"architecture is invalid \(layer 0 \(relu\): its output .* is too large"),
]


@pytest.mark.parametrize("absurd,message", [a[1:] for a in ABSURD], ids=[a[0] for a in ABSURD])
def test_load_refuses_an_absurd_spec_in_a_tiny_file(tmp_path, absurd, message):
    """The spec is checked (limits, then parameters against the file's size) before
    any layer is built: refusing allocates next to nothing."""
    model = small_model(trained=True)
    header = header_of(model, "v2")
    header["spec"] = absurd
    path = write_zip(tmp_path / "absurd.npz", model_members(model, "v2", header))
    assert path.stat().st_size < 50_000
    with Usage() as usage:
        with pytest.raises(nn.ModelFileError, match=message):
            nn.load(path)
    assert usage.peak < 4 * MiB, f"allocated {usage.peak / MiB:.1f} MiB"
    assert usage.member_bytes < 100_000 and usage.pixels == 0


def test_limits_are_what_the_docs_say():
    assert (MAX_LAYERS, MAX_WIDTH, MAX_CHANNELS, MAX_KERNEL) == (64, 4096, 512, 15)
    assert MAX_PARAMETERS * 4 <= 256 * MiB  # fits in the largest model file nn.load reads
    assert MAX_ACTIVATIONS == 2_000_000
