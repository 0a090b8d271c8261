"""app_logic.figures: PNG images made from NumPy and Vega-Lite charts.

Images are decoded again and checked pixel by pixel where the colours carry
meaning; charts are checked by their data (one row per bar, cell or point)
and by the parts of the spec a reader relies on (axes that start at 0).
"""

import io
import json

import matplotlib
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import nn
from app_logic import figures, inference

CMAP = matplotlib.colormaps["RdBu_r"]


def decode(png):
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def seven(mnist):
    X, y = mnist[1]
    return X[np.flatnonzero(y == 7)[0]].reshape(28, 28)


# ---------------------------------------------------------------- images

def test_enlarge_keeps_pixels_square():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = figures.enlarge(img, 4)
    assert big.shape == (8, 12)
    assert (big[:4, :4] == 0).all() and (big[4:, 8:] == 5).all()
    assert figures.enlarge(np.zeros((28, 28, 3), np.uint8), 7).shape == (196, 196, 3)


def test_preview_png_is_the_input_enlarged(seven):
    image = decode(figures.preview_png(seven))
    assert image.shape == (196, 196, 3)
    expected = np.rint(seven * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[::7, ::7, 0], expected)   # one value per 7x7 block
    np.testing.assert_array_equal(image[3::7, 6::7, 2], expected)
    assert decode(figures.preview_png(seven, scale=3)).shape == (84, 84, 3)
    np.testing.assert_array_equal(figures.gray_rgb(np.array([[-1.0, 0.5, 2.0]]))[0, :, 0],
                                  [0, 128, 255])


def test_diverging_colours_follow_the_sign():
    values = np.zeros((28, 28))
    values[5, 5], values[20, 20] = 2.0, -1.0
    rgb = figures.diverging_rgb(values)
    assert rgb.shape == (28, 28, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[5, 5]) == tuple(CMAP(1.0, bytes=True)[:3])      # largest: full red
    assert tuple(rgb[0, 0]) == tuple(CMAP(0.5, bytes=True)[:3])      # zero: the middle (white)
    assert tuple(rgb[20, 20]) == tuple(CMAP(0.25, bytes=True)[:3])   # half as strong, blue
    r, g, b = rgb[5, 5].astype(int)
    assert r > 2 * b and r > 2 * g
    r, g, b = rgb[20, 20].astype(int)
    assert b > r + 50
    assert (rgb[0, 0] > 240).all()
    assert (figures.diverging_rgb(np.zeros((3, 3))) == rgb[0, 0]).all()   # no division by 0
    # A fixed limit: values beyond it are clipped, those within scale to it.
    fixed = figures.diverging_rgb(np.array([[4.0, 1.0, -8.0]]), limit=2.0)
    assert tuple(fixed[0, 0]) == tuple(CMAP(1.0, bytes=True)[:3])
    assert tuple(fixed[0, 1]) == tuple(CMAP(0.75, bytes=True)[:3])
    assert tuple(fixed[0, 2]) == tuple(CMAP(0.0, bytes=True)[:3])


def test_saliency_png(seven, default_model):
    grad = inference.smoothgrad(default_model, seven, 7)
    image = decode(figures.saliency_png(seven, grad))
    assert image.shape == (196, 196, 3)
    assert (image == figures.OUTLINE_RGB).all(axis=2).any()   # the drawing's outline
    # Away from the ink the colours are those of the gradient.
    far = np.argwhere(seven < 0.5)[0]
    np.testing.assert_array_equal(image[far[0] * 7 + 3, far[1] * 7 + 3],
                                  figures.diverging_rgb(grad)[far[0], far[1]])


def test_the_outline_is_the_edge_of_the_ink():
    img = np.zeros((28, 28), np.float32)
    img[10:15, 10:15] = 1.0                      # a 5x5 blob of ink: 35x35 pixels enlarged
    image = decode(figures.saliency_png(img, np.zeros((28, 28))))
    edge = (image == figures.OUTLINE_RGB).all(axis=2)
    assert edge.sum() == 4 * 35 - 4
    assert edge[70, 70:105].all() and edge[70:105, 104].all() and not edge[71:104, 71:104].any()


def test_colour_bar_png():
    image = decode(figures.colour_bar_png("less likely", "more likely"))
    assert image.shape == (14 + 16, 196, 3)
    left, right = image[5, 0].astype(int), image[5, -1].astype(int)
    assert left[2] > left[0] and right[0] > right[2]    # blue on the left, red on the right
    assert decode(figures.colour_bar_png("0", "1", width=100, height=10,
                                         diverging=False)).shape == (26, 100, 3)


def test_mosaic_png_shapes_and_scales():
    tiles = np.zeros((5, 4, 6))
    tiles[0] += 1.0
    tiles[1] += 0.5
    tiles[2] -= 1.0
    image = decode(figures.mosaic_png(tiles, cols=3, scale=3, gap=2))
    assert image.shape == (2 * (4 * 3 + 2) - 2, 3 * (6 * 3 + 2) - 2, 3)
    assert (image[:, 18:20] == 255).all() and (image[12:14] == 255).all()   # white gaps
    assert (image[14:, 40:] == 255).all()          # the missing sixth tile is left white
    red = tuple(CMAP(1.0, bytes=True)[:3])
    assert tuple(image[0, 0]) == red and tuple(image[0, 20]) == red   # each on its own scale
    shared = decode(figures.mosaic_png(tiles, cols=3, scale=3, gap=2, shared_scale=True))
    assert tuple(shared[0, 0]) == red and tuple(shared[0, 20]) == tuple(CMAP(0.75, bytes=True)[:3])
    assert tuple(shared[0, 40]) == tuple(CMAP(0.0, bytes=True)[:3])
    viridis = decode(figures.mosaic_png(tiles[:2], cols=2, diverging=False))
    assert viridis.shape == (12, 2 * 18 + 2, 3)


def test_mosaic_of_a_networks_first_layer():
    from app_logic import jobs

    model = nn.Network(nn.mlp_spec((64,)), seed=0)
    frames = jobs.first_layer_weights(model)
    image = decode(figures.mosaic_png(frames, cols=8))
    assert image.shape == (4 * (28 * 3 + 2) - 2, 8 * (28 * 3 + 2) - 2, 3)


def test_weights_png_of_a_dense_and_a_convolutional_first_layer():
    from app_logic import jobs

    dense = jobs.first_layer_weights(nn.Network(nn.mlp_spec((64,)), seed=0))
    image = decode(figures.weights_png(dense))       # each unit as 28x28, 16 a row
    rows = -(-len(dense) // 16)
    assert image.shape == (rows * (28 * 3 + 2) - 2, 16 * (28 * 3 + 2) - 2, 3)
    conv = jobs.first_layer_weights(nn.Network(nn.cnn_spec((12, 4), kernel=5), seed=0))
    assert conv.shape == (12, 5, 5)
    image = decode(figures.weights_png(conv))        # 12 filters of 5x5 at 35 px, 8 a row
    assert image.shape == (2 * (35 + 6) - 6, 8 * (35 + 6) - 6, 3)
    assert image.shape[1] <= 358                     # a 390 px phone's column
    assert (image[35:41] == 255).all() and (image[:, 35:41] == 255).all()   # the gaps
    assert (image[41:, 4 * 41:] == 255).all()        # no 13th to 16th filter: white
    assert figures.display_width(figures.weights_png(conv)) == image.shape[1]
    assert figures.display_width(figures.weights_png(dense)) == "content"  # wider than 700 px


def test_strip_png():
    image = decode(figures.strip_png(np.arange(100.0), per_row=64, scale=10))
    assert image.shape == (20, 640, 3)
    assert (image[10:, 360:] == 255).all()                # past the last unit: white
    low, high = image[0, 0].astype(int), image[10, 350].astype(int)
    assert high[0] > low[0] and high[1] > low[1]          # dark for low, yellow for high
    assert decode(figures.strip_png(np.ones(64))).shape == (10, 640, 3)


@pytest.mark.parametrize("units", [8, 32])
def test_strip_png_of_a_narrow_layer(units):
    assert decode(figures.strip_png(np.arange(float(units)))).shape == (10, 10 * units, 3)


# ---------------------------------------------------------------- charts

def check_chart(chart, rows):
    data, spec = chart
    assert isinstance(data, pa.Table) and isinstance(spec, dict)
    assert data.num_rows == rows
    assert "data" not in spec          # the data go separately, as Arrow
    json.dumps(spec)                   # plain JSON for the browser
    return data.to_pylist(), spec


def test_probability_chart():
    probs = np.array([0.01, 0.02, 0.9, 0.03, 0.01, 0.01, 0.0, 0.01, 0.01, 0.0])
    rows, spec = check_chart(figures.probability_chart(probs), 10)
    assert [r["digit"] for r in rows] == [str(k) for k in range(10)]
    assert rows[2]["probability"] == pytest.approx(90.0)
    assert [r["top"] for r in rows] == [k == 2 for k in range(10)]
    assert rows[2]["label"] == "90%" and rows[6]["label"] == ""
    assert spec["encoding"]["y"]["scale"]["domain"] == [0, 100]


def test_curves_chart_rows_per_run_epoch_and_split():
    def history(n, val=True):
        return [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + e / 100,
                 "val_loss": 2 / e if val else None, "val_acc": 0.4 + e / 100 if val else None}
                for e in range(1, n + 1)]

    runs = [("Run 1", history(3)), ("Run 2", history(2)), ("Run 3", history(4, val=False))]
    rows, spec = check_chart(figures.curves_chart(runs, "accuracy"), 3 * 2 + 2 * 2 + 4)
    assert {(r["run"], r["data"]) for r in rows} >= {("Run 1", "validation"),
                                                      ("Run 3", "training")}
    assert not [r for r in rows if r["run"] == "Run 3" and r["data"] == "validation"]
    first = [r for r in rows if r["run"] == "Run 1" and r["data"] == "training"]
    assert [r["value"] for r in first] == pytest.approx([51, 52, 53])
    assert spec["encoding"]["color"]["field"] == "run"
    rows, spec = check_chart(figures.curves_chart(runs[:1], "loss"), 6)
    assert [r["value"] for r in rows if r["data"] == "validation"] == pytest.approx([2, 1, 2 / 3])
    assert spec["encoding"]["color"]["field"] == "data"    # one run: colour tells the splits
    check_chart(figures.curves_chart([], "loss"), 0)


def test_confusion_chart_has_100_cells():
    cm = np.arange(100).reshape(10, 10)
    rows, spec = check_chart(figures.confusion_chart(cm), 100)
    for r in rows:
        assert r["count"] == cm[int(r["true digit"]), int(r["predicted"])]
    zero = rows[0]
    assert zero["count"] == 0 and np.isnan(zero["shown"])   # log scale: no colour for 0
    assert rows[99]["dark"] and not rows[1]["dark"]
    assert spec["layer"][0]["encoding"]["color"]["scale"]["type"] == "log"


def test_confusion_axes_are_in_digit_order_whatever_the_data_order():
    """Vega-Lite builds an ordinal axis in data order unless told, and the log scale
    drops the empty cells: a matrix whose first mistake is a 0 read as 6 showed its
    columns as 0 6 1 2 ... (seen on the Evaluation tab). Both axes name their order."""
    cm = np.diag([900] * 10)
    cm[0, 6] = 1
    digits = [str(d) for d in range(10)]
    for chart in (figures.confusion_chart(cm), figures.confusion_difference_chart(cm, cm.T)):
        _, spec = chart
        assert spec["encoding"]["x"]["sort"] == digits
        assert spec["encoding"]["y"]["sort"] == digits


def test_per_class_chart_has_30_bars_on_a_full_axis(default_model):
    per_class = default_model.metrics["per_class"]
    rows, spec = check_chart(figures.per_class_chart(per_class), 30)
    assert spec["encoding"]["y"]["scale"]["domain"] == [0, 100]
    assert {r["score"] for r in rows} == {"precision", "recall", "F1"}
    f1 = [r["value"] for r in rows if r["score"] == "F1"]
    assert f1 == [round(100 * v, 2) for v in per_class["f1"]]


def test_confusion_difference_chart():
    a = np.diag([100] * 10)
    b = a.copy()
    b[3, 3], b[3, 5] = 95, 5          # B reads five 3s as 5s
    rows, _ = check_chart(figures.confusion_difference_chart(a, b), 100)
    cells = {(r["true digit"], r["predicted"]): r for r in rows}
    assert cells["3", "3"]["change"] == -5 and cells["3", "3"]["verdict"] == "worse"
    assert cells["3", "5"]["change"] == 5 and cells["3", "5"]["verdict"] == "worse"
    assert cells["3", "5"]["label"] == "+5" and cells["0", "0"]["label"] == ""
    rows, _ = check_chart(figures.confusion_difference_chart(b, a), 100)
    assert {r["verdict"] for r in rows} == {"", "better"}


def test_the_draw_tabs_pictures_build_no_matplotlib_figure(monkeypatch, seven, default_model):
    """Redrawn on every pen stroke: built from arrays, never through a Figure."""
    import matplotlib.figure

    def no_figure(*args, **kwargs):
        raise AssertionError("a matplotlib Figure was built")

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", no_figure)
    probs = inference.predict(default_model, seven)
    grad = inference.smoothgrad(default_model, seven, int(probs.argmax()))
    figures.preview_png(seven)
    figures.saliency_png(seven, grad)
    figures.probability_chart(probs)
    figures.colour_bar_png("less", "more")
    figures.mosaic_png(np.random.default_rng(0).normal(size=(8, 5, 5)), cols=4)
    figures.strip_png(np.arange(100.0))
    views = inference.layer_views(default_model, seven)
    for view in views[:-1]:                 # as the Inside tab shows them
        if view.kind == "maps":
            figures.mosaic_png(view.values, cols=min(16, len(view.values)), diverging=False)
        else:
            figures.strip_png(view.values)
