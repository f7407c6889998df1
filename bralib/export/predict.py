"""``bralib predict``'s work: a trained model's top-k classes for image files, and where its regions route.

:func:`load_predictor` takes a bralib training checkpoint (``.pt``, through
:func:`bralib.train.load_trained_model`, the project's safe loader) or a bralib safetensors file
(:func:`~bralib.export.safetensors_io.load_safetensors`); either says how to preprocess images and, when
known, the class names. :func:`routing_figure` draws, for every image, where a few query regions of one BRA
block route (the visualisation the official repository's users asked for), with
:func:`bralib.viz.routing.draw_routing`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bralib.export.safetensors_io import Preprocess


@dataclass
class Predictor:
    """A model in eval mode with what it needs to classify image files."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str] | None
    source: str

    def label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else f"class {index}"


@dataclass
class Prediction:
    """The top-k of one image: class numbers, names and probabilities, best first."""

    path: str
    classes: list[int]
    names: list[str]
    probs: list[float]


def load_predictor(path: str | os.PathLike) -> Predictor:
    """A :class:`Predictor` for a bralib training checkpoint or a bralib ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from bralib.export.safetensors_io import load_safetensors

        model, info = load_safetensors(path)
        preprocess = info.preprocess or Preprocess.of_model(model)
        return Predictor(model, preprocess, info.class_names, str(path))
    from bralib.export.convert import trained_class_names, trained_preprocess
    from bralib.train import load_trained_model

    model, config, info = load_trained_model(path)
    return Predictor(model, trained_preprocess(config), trained_class_names(config, info), str(path))


def load_images(paths: list[str | os.PathLike]) -> list[torch.Tensor]:
    """Image files -> (3, H, W) float tensors in [0, 1] (PIL decodes them; an unreadable file is named)."""
    from bralib.data.folder import read_image

    return [read_image(Path(p)) for p in paths]


def predict(predictor: Predictor, images: list[torch.Tensor], paths: list[str], topk: int = 5) -> list[Prediction]:
    """Top-``topk`` (at most the number of classes) of each (3, H, W) image, in one batch."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    batch = torch.stack([predictor.preprocess(image) for image in images])  # (B, 3, S, S)
    with torch.no_grad():
        probs = predictor.model(batch).softmax(dim=-1)  # (B, classes)
    values, indices = probs.topk(min(topk, probs.shape[-1]), dim=-1)  # (B, k)
    return [
        Prediction(str(path), row.tolist(), [predictor.label(i) for i in row.tolist()], p.tolist())
        for path, row, p in zip(paths, indices, values, strict=True)
    ]


def format_predictions(predictions: list[Prediction]) -> str:
    """One block per image: its path, then one line per class, ``  1.  73.4 %  3``."""
    lines = []
    for prediction in predictions:
        lines.append(prediction.path)
        ranked = zip(prediction.names, prediction.probs, strict=True)
        lines += [f"  {rank}. {100 * p:5.1f} %  {name}" for rank, (name, p) in enumerate(ranked, start=1)]
    return "\n".join(lines)


def spread_regions(n_win: int, count: int) -> list[int]:
    """``count`` region numbers spread evenly over the S*S regions (all of them when there are no more)."""
    n_regions = n_win * n_win
    if count >= n_regions:
        return list(range(n_regions))
    return sorted({int(round(r)) for r in np.linspace(0, n_regions - 1, count)})


def routing_figure(
    predictor: Predictor,
    images: list[torch.Tensor],
    predictions: list[Prediction],
    out: str | os.PathLike,
    *,
    stage: int | None = None,
    queries: list[int] | None = None,
    max_queries: int = 4,
) -> dict:
    """Draw where query regions route in each image and save the figure to ``out`` (PNG, PDF, SVG...).

    One row per image: the image as the model sees it (resized or cropped) with its top-1, then one panel per
    query region showing the regions it routes to in the last BRA block of ``stage`` (1-based; default: the
    last stage that routes, where chapter 8 found routing most content-driven).

    Returns a record: the stage and block drawn, n_win, topk and the query regions.
    """
    from matplotlib.figure import Figure  # no pyplot: no window, and a notebook's backend stays as it is

    from bralib.models.biformer import routing_maps
    from bralib.viz.routing import draw_routing

    batch = torch.stack([predictor.preprocess(image) for image in images])
    routes = routing_maps(predictor.model, batch)
    if not routes:
        raise ValueError(f"the model of {predictor.source!r} has no BRA blocks: nothing routes")
    stages = sorted({r.stage + 1 for r in routes})
    stage = stages[-1] if stage is None else stage
    if stage not in stages:
        raise ValueError(f"stage must be one of the stages that route, {stages} (1-based), got {stage}")
    route = [r for r in routes if r.stage + 1 == stage][-1]
    n_regions = route.n_win**2
    queries = spread_regions(route.n_win, max_queries) if queries is None else list(queries)
    bad = [q for q in queries if not 0 <= q < n_regions]
    if bad or not queries:
        raise ValueError(
            f"query regions must be in [0, {n_regions}) for stage {stage}'s {route.n_win}x{route.n_win} grid, "
            f"got {queries}"
        )
    pictures = [_as_seen(predictor.preprocess, image) for image in images]
    cols = 1 + len(queries)
    fig = Figure(figsize=(2.3 * cols, 2.8 * len(images)))
    axes = fig.subplots(len(images), cols, squeeze=False)
    for row, (picture, prediction) in enumerate(zip(pictures, predictions, strict=True)):
        ax = axes[row, 0]
        ax.imshow(picture, extent=(0, picture.shape[1], picture.shape[0], 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{Path(prediction.path).name}\ntop-1: {prediction.names[0]} ({100 * prediction.probs[0]:.0f} %)",
                     fontsize=8)  # fmt: skip
        for col, query in enumerate(queries, start=1):
            draw_routing(picture, route.index[row], route.n_win, query, ax=axes[row, col],
                         title=f"region {query} -> top-{route.index.shape[-1]}")  # fmt: skip
    fig.suptitle(f"where regions route: stage {stage}, block {route.block + 1} ({route.n_win}x{route.n_win} regions)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return {"stage": stage, "block": route.block + 1, "n_win": route.n_win, "topk": int(route.index.shape[-1]),
            "queries": queries, "out": str(out)}  # fmt: skip


def _as_seen(preprocess: Preprocess, image: torch.Tensor) -> np.ndarray:
    """The (S, S, 3) picture in [0, 1] that the model's input shows: the preprocessing without normalising."""
    normalised = preprocess(image)
    mean = torch.tensor(preprocess.mean)[:, None, None]
    std = torch.tensor(preprocess.std)[:, None, None]
    return (normalised * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
