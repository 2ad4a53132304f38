"""``shallowcnn import-keras``: the paper's Keras model, or the PyTorch twin's state_dict, as model.npz
(:mod:`shallowcnn.interop.keras_import`)."""
from __future__ import annotations

from ..interop import MissingPackageError
from ..interop.keras_import import EXPECTED, import_model
from .common import CommandError


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "import-keras", help="turn the paper's Keras model (.keras/.h5) or a PyTorch twin state_dict into model.npz",
        description="Read a Keras model file (.keras or legacy .h5, with h5py: Keras is not needed) holding "
                    f"the paper's Sequential ({EXPECTED}; other filter counts and kernel sizes are "
                    "accepted) and write it as a shallowcnn model. Kernels are transposed from Keras' HWIO "
                    "to our (F, C, K, K); the source is recorded in the model's metadata. Any other "
                    "architecture is refused with the list of layers found. With --from-torch (implied "
                    "by a .safetensors/.pt/.pth file) the input is a state_dict of the PyTorch twin "
                    '(shallowcnn export --format torch). Needs: pip install ".[interop]".')
    p.add_argument("source", help="the Keras model (MODEL.keras or MODEL.h5), or a state_dict with --from-torch")
    p.add_argument("-o", "--output", required=True, help="model file to write (model.npz)")
    p.add_argument("--from-torch", action="store_true", default=None,
                   help="the source is the PyTorch twin's state_dict (.safetensors, or .pt/.pth)")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    try:
        model = import_model(args.source, args.from_torch)
        path = model.save(args.output, metadata=model.metadata)
    except (MissingPackageError, ValueError, OSError) as e:
        raise CommandError(e) from None
    layers = model.metadata["imported_from"].get("layers")
    print(f"imported {args.source}{' (' + ', '.join(layers) + ')' if layers else ''} -> {path}")
    return 0
