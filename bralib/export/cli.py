"""``bralib export``: a BiFormer as an ONNX file or a ``torch.export`` program, checked against PyTorch."""

from __future__ import annotations

import argparse
import json

from bralib.cli import at_least

FORMATS = ("onnx", "torch-export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bralib.export import EXPORT_BACKEND, EXPORTABLE_BACKENDS

    parser.add_argument("--model", default=None, help="a name of bralib.list_models() (random weights), e.g. "
                        "biformer_tiny; leave it out with --checkpoint, whose file names the model")  # fmt: skip
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="weights to export: a bralib training checkpoint (.pt) or bralib safetensors; "
                        "for an official .pth run bralib convert first")  # fmt: skip
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx or torch-export (a .pt2 program)")
    parser.add_argument("--out", required=True, metavar="PATH", help="file to write (.onnx or .pt2)")
    parser.add_argument("--image-size", type=at_least(1), default=None,
                        help="input side in pixels, baked into the graph (default: the model's, e.g. 224)")  # fmt: skip
    parser.add_argument("--batch-size", type=at_least(1), default=1, help="batch size of the example input (1)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="let the batch size vary at run time (the image size stays fixed)")  # fmt: skip
    parser.add_argument("--backend", default=EXPORT_BACKEND, choices=EXPORTABLE_BACKENDS,
                        help=f"BRA backend traced into the graph (default: {EXPORT_BACKEND}, the fastest under "
                        "onnxruntime)")  # fmt: skip
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the comparison with PyTorch (onnxruntime, or the reloaded program)")  # fmt: skip


def load_model(model_name: str | None, checkpoint: str | None):
    """The model to export: a bralib file's (its architecture from the file) or a fresh ``model_name``."""
    import bralib

    if checkpoint is None:
        if model_name is None:
            raise ValueError("name a model (--model biformer_tiny) or a bralib checkpoint (--checkpoint PATH)")
        return bralib.create_model(model_name).eval()
    from bralib.export.predict import load_predictor

    model = load_predictor(checkpoint).model
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
    if model_name is not None and architecture != model_name:
        raise ValueError(
            f"--model {model_name} does not match --checkpoint {checkpoint!r}, which holds "
            f"{architecture or 'a custom'} model; leave --model out to export the checkpoint's model"
        )
    return model


def run(args: argparse.Namespace) -> int:
    from bralib.export.onnx_export import export_onnx, export_onnx_checked
    from bralib.export.program import export_program, export_program_file, image_batch, save_program

    model = load_model(args.model, args.checkpoint)
    example = image_batch(model, args.image_size, args.batch_size)
    options = {"backend": args.backend, "dynamic_batch": args.dynamic_batch}
    if args.format == "onnx":
        if args.check:
            record = export_onnx_checked(model, example, args.out, **options)
        else:
            record = {"path": str(export_onnx(model, example, args.out, **options))}
    elif args.check:
        record = export_program_file(model, example, args.out, **options)
    else:
        record = {"path": str(save_program(export_program(model, example, **options), args.out))}
    record["input_shape"] = list(example.shape)
    print(json.dumps(record, indent=2))
    return 0
