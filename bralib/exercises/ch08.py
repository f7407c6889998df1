"""Checks for chapter 8, "Where does it route?": regions under a box, the chance level of a hit, Wilson intervals."""

from __future__ import annotations

from math import comb, sqrt

from bralib.exercises import Case, exercise


@exercise("regions_under_box")
def _regions_under_box():
    hint = "a region is image_size // n_win pixels wide; the box's last pixel is top + size - 1"
    for args, expected, what in [
        ((0, 0, 16, 64, 4), [0], "a 16-pixel digit exactly on region 0"),
        ((8, 8, 16, 64, 4), [0, 1, 4, 5], "a digit straddling four regions"),
        ((40, 3, 16, 64, 4), [8, 9, 12, 13], "lower left"),
        ((48, 48, 16, 64, 4), [15], "the last region, touching the border"),
        ((10, 30, 16, 64, 2), [0, 1], "2x2 regions of 32 pixels (stage 3 of biformer_nano)"),
        ((20, 20, 16, 64, 1), [0], "one region holds everything"),
    ]:
        yield Case(what, args=args, expected=expected, hint=hint)


@exercise("chance_of_hit")
def _chance_of_hit():
    hint = "P(miss) = C(n - m, k) / C(n, k): choose all k regions among the n - m that are not targets"
    for n, k, m in [(16, 4, 1), (16, 4, 4), (16, 1, 2), (4, 2, 1), (16, 13, 4), (9, 3, 0)]:
        yield Case(f"{k} of {n} regions at random, {m} target region(s)", args=(n, k, m),
                   expected=1 - comb(n - m, k) / comb(n, k), hint=hint)  # fmt: skip


def _wilson(hits: int, n: int, z: float) -> tuple[float, float]:
    p, z2 = hits / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return centre - half, centre + half


@exercise("wilson_interval")
def _wilson_interval():
    hint = "p = hits / n; centre (p + z^2/2n) / (1 + z^2/n); half-width z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)"
    for hits, n, z, what in [
        (50, 100, 1.96, "half of 100"),
        (0, 20, 1.96, "no hit in 20: the interval is not empty"),
        (20, 20, 1.96, "all 20 hit"),
        (7, 12, 1.96, "7 of 12"),
        (300, 2048, 2.576, "99 %"),
    ]:
        yield Case(f"{what} (hits={hits}, n={n}, z={z})", args=(hits, n), kwargs={"z": z},
                   expected=_wilson(hits, n, z), hint=hint)  # fmt: skip
