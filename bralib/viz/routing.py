"""Pictures of bi-level routing over an image: the region grid, where a region routes, what a token attends.

Conventions shared by every function here, so the chapters, the trained-model chapter and the widgets agree:

* ``image`` is (H, W, 3) or (H, W) (also (H, W, 1) or a torch (3, H, W)), numpy array or tensor, uint8 or
  float in [0, 1]. It is drawn with ``extent=(0, W, H, 0)``: pixel edges at whole numbers, so region
  ``r = i * S + j`` (row-major, like :func:`bralib.ops.to_regions`) covers x in [j W/S, (j+1) W/S) and
  y in [i H/S, (i+1) H/S). The feature map the routing came from may be smaller than the image (a model's
  stage works on H/4 x W/4 tokens, say): regions are fractions of the picture, whatever its size.
* ``index`` is one image's routing index, (S*S, topk) (a leading batch of 1 is accepted), as returned by
  :func:`bralib.ops.route_regions` or ``BiLevelRoutingAttention(..., return_routing=True)``.
* Each ``draw_*`` function draws into ``ax`` (a new figure when None) and returns a small record of what it
  drew (the axes and the artists), so a test or a widget can inspect or update them.

:func:`sample_image` and :func:`simple_features` give a real picture and hand-made colour/texture features,
so routing can be shown before any model is trained (chapter 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

QUERY_COLOR = "#ffd400"  # the query region: yellow
ROUTED_COLOR = "#00e5ff"  # the regions it routes to: cyan
SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea")


@dataclass
class RoutingDrawing:
    """What :func:`draw_routing` drew: ``routed`` maps each routed region to its rectangle, in rank order."""

    ax: Any
    image: Any
    query: Any
    routed: dict[int, Any]
    shade: Any = None
    grid: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)


@dataclass
class AttentionDrawing:
    """What :func:`draw_token_attention` drew: the heat map's data is the (h, w) attention of one query."""

    ax: Any
    image: Any
    heatmap: Any
    marker: Any
    grid: list[Any] = field(default_factory=list)


# ---------------------------------------------------------------- inputs


def as_image(image: Any) -> np.ndarray:
    """Any supported image -> float (H, W, 3) or (H, W) numpy array in [0, 1] (see the module docstring)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # a torch-style (C, H, W) picture
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"image must be (H, W, 3), (H, W, 1), (3, H, W) or (H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == bool:
        return array.astype(np.float32)
    array = array.astype(np.float32)
    return np.clip(array, 0.0, 1.0) if array.size and (array.min() < 0 or array.max() > 1) else array


def as_index(index: Any, n_win: int) -> np.ndarray:
    """One image's routing index as an (S*S, topk) int array; a leading batch of 1 is dropped."""
    array = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    n_regions = n_win * n_win
    if array.ndim != 2 or array.shape[0] != n_regions:
        raise ValueError(
            f"index must be one image's routing index of shape (n_win**2, topk) = ({n_regions}, topk) "
            f"for n_win={n_win} (a batch of 1 is accepted), got shape {array.shape}"
        )
    if array.size and (array.min() < 0 or array.max() >= n_regions):
        raise ValueError(f"index values must be region numbers in [0, {n_regions}), got {array.min()}..{array.max()}")
    return array.astype(np.int64)


def _check_region(name: str, region: int, n_win: int) -> int:
    if isinstance(region, bool) or not isinstance(region, int | np.integer) or not 0 <= region < n_win * n_win:
        raise ValueError(f"{name} must be a region number in [0, n_win**2) = [0, {n_win * n_win}), got {region!r}")
    return int(region)


def _axes(ax: Any, figsize: tuple[float, float] = (4, 4)) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


# ---------------------------------------------------------------- geometry


def region_box(region: int, n_win: int, height: int, width: int) -> tuple[float, float, float, float]:
    """(x, y, width, height) of region ``region`` in the pixel coordinates of an (height, width) picture."""
    region = _check_region("region", region, n_win)
    row, col = divmod(region, n_win)
    box_w, box_h = width / n_win, height / n_win
    return col * box_w, row * box_h, box_w, box_h


# ---------------------------------------------------------------- drawing


def show_image(image: Any, ax: Any = None) -> Any:
    """Draw ``image`` with pixel edges on whole numbers and no ticks; returns the AxesImage."""
    ax = _axes(ax)
    picture = as_image(image)
    height, width = picture.shape[:2]
    artist = ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1,
                       extent=(0, width, height, 0), interpolation="nearest")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


def draw_region_grid(
    ax: Any, n_win: int, height: int, width: int, *, color: str = "white", linewidth: float = 0.8,
    alpha: float = 0.6, numbers: bool = False, fontsize: float = 7,
) -> list[Any]:  # fmt: skip
    """Lines between the S x S regions of an (height, width) picture (and region numbers when ``numbers``).

    Returns the Line2D artists (S - 1 horizontal, then S - 1 vertical), followed by the Text artists.
    """
    artists = []
    for i in range(1, n_win):
        y = i * height / n_win
        artists += ax.plot([0, width], [y, y], color=color, linewidth=linewidth, alpha=alpha)
    for j in range(1, n_win):
        x = j * width / n_win
        artists += ax.plot([x, x], [0, height], color=color, linewidth=linewidth, alpha=alpha)
    if numbers:
        for region in range(n_win * n_win):
            x, y, w, h = region_box(region, n_win, height, width)
            artists.append(ax.text(x + w / 2, y + h / 2, str(region), color=color, fontsize=fontsize,
                                   ha="center", va="center", alpha=alpha))  # fmt: skip
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    return artists


def draw_regions(image: Any, n_win: int, ax: Any = None, *, numbers: bool = True) -> Any:
    """The image with its S x S region grid and, by default, the row-major region numbers; returns the axes."""
    ax = _axes(ax)
    show_image(image, ax)
    height, width = as_image(image).shape[:2]
    draw_region_grid(ax, n_win, height, width, numbers=numbers)
    return ax


def draw_routing(
    image: Any,
    index: Any,
    n_win: int,
    query_region: int,
    ax: Any = None,
    *,
    grid: bool = True,
    ranks: bool = True,
    shade: float = 0.55,
    query_color: str = QUERY_COLOR,
    routed_color: str = ROUTED_COLOR,
    linewidth: float = 2.0,
    title: str | None = None,
) -> RoutingDrawing:
    """Where one region routes: its top-k regions outlined over the image, everything else shaded.

    Args:
        image: the picture (see the module docstring).
        index: (S*S, topk) routing index of this image; row ``query_region`` is drawn.
        n_win: regions per side S.
        query_region: the region whose queries are routed (row-major number).
        ax: matplotlib axes to draw into; a new figure when None.
        grid: draw the region grid.
        ranks: write each routed region's rank (1 = highest score) in its corner.
        shade: opacity of the dark veil over regions that are not routed (0: none).
        query_color, routed_color, linewidth: outline style.
        title: axes title; default says the query region and k.

    Returns:
        A :class:`RoutingDrawing`; ``routed`` maps region number -> Rectangle, in the index's rank order.
    """
    from matplotlib.patches import Rectangle

    index = as_index(index, n_win)
    query_region = _check_region("query_region", query_region, n_win)
    picture = as_image(image)
    height, width = picture.shape[:2]
    ax = _axes(ax)
    image_artist = show_image(picture, ax)
    routed_regions = [int(r) for r in index[query_region]]

    veil = None
    if shade > 0:  # an RGBA layer, transparent over the routed regions and dark elsewhere
        keep = np.zeros((n_win, n_win), dtype=bool)
        keep.flat[routed_regions] = True
        rgba = np.zeros((n_win, n_win, 4), dtype=np.float32)
        rgba[..., 3] = np.where(keep, 0.0, shade)
        veil = ax.imshow(rgba, extent=(0, width, height, 0), interpolation="nearest")
    lines = draw_region_grid(ax, n_win, height, width) if grid else []

    routed, labels = {}, []
    inset = linewidth * 0.6 * max(height, width) / 400  # keep neighbouring outlines apart
    for rank, region in enumerate(routed_regions, start=1):
        x, y, w, h = region_box(region, n_win, height, width)
        patch = Rectangle((x + inset, y + inset), w - 2 * inset, h - 2 * inset, fill=False,
                          edgecolor=routed_color, linewidth=linewidth)  # fmt: skip
        routed[region] = ax.add_patch(patch)
        if ranks:
            labels.append(ax.text(x + 3 * inset, y + 3 * inset, str(rank), color=routed_color, fontsize=8,
                                  ha="left", va="top", fontweight="bold"))  # fmt: skip
    x, y, w, h = region_box(query_region, n_win, height, width)
    query = ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=query_color,
                                   linewidth=linewidth * 1.4, linestyle=(0, (3, 1.5))))  # fmt: skip
    ax.set_title(f"region {query_region} routes to k={len(routed_regions)}" if title is None else title, fontsize=9)
    return RoutingDrawing(ax, image_artist, query, routed, veil, lines, labels)


def draw_token_attention(
    image: Any,
    weights: Any,
    query_token: int | tuple[int, int],
    ax: Any = None,
    *,
    grid_shape: tuple[int, int] | None = None,
    n_win: int | None = None,
    cmap: str = "inferno",
    alpha: float = 0.8,
    fade: bool = True,
    title: str | None = None,
) -> AttentionDrawing:
    """The attention of one query token over the image: its weights as a heat map, the query as a marker.

    Args:
        image: the picture (see the module docstring).
        weights: the query's attention over the key tokens, (h, w) or (h*w,) with ``grid_shape``; the token
            grid may be coarser than the image (each token covers H/h x W/w pixels). Keys with weight 0
            (outside the routed regions) are left transparent.
        query_token: the query, as (row, col) in the token grid or a row-major token number.
        ax: matplotlib axes; a new figure when None.
        grid_shape: (h, w) when ``weights`` is flat.
        n_win: draw the S x S region grid too.
        cmap, alpha: heat map colours and (largest) opacity.
        fade: make each token's opacity grow with its weight (``alpha * sqrt(weight / max weight)``), so the
            picture shows through where the query barely looks; False: the same opacity everywhere.
        title: axes title; default names the query token.

    Returns:
        An :class:`AttentionDrawing`; ``heatmap.get_array()`` is the (h, w) weights drawn.
    """
    weights = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if weights.ndim == 1:
        if grid_shape is None or int(np.prod(grid_shape)) != weights.size:
            raise ValueError(f"flat weights of {weights.size} tokens need grid_shape=(h, w) with h*w == {weights.size}")
        weights = weights.reshape(grid_shape)
    if weights.ndim != 2:
        raise ValueError(f"weights must be (h, w), or (h*w,) with grid_shape, got shape {weights.shape}")
    rows, cols = weights.shape
    if isinstance(query_token, tuple):
        row, col = query_token
    else:
        row, col = divmod(int(query_token), cols)
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"query_token must lie in the {rows}x{cols} token grid, got {query_token!r}")
    picture = as_image(image)
    height, width = picture.shape[:2]
    ax = _axes(ax)
    image_artist = show_image(picture, ax)
    shown = np.ma.masked_where(weights <= 0, weights.astype(np.float32))
    top = float(weights.max()) if weights.max() > 0 else 1.0
    opacity = alpha * np.sqrt(np.clip(weights, 0, None) / top) if fade else alpha
    heatmap = ax.imshow(shown, cmap=cmap, alpha=opacity, extent=(0, width, height, 0), interpolation="nearest",
                        vmin=0, vmax=top)  # fmt: skip
    token_w, token_h = width / cols, height / rows
    (marker,) = ax.plot([(col + 0.5) * token_w], [(row + 0.5) * token_h], marker="*", markersize=12,
                        color=QUERY_COLOR, markeredgecolor="black", linestyle="none")  # fmt: skip
    lines = draw_region_grid(ax, n_win, height, width) if n_win else []
    ax.set_title(f"attention of token ({row}, {col})" if title is None else title, fontsize=9)
    return AttentionDrawing(ax, image_artist, heatmap, marker, lines)


# ---------------------------------------------------------------- a picture and features to route on


def sample_image(name: str = "astronaut", size: int = 112) -> np.ndarray:
    """A scikit-image sample picture, centre-cropped to a square and resized to (size, size, 3) float in [0, 1].

    ``name``: one of ``SAMPLE_IMAGES``. Resizing averages pixels (area interpolation), so it is antialiased.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name must be one of {SAMPLE_IMAGES}, got {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    try:
        from skimage import data
    except ImportError as err:  # scikit-image is in the [data] extra, not a core dependency
        raise ImportError("sample_image needs scikit-image: pip install 'bralib[data]'") from err
    picture = getattr(data, name)()  # (H, W, 3) uint8
    height, width = picture.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(picture[top : top + side, left : left + side].copy()).float() / 255.0
    resized = F.interpolate(square.permute(2, 0, 1)[None], size=(size, size), mode="area")  # (1, 3, size, size)
    return resized[0].permute(1, 2, 0).clamp(0, 1).numpy()


def simple_features(image: Any) -> torch.Tensor:
    """Hand-made per-pixel features to route on: colour and texture, standardised over the image.

    Channels: the chromaticity r, g, b (each colour over their sum: hue and saturation, not brightness),
    the brightness (mean of r, g, b) and the gradient magnitude (local texture, from central differences).
    Each channel is shifted and scaled to zero mean and unit variance over the picture (so every cue counts
    alike), then each pixel's 5-vector is scaled to length 1: the dot product of two pixels is their cosine
    similarity. A region's mean is close to length 1 where the region looks uniform and shorter where it
    mixes looks, so ``q_r . k_r'`` is high when regions r and r' look alike (a plain dot product of raw
    features would rather pick the most extreme region in the same direction).

    Args:
        image: (H, W, 3) picture, see the module docstring.

    Returns:
        (1, H, W, 5) float32 unit vectors, channels-last: use them as both q and k of
        :func:`bralib.ops.route_regions`.
    """
    picture = torch.from_numpy(np.ascontiguousarray(as_image(image))).float()
    if picture.dim() != 3:
        raise ValueError(f"simple_features needs a colour image (H, W, 3), got shape {tuple(picture.shape)}")
    chroma = picture / picture.sum(-1, keepdim=True).clamp_min(1e-3)  # (H, W, 3)
    brightness = picture.mean(-1)  # (H, W)
    padded = F.pad(brightness[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]  # (H+2, W+2)
    grad_y = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2
    grad_x = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    texture = (grad_x**2 + grad_y**2).sqrt()  # (H, W)
    features = torch.cat([chroma, brightness[..., None], texture[..., None]], dim=-1)  # (H, W, 5)
    features = (features - features.mean((0, 1))) / features.std((0, 1)).clamp_min(1e-6)
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return features[None]  # (1, H, W, 5)
