"""``shape-pairs``: a Sort-of-CLEVR-style task with a relational and a local label on the same images.

Every image is a 32x32 RGB canvas cut into an 8x8 grid of 4x4-pixel cells (one cell per token of a
patch-4 model). It holds one filled **square**, one hollow **ring** and ``distractors`` **crosses**, each
filling one cell in one of six colours. The square and the ring are far apart: their cells are at least
``min_distance`` cells apart along a row or a column (Chebyshev distance; 6 by default, so one of them
sits in the two outer rows or columns on one side and the other on the opposite side).

Two labels of the same image (Santoro et al. 2017 ask relational and non-relational questions about
the same Sort-of-CLEVR scenes; here the question is fixed and each label is its own classifier output):

* ``same`` (relational, 2 classes): 1 when the ring has the square's colour. Half the images are
  positive. Neither object alone tells: a token must combine two places six cells apart, and a
  pooled linear head cannot combine them for it (no ``g`` with ``g(a) + g(b) > t`` exactly when
  ``a == b`` exists).
* ``colour`` (local control, 6 classes): the square's own colour, readable from the square's cell alone.

Crosses take any colour, the square's included, so "is there another object of the square's colour"
does not answer ``same``: the square must find the *ring*. Everything derives from (seed, index):
the same seed gives the same images, and nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CELL, GRID = 4, 8  # 4x4-pixel cells, 8x8 of them: a 32x32 canvas
COLOURS = np.array(
    [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.45, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0], [0.2, 1.0, 1.0]],
    dtype=np.float32,
)  # red, green, blue, yellow, magenta, cyan
SHAPES = {
    "square": np.ones((CELL, CELL), dtype=np.float32),
    "ring": np.pad(np.zeros((2, 2), dtype=np.float32), 1, constant_values=1.0),
    "cross": np.array([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], dtype=np.float32),
}
LABELS = {"same": 2, "colour": len(COLOURS)}


@dataclass(frozen=True)
class ShapePairs:
    """A generated set: ``images`` (n, 3, 32, 32) float32 in [0, 1]; ``labels[name]`` (n,) long for each of
    :data:`LABELS`; ``cells`` (n, 2 + distractors) long, the row-major cell (token) of the square, the ring
    and each cross; ``colours`` (n, 2 + distractors) long, their colours."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    cells: torch.Tensor
    colours: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def chebyshev(a: int, b: int) -> int:
    """Distance in cells between cells a and b (row-major on the 8x8 grid): max of the row and column gaps."""
    return max(abs(a // GRID - b // GRID), abs(a % GRID - b % GRID))


def _far_pair(rng: np.random.Generator, min_distance: int) -> tuple[int, int]:
    while True:  # rejection sampling: about 1 in 5 pairs is far enough at min_distance 6
        a, b = (int(c) for c in rng.integers(GRID * GRID, size=2))
        if chebyshev(a, b) >= min_distance:
            return a, b


def draw(cells: list[int], shapes: list[str], colours: list[int], noise: np.ndarray) -> np.ndarray:
    """(3, 32, 32) canvas: faint noise, and each shape in its colour in its cell."""
    image = noise.copy()
    for cell, shape, colour in zip(cells, shapes, colours, strict=True):
        top, left = (cell // GRID) * CELL, (cell % GRID) * CELL
        patch = SHAPES[shape][None] * COLOURS[colour][:, None, None]
        window = image[:, top : top + CELL, left : left + CELL]
        np.maximum(window, patch, out=window)
    return np.clip(image, 0.0, 1.0)


def make_shape_pairs(
    size: int, seed: int = 0, *, min_distance: int = 6, distractors: int = 2, colours: int = len(COLOURS)
) -> ShapePairs:
    """Generate ``size`` images from ``seed`` (module docstring); ``colours``: use the first n of :data:`COLOURS`."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not 1 <= min_distance <= GRID - 1:
        raise ValueError(f"min_distance must be in [1, {GRID - 1}] cells, got {min_distance}")
    if not 2 <= colours <= len(COLOURS):
        raise ValueError(f"colours must be in [2, {len(COLOURS)}], got {colours}")
    if not 0 <= distractors <= GRID * GRID - 2:
        raise ValueError(f"distractors must be in [0, {GRID * GRID - 2}], got {distractors}")
    images = np.empty((size, 3, GRID * CELL, GRID * CELL), dtype=np.float32)
    all_cells = np.empty((size, 2 + distractors), dtype=np.int64)
    all_colours = np.empty((size, 2 + distractors), dtype=np.int64)
    same = np.empty(size, dtype=np.int64)
    for i in range(size):
        rng = np.random.default_rng([seed, i])
        square, ring = _far_pair(rng, min_distance)
        free = np.setdiff1d(np.arange(GRID * GRID), [square, ring])
        crosses = [int(c) for c in rng.choice(free, size=distractors, replace=False)]
        same[i] = int(rng.random() < 0.5)
        square_colour = int(rng.integers(colours))
        ring_colour = square_colour if same[i] else int((square_colour + rng.integers(1, colours)) % colours)
        drawn = [square_colour, ring_colour, *(int(c) for c in rng.integers(colours, size=distractors))]
        cells = [square, ring, *crosses]
        noise = np.abs(rng.normal(0.0, 0.03, size=images.shape[1:])).astype(np.float32)
        images[i] = draw(cells, ["square", "ring"] + ["cross"] * distractors, drawn, noise)
        all_cells[i], all_colours[i] = cells, drawn
    labels = {"same": torch.from_numpy(same), "colour": torch.from_numpy(all_colours[:, 0].copy())}
    return ShapePairs(torch.from_numpy(images), labels, torch.from_numpy(all_cells), torch.from_numpy(all_colours))
