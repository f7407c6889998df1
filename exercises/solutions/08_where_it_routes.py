"""Solutions for chapter 8, "Where does it route?"."""

from math import comb, sqrt


def regions_under_box(top: int, left: int, size: int, image_size: int, n_win: int) -> list[int]:
    """Rows and columns of regions between the box's first and last pixel, combined row-major."""
    side = image_size // n_win  # pixels per region side
    rows = range(top // side, (top + size - 1) // side + 1)
    cols = range(left // side, (left + size - 1) // side + 1)
    return sorted(r * n_win + c for r in rows for c in cols)


def chance_of_hit(n_regions: int, topk: int, n_targets: int) -> float:
    """1 - P(all topk draws miss) = 1 - C(n - m, k) / C(n, k)."""
    return 1.0 - comb(n_regions - n_targets, topk) / comb(n_regions, topk)


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Centre and half-width of the Wilson score interval."""
    p = hits / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half
