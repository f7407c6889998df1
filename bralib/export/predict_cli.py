"""``bralib predict``: top-k classes of image files, and a figure of where the model's regions route on them."""

from __future__ import annotations

import argparse

from bralib.cli import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a bralib training checkpoint (.pt) or bralib safetensors (bralib convert)")  # fmt: skip
    parser.add_argument("--topk", type=at_least(1), default=5, help="classes shown per image (5)")
    parser.add_argument("--routing-figure", default=None, metavar="OUT.png",
                        help="also draw where query regions route on each image (one row per image)")  # fmt: skip
    parser.add_argument(
        "--routing-stage",
        type=at_least(1),
        default=None,
        help="the stage (1-based) whose last BRA block is drawn (default: the last that routes)",
    )
    parser.add_argument("--query-regions", type=at_least(0), nargs="+", default=None, metavar="R",
                        help="query regions to draw, row-major numbers (default: 4 spread over the grid)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from bralib.export.predict import format_predictions, load_images, load_predictor, predict, routing_figure

    predictor = load_predictor(args.checkpoint)
    images = load_images(args.images)
    predictions = predict(predictor, images, args.images, topk=args.topk)
    print(format_predictions(predictions))
    if args.routing_figure:
        drawn = routing_figure(predictor, images, predictions, args.routing_figure, stage=args.routing_stage,
                               queries=args.query_regions)  # fmt: skip
        grid = f"{drawn['n_win']}x{drawn['n_win']} regions, top-{drawn['topk']}"
        print(f"routing figure: {drawn['out']} (stage {drawn['stage']}, block {drawn['block']}, {grid}, "
              f"query regions {drawn['queries']})")  # fmt: skip
    return 0
