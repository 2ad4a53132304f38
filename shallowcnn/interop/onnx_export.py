"""Export a trained model as a standard ONNX graph (for ``shallowcnn export``).

ONNX is the exchange format that every inference runtime reads (onnxruntime, OpenCV,
TensorRT, browsers...). Our layers map one to one onto ONNX operators, because the
frameworks and we mean the same thing by each of them:

    input "x"  (N, 1, H, W) float32 = 8-bit pixels / 255   (N, H, W dynamic)
    Conv  W1 (6, 1, 9, 9), b1      ONNX Conv is a cross-correlation with weights
    Relu                           (F, C, K, K) -- exactly our Conv2D, no flip
    Conv  W2 (16, 6, 9, 9), b2     no pads, strides 1: "valid"
    Relu
    GlobalMaxPool                  (N, 16, 1, 1)
    Flatten                        (N, 16)
    Gemm  dense.W (16, 1), b       x @ W + b: our Dense keeps Keras' (D, M), as Gemm wants
    Sigmoid                        output "probability" (N, 1)

Dropout is absent: at inference it is the identity (layers.Dropout), so the graph
computes exactly :meth:`ShallowCNN.predict_proba` -- up to float32 rounding, since the
runtime adds the products in another order.

**Whole images** (``heatmap_stride=s``, CLI ``--heatmap --stride s``): the global max
pool is replaced by the window maxima that :mod:`shallowcnn.scan` computes. Window (k, l)
is the 144 x 144 patch whose top-left pixel is (k s, l s); inside it conv2 has 128 x 128
positions (144 - 16), so its feature is the max of the conv2 map over a 128 x 128 block
starting at (k s, l s). As in scan.py this is done in two cheap steps, with the blocks of
:func:`shallowcnn.scan.window_blocks` (g = gcd(s, 128)):

    MaxPool  kernel g x g, stride g           block maxima  (N, 16, (H-16)//g, (W-16)//g)
    MaxPool  kernel m x m, stride s/g          window maxima (N, 16, nR, nC), m = 128/g
    Conv 1x1 dense.W^T (1, 16, 1, 1), dense.b  the dense layer applied at every window
    Sigmoid                                    output "probability_map" (N, 1, nR, nC)

with nR = (H - 144)//s + 1 windows down (and nC across), the grid of
:func:`shallowcnn.scan.window_starts`: ``probability_map[n, 0, k, l]`` is
``predict_proba`` of ``x[n, 0, k s : k s + 144, l s : l s + 144]``. Such a graph needs
H, W >= 144. (It does not mask the background: :func:`shallowcnn.scan.scan_image` does.)

**Opset** :data:`DEFAULT_OPSET` = 13. Every operator used has had its present form since
opset 13 or earlier, so any runtime of the last years reads the file; ``--opset`` picks a
newer one (up to the newest the installed onnx knows). The IR version is the lowest that
the opset allows, for the same reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..constants import PATCH_SIZE
from ..scan import window_blocks
from ..storage import atomic_write_bytes
from . import require

DEFAULT_OPSET = 13
INPUT_NAME = "x"
PROBABILITY = "probability"
PROBABILITY_MAP = "probability_map"


def model_to_onnx(model, heatmap_stride: int | None = None, opset: int = DEFAULT_OPSET,
                  source: str | None = None):
    """The ONNX graph of ``model`` (a :class:`~shallowcnn.model.ShallowCNN`), as an
    ``onnx.ModelProto`` that ``onnx.checker`` accepts.

    heatmap_stride  None: the patch classifier, output "probability" (N, 1).
                    s: the whole-image variant, output "probability_map" (N, 1, nR, nC)
                    for the 144 x 144 windows at stride s (module docstring).
    opset           ONNX operator set (default 13)
    source          recorded in the file's metadata (e.g. the .npz it came from)
    """
    onnx = require("onnx", "Exporting to ONNX")
    from onnx import TensorProto, helper, numpy_helper

    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise ValueError(f"opset must be between {DEFAULT_OPSET} and {newest} (the newest this onnx "
                         f"{onnx.__version__} knows), got {opset}")

    # ONNX runtimes compute convolutions in float32; a float64 model (gradient
    # checks) is rounded once here.
    p = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in model.params.items()}
    K = model.kernel_size
    initializers = [numpy_helper.from_array(p[n], name=n) for n in ("conv1.W", "conv1.b", "conv2.W", "conv2.b")]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "conv1.W", "conv1.b"], ["conv1"], kernel_shape=[K, K]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("Conv", ["relu1", "conv2.W", "conv2.b"], ["conv2"], kernel_shape=[K, K]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
    ]
    if heatmap_stride is None:
        initializers += [numpy_helper.from_array(p["dense.W"], name="dense.W"),
                         numpy_helper.from_array(p["dense.b"], name="dense.b")]
        nodes += [
            helper.make_node("GlobalMaxPool", ["relu2"], ["pooled"]),            # (N, 16, 1, 1)
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),        # (N, 16)
            helper.make_node("Gemm", ["features", "dense.W", "dense.b"], ["logit"]),  # (N, 1)
            helper.make_node("Sigmoid", ["logit"], [PROBABILITY]),
        ]
        output = helper.make_tensor_value_info(PROBABILITY, TensorProto.FLOAT, ["batch", 1])
        what = "patch classifier: probability (N, 1) of a microcalcification cluster"
    else:
        g, m, step = window_blocks(K, heatmap_stride)
        # The dense layer at every window is a 1x1 convolution with weights dense.W^T.
        dense_1x1 = p["dense.W"].T.reshape(1, -1, 1, 1)                          # (1, 16, 1, 1)
        initializers += [numpy_helper.from_array(np.ascontiguousarray(dense_1x1), name="dense.W_1x1"),
                         numpy_helper.from_array(p["dense.b"], name="dense.b")]
        nodes += [
            helper.make_node("MaxPool", ["relu2"], ["block_max"], kernel_shape=[g, g], strides=[g, g]),
            helper.make_node("MaxPool", ["block_max"], ["window_max"], kernel_shape=[m, m],
                             strides=[step, step]),                               # (N, 16, nR, nC)
            helper.make_node("Conv", ["window_max", "dense.W_1x1", "dense.b"], ["logit_map"],
                             kernel_shape=[1, 1]),                                # (N, 1, nR, nC)
            helper.make_node("Sigmoid", ["logit_map"], [PROBABILITY_MAP]),
        ]
        output = helper.make_tensor_value_info(PROBABILITY_MAP, TensorProto.FLOAT,
                                               ["batch", 1, "window_rows", "window_cols"])
        what = (f"whole-image heatmap: probability_map (N, 1, nR, nC) of the {PATCH_SIZE} x {PATCH_SIZE} "
                f"windows at stride {heatmap_stride}, window (k, l) at pixel ({heatmap_stride} k, "
                f"{heatmap_stride} l); needs H, W >= {PATCH_SIZE}")
    graph = helper.make_graph(
        nodes, "shallowcnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [output], initializer=initializers)
    graph.doc_string = f"ShallowCNN (Luna-Lozoya et al.), {what}. Input x: (N, 1, H, W) float32, pixels / 255."
    opset_ids = [helper.make_opsetid("", int(opset))]
    onnx_model = helper.make_model(graph, opset_imports=opset_ids, producer_name="shallowcnn",
                                   producer_version=__version__)
    # The lowest IR version that carries this opset: older runtimes refuse newer IRs.
    onnx_model.ir_version = helper.find_min_ir_version_for(opset_ids)
    metadata = {"architecture": json.dumps(model.architecture(), sort_keys=True),
                "input": "x (N, 1, H, W) float32: 8-bit pixels divided by 255",
                "output": what}
    if heatmap_stride is not None:
        metadata["heatmap_stride"] = str(int(heatmap_stride))
    if source is not None:
        metadata["source"] = str(source)
    helper.set_model_props(onnx_model, metadata)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as e:    # a bug here, but say so without a traceback
        raise ValueError(f"onnx.checker refused the graph (opset {opset}): {e}") from None
    return onnx_model


def export_onnx(model, path, heatmap_stride: int | None = None, opset: int = DEFAULT_OPSET,
                source: str | None = None) -> Path:
    """Write :func:`model_to_onnx`'s graph to ``path`` (atomically); returns the path."""
    onnx_model = model_to_onnx(model, heatmap_stride, opset, source)
    return atomic_write_bytes(path, onnx_model.SerializeToString())
