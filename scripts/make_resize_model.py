#!/usr/bin/env python3
"""Builds the align_corners Resize reference model and records ONNX Runtime's output.

Run by hand (never by the tests or CI), from the repository root:

    /tmp/onnx-venv/bin/python scripts/make_resize_model.py   # onnx 1.16, numpy<2, onnxruntime

Writes `tests/data/models/resize_align_corners.{onnx,input.npy,ort.npy}`: an
input of 1x2x5x7 through three Resize nodes (opset 13, align_corners, given
by scales whose products with the lengths are not whole): linear x1.5 to
7x10, cubic x0.6 to 4x6, nearest x1.5 to 6x9. ONNX's reference
implementation divides align_corners coordinates by the unrounded
`in * scale - 1`; onnxruntime and PyTorch by `out - 1`, and so does tessera.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join("tests", "data", "models")
NAME = "resize_align_corners"


def resize(name: str, src: str, dst: str, mode: str, scale: float) -> list:
    scales = numpy_helper.from_array(np.array([1, 1, scale, scale], dtype=np.float32), f"{name}_scales")
    node = helper.make_node(
        "Resize", [src, "", f"{name}_scales"], [dst], name=name, mode=mode,
        coordinate_transformation_mode="align_corners",
    )
    return [node], [scales]


def main() -> int:
    nodes, inits = [], []
    for name, src, dst, mode, scale in [
        ("up_linear", "input", "a", "linear", 1.5),
        ("down_cubic", "a", "b", "cubic", 0.6),
        ("up_nearest", "b", "output", "nearest", 1.5),
    ]:
        n, i = resize(name, src, dst, mode, scale)
        nodes += n
        inits += i
    graph = helper.make_graph(
        nodes, NAME,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 5, 7])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 6, 9])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, f"{NAME}.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(13).random((1, 2, 5, 7), dtype=np.float32)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.save(os.path.join(OUT, f"{NAME}.input.npy"), x.astype("<f4"))
    np.save(os.path.join(OUT, f"{NAME}.ort.npy"), got.astype("<f4"))
    print(f"{NAME}: output {got.shape}, onnxruntime {ort.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
