"""The sparse-attention pattern zoo (bralib.ops.masks): each mask against its definition."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from bralib.ops import masks
from bralib.ops.regions import region_of_tokens, to_regions


def coords(height, width):
    return list(itertools.product(range(height), range(width)))  # row-major, like the masks


def by_definition(height, width, allowed):
    grid = coords(height, width)
    return torch.tensor([[allowed(p, q) for q in grid] for p in grid])


@pytest.mark.parametrize("height, width", [(4, 4), (6, 9)])
def test_static_masks_follow_their_definitions(height, width):
    expected = {
        "full": (masks.full_mask(height, width), lambda p, q: True),
        "window": (masks.window_mask(height, width, 2), lambda p, q: p[0] // 2 == q[0] // 2 and p[1] // 2 == q[1] // 2),
        "shifted": (
            masks.window_mask(height, width, 3, shift=1),
            lambda p, q: (p[0] + 1) // 3 == (q[0] + 1) // 3 and (p[1] + 1) // 3 == (q[1] + 1) // 3,
        ),
        "axial": (masks.axial_mask(height, width), lambda p, q: p[0] == q[0] or p[1] == q[1]),
        "row": (masks.row_mask(height, width), lambda p, q: p[0] == q[0]),
        "column": (masks.column_mask(height, width), lambda p, q: p[1] == q[1]),
        "dilated": (
            masks.dilated_mask(height, width, 2),
            lambda p, q: (p[0] - q[0]) % 2 == 0 and (p[1] - q[1]) % 2 == 0,
        ),
    }
    for name, (mask, allowed) in expected.items():
        assert mask.dtype == torch.bool and mask.shape == (height * width, height * width), name
        assert torch.equal(mask, by_definition(height, width, allowed)), name
    assert torch.equal(masks.criss_cross_mask(height, width), masks.axial_mask(height, width))
    assert torch.equal(
        masks.row_mask(height, width) | masks.column_mask(height, width), masks.axial_mask(height, width)
    )


def test_neighbourhood_mask_slides_inwards_at_the_border():
    height, width, window = 7, 9, 3
    mask = masks.neighbourhood_mask(height, width, window)
    assert (mask.sum(-1) == window * window).all()  # every query sees exactly window^2 keys
    assert mask.diagonal().all()  # including itself
    grid = coords(height, width)
    centre = grid.index((3, 4))
    seen = {grid[j] for j in mask[centre].nonzero().flatten().tolist()}
    assert seen == {(r, c) for r in (2, 3, 4) for c in (3, 4, 5)}
    corner = {grid[j] for j in mask[0].nonzero().flatten().tolist()}
    assert corner == {(r, c) for r in (0, 1, 2) for c in (0, 1, 2)}  # slid inwards, not cut off


def test_routed_mask_is_the_region_mask_lifted_to_tokens():
    height, width, n_win = 6, 4, 2
    index = torch.tensor([[[0, 3], [1, 2], [2, 0], [3, 1]]])  # (B=1, S^2=4, topk=2)
    mask = masks.routed_mask(index, height, width, n_win)  # (1, N, N)
    region = region_of_tokens(height, width, n_win)
    for i, j in itertools.product(range(height * width), repeat=2):
        assert bool(mask[0, i, j]) == (int(region[j]) in index[0, region[i]].tolist())
    # region numbering agrees with to_regions: token ids gathered region by region
    ids = torch.arange(height * width).reshape(1, height, width, 1)
    assert torch.equal(to_regions(ids, n_win)[0, :, :, 0], region.argsort(stable=True).reshape(4, -1))


def test_masked_attention_with_the_full_mask_is_sdpa():
    q, k, v = torch.randn(3, 2, 12, 8, dtype=torch.float64).unbind(0)
    out = masks.masked_attention(q, k, v, masks.full_mask(3, 4), scale=8**-0.5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_masked_attention_ignores_masked_keys():
    q, k, v = torch.randn(3, 1, 16, 4, dtype=torch.float64).unbind(0)
    mask = masks.window_mask(4, 4, 2)
    out = masks.masked_attention(q, k, v, mask, scale=0.5)
    v_changed = v.clone()
    v_changed[:, 15] += 100.0  # token 15 is outside token 0's window
    assert torch.equal(masks.masked_attention(q, k, v_changed, mask, scale=0.5)[:, 0], out[:, 0])


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: masks.window_mask(4, 4, 0), "window"),
        (lambda: masks.window_mask(4, 4, 2, shift=2), "shift must be in [0, window)"),
        (lambda: masks.dilated_mask(4, 4, 0), "dilation"),
        (lambda: masks.full_mask(0, 4), "height"),
        (lambda: masks.neighbourhood_mask(4, 4, 2), "window must be odd"),
        (lambda: masks.neighbourhood_mask(4, 6, 5), "at most min(height, width) = 4"),
        (lambda: masks.routed_mask(torch.zeros(1, 3, 1, dtype=torch.long), 4, 4, 2), "n_win**2=4"),
    ],
)
def test_mask_errors_name_the_argument_and_the_allowed_values(call, words):
    with pytest.raises(ValueError) as error:
        call()
    assert words in str(error.value)
