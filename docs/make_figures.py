"""Draw the README's pictures: ``python docs/make_figures.py`` writes docs/routing.png (about 900 px wide).

The routing is real BRA routing (``bralib.ops.route_regions``, S = 7, k = 4) on a 56 x 56 token grid, the size
of BiFormer's first stage for a 224 x 224 input, with hand-made colour/texture features as queries and keys
(``bralib.viz.simple_features``; chapter 3 explains them). Deterministic: no randomness, no model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from bralib.ops import masks, route_regions
from bralib.viz.routing import (
    ROUTED_COLOR,
    draw_routing,
    draw_token_attention,
    region_box,
    sample_image,
    simple_features,
)

N_WIN, TOPK, GRID = 7, 4, 56  # regions per side, routed regions, tokens per side
QUERY_REGIONS = (10, 36)  # the face and the orange suit, in the row-major numbering of the 7 x 7 regions
QUERY_TOKEN = (12, 26)  # a token on the face (row, column of the 56 x 56 grid), inside region 10
SHARPNESS = 2.0  # scales the unit-length features: larger makes the token attention peakier


def routing_figure(path: Path) -> Path:
    picture = sample_image("astronaut", 224)  # what is drawn
    features = simple_features(sample_image("astronaut", GRID))  # (1, 56, 56, 5): one feature vector per token
    _, index = route_regions(features, features, n_win=N_WIN, topk=TOPK)  # (1, 49, 4)

    tokens = features.flatten(1, 2) * SHARPNESS  # (1, N, 5)
    logits = tokens @ tokens.transpose(-1, -2)  # (1, N, N)
    allowed = masks.routed_mask(index, GRID, GRID, N_WIN)  # (1, N, N)
    query = QUERY_TOKEN[0] * GRID + QUERY_TOKEN[1]
    weights = torch.softmax(logits[0, query].masked_fill(~allowed[0, query], float("-inf")), -1)  # (N,)
    region = (QUERY_TOKEN[0] // (GRID // N_WIN)) * N_WIN + QUERY_TOKEN[1] // (GRID // N_WIN)
    assert region == QUERY_REGIONS[0], "the query token must lie in the first query region"

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.35), dpi=100)
    for ax, query_region, what in zip(axes[:2], QUERY_REGIONS, ("face", "suit"), strict=True):
        draw_routing(picture, index[0], N_WIN, query_region, ax, linewidth=2.2,
                     title=f"{what}: region {query_region} routes to k={TOPK} regions")  # fmt: skip
    draw_token_attention(picture, weights.reshape(GRID, GRID), QUERY_TOKEN, axes[2], n_win=N_WIN, alpha=0.9,
                         cmap="plasma", title=f"one token of region {region} attends to their tokens")  # fmt: skip
    for routed in index[0, region].tolist():  # outline the routed regions again, to show where the weights live
        x, y, w, h = region_box(routed, N_WIN, *picture.shape[:2])
        axes[2].add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=ROUTED_COLOR, linewidth=1.6))
    for ax in axes:
        ax.title.set_fontsize(9.5)
    fig.suptitle("Bi-level routing attention: route regions first, then attend to the routed regions' tokens",
                 fontsize=10.5)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.96), w_pad=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="folder for the pictures")
    args = parser.parse_args()
    print("wrote", routing_figure(args.out / "routing.png"))


if __name__ == "__main__":
    main()
