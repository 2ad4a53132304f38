"""``shallowcnn export``: a trained model as ONNX or as the PyTorch twin's state_dict (:mod:`shallowcnn.interop`)."""
from __future__ import annotations

from pathlib import Path

from ..interop import MissingPackageError
from ..interop.onnx_export import DEFAULT_OPSET, export_onnx
from ..interop.torch_twin import export_state_dict
from ..model import ShallowCNN
from ..storage import StoreError
from .common import CommandError, positive_int

FORMATS = ("onnx", "torch")
SUFFIXES = {"onnx": ".onnx", "torch": ".safetensors"}


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a trained model as ONNX (any runtime) or a PyTorch state_dict",
        description="Export MODEL.npz to another framework. onnx (default): a standard ONNX graph "
                    "(Conv, Relu, Conv, Relu, GlobalMaxPool, Flatten, Gemm, Sigmoid; dynamic batch, height and "
                    f"width; opset {DEFAULT_OPSET}) whose input is (N, 1, H, W) float32 pixels / 255 and "
                    "whose output is the probability (N, 1); with --heatmap, the probability of every "
                    "144 x 144 window of a whole image instead. torch: the state_dict of the nn.Module "
                    "twin in shallowcnn/interop/torch_twin.py, as .safetensors. "
                    'Needs the optional packages: pip install ".[interop]" (torch for checking the twin).')
    p.add_argument("model", help="model file written by shallowcnn (RUN_DIR/model.npz)")
    p.add_argument("-o", "--output", required=True,
                   help="file to write (model.onnx, or model.safetensors with --format torch)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torch")
    p.add_argument("--heatmap", action="store_true",
                   help="onnx only: output the probability of every 144 x 144 window at --stride "
                        "(probability_map, N x 1 x rows x cols) instead of one per input")
    p.add_argument("--stride", type=positive_int, default=16,
                   help="pixels between windows for --heatmap (default 16, as shallowcnn scan)")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"onnx only: operator set version (default {DEFAULT_OPSET})")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    if args.format == "torch" and args.heatmap:
        raise CommandError("--heatmap applies to --format onnx only")
    suffix = SUFFIXES[args.format]
    if Path(args.output).suffix.lower() != suffix:
        raise CommandError(f"{args.output}: --format {args.format} writes a {suffix} file; name it so")
    try:
        model = ShallowCNN.load(args.model)
        if args.format == "torch":
            path = export_state_dict(model, args.output, source=str(args.model))
        else:
            path = export_onnx(model, args.output, args.stride if args.heatmap else None, args.opset,
                               source=str(args.model))
    except (StoreError, MissingPackageError, ValueError, OSError) as e:
        raise CommandError(e) from None
    print(f"wrote {path} ({args.format}{', heatmap at stride %d' % args.stride if args.heatmap else ''})")
    return 0
