"""``digits-pairs``: a small offline task that needs long-range relations, built from scikit-learn's digits.

Every image is a 64x64 RGB canvas holding two **key digits** far apart (centres at least half the
canvas side apart), ``distractors`` other digits (2 by default), faint noise and, if asked for,
``strokes`` grey line segments (clutter; none by default). The label is a relation between the two key digits:

* ``"partner"`` (the default, 10 classes). The first key digit, the **cue**, has a small white dot
  by its top-left corner; the second, its **partner**, has the cue's tint; every distractor has a tint of its own.
  The label is the partner's digit. Where the partner is, and so which of the unmarked digits the
  label is about, only shows from the cue's colour half a canvas away: a region must find the one
  far-away region that looks like the cue and read it.
* ``"cue"`` (10 classes): the same images as ``"partner"`` (for the same seed, pixel for pixel), but
  labelled by the marked cue's own digit: a *local* task, the control. A model that solves ``"cue"``
  reads marked digits; only ``"partner"`` asks it to find a far-away one. It also makes a cheap
  pretraining task: recognising digits is most of the work, and ``"cue"`` teaches it directly.
* ``"same"`` (2 classes: 1 if the key digits show the same digit) and ``"sum-mod-10"`` (10 classes:
  their sum modulo 10). Here both key digits are white and the distractors tinted.

Neither key digit alone gives the label (for ``"partner"``: the partner alone is not told apart from
the distractors), so a model must bring together two places half a canvas apart. A local-window
attention can only pass that on region by region, through depth; routing can send a region straight
to the other key digit. Chapter 8 measures how often a trained BiFormer's routing does.

Digits are the 8x8 images of ``sklearn.datasets.load_digits`` (1,797 handwritten digits),
upsampled 2x to 16x16. A fixed split assigns 80 % of them to ``train`` and 20 % to ``val``: the two
splits never share a source image. Every image is composed on the fly from (seed, split, index), so
the dataset is deterministic, needs no storage and costs no time to build.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RELATIONS = {"partner": 10, "cue": 10, "same": 2, "sum-mod-10": 10}
MARKED = ("partner", "cue")  # relations drawn with a marked cue and a same-tinted partner
MARK, MARK_GAP = 2, 1  # the cue's mark: a 2x2 white dot, 1 pixel up and left of the digit's box
SPLITS = ("train", "val")
DEFAULT_SIZES = {"train": 3072, "val": 1024}
# Tints of the distractor digits: saturated colours, never white.
TINTS = np.array(
    [[1.0, 0.25, 0.25], [0.25, 1.0, 0.25], [0.3, 0.45, 1.0], [1.0, 1.0, 0.2], [1.0, 0.3, 1.0], [0.2, 1.0, 1.0]]
)


@dataclass(frozen=True)
class Digit:
    """One digit on the canvas: its box (top, left, size) in pixels, class, source image and tint."""

    top: int
    left: int
    size: int
    digit: int
    source: int
    tint: tuple[float, float, float]
    marked: bool = False  # a white dot by its top-left corner (the cue of "partner" and "cue")

    @property
    def center(self) -> tuple[float, float]:
        return self.top + self.size / 2, self.left + self.size / 2


@dataclass(frozen=True)
class Layout:
    """Everything drawn on one canvas, and its label."""

    keys: tuple[Digit, Digit]  # the two digits the label relates (for "partner": the cue, then its partner)
    distractors: tuple[Digit, ...]
    strokes: tuple[tuple[float, float, float, float, float], ...]  # (y0, x0, y1, x1, brightness)
    label: int


INSTALL_HINT = (
    "the digits-pairs dataset needs scikit-learn (it ships the handwritten digits): "
    "pip install 'bralib[data]'  (or: pip install scikit-learn)"
)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float images in [0, 1] and (1797,) labels: the data of ``sklearn.datasets.load_digits``.

    Reads the CSV file that scikit-learn ships (what ``load_digits`` reads) without importing
    scikit-learn itself, which takes seconds; falls back to ``load_digits`` if the file has moved.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL_HINT)
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        data = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        images, labels = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    else:  # pragma: no cover - depends on the scikit-learn version
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError(INSTALL_HINT) from err
        bunch = load_digits()
        images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    return images / 16.0, labels


@functools.lru_cache(maxsize=4)
def source_digits(split: str, scale: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's source digits: images (N, 8*scale, 8*scale) float32, labels (N,), sklearn indices (N,).

    The split is fixed (it does not depend on the dataset's seed), so no seed can leak a validation
    digit into training.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = load_sklearn_digits()
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    chosen = np.sort(order[:cut] if split == "train" else order[cut:])
    upsampled = F.interpolate(torch.from_numpy(images[chosen])[:, None], scale_factor=scale, mode="bilinear")
    return upsampled[:, 0].clamp(0, 1).numpy(), labels[chosen], chosen


def _overlaps(top: int, left: int, size: int, placed: list[tuple[int, int, int]], gap: int) -> bool:
    return any(
        top < t + s + gap and t < top + size + gap and left < l + s + gap and l < left + size + gap
        for t, l, s in placed
    )


def _draw_line(canvas: np.ndarray, y0: float, x0: float, y1: float, x1: float, color: np.ndarray) -> None:
    steps = int(max(abs(y1 - y0), abs(x1 - x0))) * 2 + 1
    ys = np.clip(np.round(np.linspace(y0, y1, steps)).astype(int), 0, canvas.shape[1] - 1)
    xs = np.clip(np.round(np.linspace(x0, x1, steps)).astype(int), 0, canvas.shape[2] - 1)
    canvas[:, ys, xs] = np.maximum(canvas[:, ys, xs], color[:, None])


def _draw_mark(canvas: np.ndarray, top: int, left: int) -> None:
    """The cue's mark: a white MARK x MARK dot just outside the top-left corner of the box at (top, left).

    A dot rather than a frame: in short probes while designing this task (one digit per canvas, 75-100
    steps), an outline around the digit kept biformer_nano's loss flat, a dot beside it did not.
    """
    canvas[:, top - MARK_GAP - MARK : top - MARK_GAP, left - MARK_GAP - MARK : left - MARK_GAP] = 1.0


class DigitsPairs(torch.utils.data.Dataset):
    """The digits-pairs task (see the module docstring): index -> (image (3, canvas, canvas) in [0, 1], label).

    Args:
        split: ``"train"`` or ``"val"`` (disjoint source digits).
        size: number of images; default 3,072 for train and 1,024 for val.
        seed: all randomness of the layouts derives from (seed, split, index).
        relation: ``"partner"`` (10 classes: the digit of the marked cue's same-tinted partner),
            ``"cue"`` (10 classes: the marked cue's own digit, same images as ``"partner"``),
            ``"same"`` (2 classes: are the two white key digits equal) or ``"sum-mod-10"`` (10 classes).
        canvas: side of the square image in pixels (>= 48).
        distractors: tinted digits besides the two key digits (for ``"partner"``: never the keys' tint, and
            all different from each other up to 5).
        strokes: random grey line segments per image (clutter).
        min_distance: smallest distance between the key digits' centres; default ``canvas / 2``.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        *,
        seed: int = 0,
        relation: str = "partner",
        canvas: int = 64,
        distractors: int = 2,
        strokes: int = 0,
        min_distance: float | None = None,
    ) -> None:
        if relation not in RELATIONS:
            raise ValueError(f"relation must be one of {list(RELATIONS)}, got {relation!r}")
        if canvas < 48:
            raise ValueError(f"canvas must be at least 48 pixels to hold two far-apart 16-pixel digits, got {canvas}")
        if distractors < 0 or strokes < 0:
            raise ValueError(f"distractors and strokes must be >= 0, got {distractors} and {strokes}")
        size = DEFAULT_SIZES[split] if size is None and split in DEFAULT_SIZES else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.images, self.digit_labels, self.sklearn_index = source_digits(split)
        self.split, self.size, self.seed, self.relation = split, size, seed, relation
        self.canvas, self.n_distractors, self.n_strokes = canvas, distractors, strokes
        self.min_distance = canvas / 2 if min_distance is None else min_distance
        self.num_classes = RELATIONS[relation]
        self.by_digit = [np.flatnonzero(self.digit_labels == d) for d in range(10)]

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int, variant: int, stream: int) -> np.random.Generator:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of {self.size} images")
        return np.random.default_rng([self.seed, SPLITS.index(self.split), index, variant, stream])

    def _key_digits(self, rng: np.random.Generator) -> tuple[list[int], int]:
        """Source images of the two key digits and the label."""
        if self.relation == "same":
            same = bool(rng.random() < 0.5)
            first = int(rng.integers(10))
            second = first if same else int((first + rng.integers(1, 10)) % 10)
            a = int(rng.choice(self.by_digit[first]))
            pool = self.by_digit[second][self.by_digit[second] != a]  # never the same drawing twice
            return [a, int(rng.choice(pool))], int(same)
        a, b = (int(i) for i in rng.integers(len(self.images), size=2))
        if self.relation in MARKED:  # the same draws for both: "cue" and "partner" images are identical
            return [a, b], int(self.digit_labels[b if self.relation == "partner" else a])
        return [a, b], int((self.digit_labels[a] + self.digit_labels[b]) % 10)

    def _far_apart(self, rng: np.random.Generator, count: int, span: int, low: int = 0) -> np.ndarray:
        """(count, 2) top-left corners in [low, span] whose pairwise distances are all >= min_distance."""
        while True:  # rejection sampling
            corners = rng.integers(low, span + 1, size=(count, 2))
            distances = np.hypot(*(corners[:, None] - corners[None]).transpose(2, 0, 1))
            if distances[np.triu_indices(count, 1)].min() >= self.min_distance:
                return corners

    def layout(self, index: int, variant: int = 0) -> Layout:
        """Where everything goes on image ``index`` and its label (what ``__getitem__`` draws).

        ``variant`` draws another image for the same index (the training loader passes one per epoch).
        """
        rng = self._rng(index, variant, 0)
        sources, label = self._key_digits(rng)
        side = self.images.shape[-1]
        span = self.canvas - side
        marked = self.relation in MARKED
        room = MARK + MARK_GAP if marked else 0  # the cue's mark must fit on the canvas
        corners = self._far_apart(rng, len(sources), span, low=room)
        tint_order = rng.permutation(len(TINTS))  # marked relations: keys share the first tint, distractors differ
        key_tint = tuple(float(c) for c in TINTS[tint_order[0]]) if marked else (1.0, 1.0, 1.0)
        keys = tuple(
            Digit(int(top), int(left), side, int(self.digit_labels[source]), source, key_tint,
                  marked=marked and i == 0)
            for i, ((top, left), source) in enumerate(zip(corners, sources, strict=True))
        )  # fmt: skip
        placed = [(d.top - room, d.left - room, side + room) if d.marked else (d.top, d.left, side) for d in keys]
        distractors = []
        for i in range(self.n_distractors):
            for _attempt in range(50):  # a free spot; a crowded canvas may hold fewer distractors
                top, left = (int(v) for v in rng.integers(0, span + 1, size=2))
                if not _overlaps(top, left, side, placed, gap=2):
                    break
            else:
                continue
            source = int(rng.integers(len(self.images)))
            tint_index = tint_order[1 + i % (len(TINTS) - 1)] if marked else rng.integers(len(TINTS))
            tint = tuple(float(c) for c in TINTS[tint_index])
            distractors.append(Digit(top, left, side, int(self.digit_labels[source]), source, tint))
            placed.append((top, left, side))
        strokes = tuple(
            (*(float(v) for v in rng.uniform(0, self.canvas - 1, size=4)), float(rng.uniform(0.25, 0.6)))
            for _ in range(self.n_strokes)
        )
        return Layout(keys, tuple(distractors), strokes, label)

    def render(self, layout: Layout, index: int, variant: int = 0) -> np.ndarray:
        """(3, canvas, canvas) float32 in [0, 1]."""
        rng = self._rng(index, variant, 1)
        image = np.abs(rng.normal(0.0, 0.04, size=(3, self.canvas, self.canvas))).astype(np.float32)
        for y0, x0, y1, x1, brightness in layout.strokes:  # grey: colour is how digits are told apart
            _draw_line(image, y0, x0, y1, x1, np.full(3, brightness, dtype=np.float32))
        for digit in (*layout.keys, *layout.distractors):
            patch = self.images[digit.source][None] * np.asarray(digit.tint, dtype=np.float32)[:, None, None]
            window = image[:, digit.top : digit.top + digit.size, digit.left : digit.left + digit.size]
            np.maximum(window, patch, out=window)
            if digit.marked:
                _draw_mark(image, digit.top, digit.left)
        return np.clip(image, 0.0, 1.0)

    def sample(self, index: int, variant: int = 0) -> tuple[torch.Tensor, int]:
        """Image ``index`` in its ``variant`` (0 is what ``dataset[index]`` returns) and its label."""
        layout = self.layout(index, variant)
        return torch.from_numpy(self.render(layout, index, variant)), layout.label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.sample(index)

    def __repr__(self) -> str:
        return (
            f"DigitsPairs(split={self.split!r}, size={self.size}, relation={self.relation!r}, seed={self.seed}, "
            f"canvas={self.canvas}, distractors={self.n_distractors}, strokes={self.n_strokes})"
        )
