"""Build fnn/_sample/fashion_mnist_sample.npz, the embedded Fashion-MNIST sample.

A deterministic, class-balanced subset of the real data: 300 train and 100 test images per
class (3000 + 1000), drawn without replacement with a fixed seed, kept in their original
order. The source indices are stored too, so the sample can be checked against the full set.

    python scripts/make_sample.py [--src /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from fnn.data import FILES, NUM_CLASSES, read_idx  # noqa: E402

SEED = 20170828  # Fashion-MNIST's release date
PER_CLASS = {"train": 300, "test": 100}
OUT = Path(__file__).resolve().parent.parent / "fnn" / "_sample" / "fashion_mnist_sample.npz"


def _find(src: Path, stem: str) -> Path:
    for p in (src / f"{stem}.gz", src / stem):
        if p.is_file():
            return p
    raise FileNotFoundError(f"make_sample: {stem}(.gz) not found in {src}")


def balanced_indices(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each class, drawn without replacement, returned sorted."""
    picks = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in range(NUM_CLASSES)]
    return np.sort(np.concatenate(picks)).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, (images, labels) in FILES.items():
        x, y = read_idx(_find(args.src, images)), read_idx(_find(args.src, labels))
        idx = balanced_indices(y, PER_CLASS[split], rng)
        arrays[f"x_{split}"], arrays[f"y_{split}"], arrays[f"{split}_indices"] = x[idx], y[idx], idx
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
