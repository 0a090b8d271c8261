"""How well the shipped network reads digits drawn the way people draw.

Redraws MNIST test digits on a 280x280 canvas at random sizes (60-250 px tall),
positions and stroke widths, in the three representations to_mnist accepts
(opaque canvas, transparent canvas, dark ink on light paper), and compares:

- the original 28x28 digits (the ceiling),
- nn.preprocess.to_mnist (MNIST's own recipe: crop, fit 20x20, centre of mass),
- the naive way: shrink the whole canvas to 28x28.

    python benchmarks/preprocess_eval.py [--n 2000] [--data DIR]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import nn  # noqa: E402
from canvas_sim import MODES, random_render  # noqa: E402


def naive_shrink(canvas):
    """The usual demo: the whole canvas's brightness resized to 28x28."""
    img = Image.fromarray(canvas).convert("L")
    return np.asarray(img.resize((28, 28), Image.BILINEAR), dtype=np.float32) / 255


def evaluate(model, X, y, n=2000, seed=2024):
    """Accuracy (fraction) for the originals, and per representation for to_mnist
    and for the naive shrink (opaque canvas only: the other two need inverting)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), n, replace=False)
    result = {"original": float((model.predict(X[idx]) == y[idx]).mean())}
    for mode in MODES:
        draw_rng = np.random.default_rng(7)
        ours, naive = [], []
        for i in idx:
            canvas = random_render(X[i].reshape(28, 28), draw_rng, mode=mode)
            ours.append(nn.preprocess.to_mnist(canvas).ravel())
            if mode == "opaque":
                naive.append(naive_shrink(canvas).ravel())
        result[f"to_mnist_{mode}"] = float((model.predict(np.array(ours)) == y[idx]).mean())
        if naive:
            result["naive_shrink_opaque"] = float((model.predict(np.array(naive)) == y[idx]).mean())
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="number of test digits")
    p.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_DATA)")
    p.add_argument("--model", default=str(ROOT / "weights" / "default.npz"))
    args = p.parse_args()
    model = nn.load(args.model)
    _, (X, y) = nn.data.load_mnist(args.data, download=False)
    result = evaluate(model, X, y, args.n)
    print(f"{args.n} MNIST test digits redrawn on a 280x280 canvas, read by {model.describe()}\n")
    print("| input | accuracy |\n| --- | --- |")
    for key, acc in result.items():
        print(f"| {key.replace('_', ' ')} | {100 * acc:.2f}% |")


if __name__ == "__main__":
    main()
