"""Exercises for chapter 8, "Where does it route?".

Fill in each function, then check it from the chapter's notebook or a terminal:

    bralib exercise check regions_under_box
    bralib exercise check chance_of_hit
    bralib exercise check wilson_interval
"""


def regions_under_box(top: int, left: int, size: int, image_size: int, n_win: int) -> list[int]:
    """The regions a square box of pixels overlaps, as a sorted list of region numbers.

    The image (``image_size`` x ``image_size`` pixels) is split into ``n_win`` x ``n_win`` equal square
    regions, numbered row-major (region ``row * n_win + col``). The box covers the pixel rows
    ``top .. top + size - 1`` and columns ``left .. left + size - 1``.
    """
    raise NotImplementedError("fill in regions_under_box")


def chance_of_hit(n_regions: int, topk: int, n_targets: int) -> float:
    """Probability that ``topk`` regions drawn at random (without replacement) out of ``n_regions``
    include at least one of ``n_targets`` given regions.

    Hint: it is 1 minus the probability that all ``topk`` draws miss the targets.
    """
    raise NotImplementedError("fill in chance_of_hit")


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (low, high) for a rate of ``hits`` successes out of ``n`` trials.

    With p = hits / n: centre = (p + z^2 / (2n)) / (1 + z^2 / n) and
    half-width = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2)). Unlike p -/+ z sqrt(p (1 - p) / n),
    it stays inside [0, 1] and is not empty at p = 0 or p = 1.
    """
    raise NotImplementedError("fill in wilson_interval")
