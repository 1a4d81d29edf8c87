#!/usr/bin/env python3
"""Exports the reference CNNs from PyTorch and records ONNX Runtime's outputs.

Run by hand (never by the tests or CI), from the repository root:

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch "numpy<2" "onnx==1.16.2" onnxruntime
    /tmp/ref-venv/bin/python scripts/make_reference_model.py

Writes, under tests/data/models/:

* `resnet_tiny.onnx`: input 1x3x32x32; conv-bn-relu stem, one residual basic
  block (conv-bn-relu-conv-bn + identity, relu), 2x2 max pool, global average
  pool, flatten and a two-layer dense tail (linear-relu-linear) to 10 logits;
* `resnet8.onnx`: a ResNet-8-like network at 1x3x64x64 (stem, three basic
  blocks at 16/32/64 channels, the last two strided with 1x1 projection
  shortcuts, global average pool, flatten, linear to 10 logits), for the
  planner and tiling demos;
* for each `<name>`: `<name>.input.npy` (seeded normal input) and
  `<name>.ort.npy` (ONNX Runtime's CPU output for it), float32.

Both are exported with the TorchScript exporter in eval mode with
`training=PRESERVE`, so BatchNormalization stays in the graph (the importer and
the BN-folding pass get to do that work) and the running statistics are
randomised so folding is not a no-op. The script checks that PyTorch and ONNX
Runtime agree before writing anything.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OUT = os.path.join("tests", "data", "models")
OPSET = 13


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-bn layers around a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNetTiny(nn.Module):
    """The smallest CNN with a residual block and a dense tail."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = BasicBlock(16, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.gap(self.pool(self.block(self.stem(x)))))


class ResNet8(nn.Module):
    """ResNet-8-like: stem and three basic blocks at 16/32/64 channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.gap(self.blocks(self.stem(x))))


def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Gives every BatchNorm non-trivial statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def export(name: str, model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        randomise_batchnorm(model, gen)
        x = torch.randn(*shape, generator=gen)
        want = model(x).numpy()

    path = os.path.join(OUT, f"{name}.onnx")
    torch.onnx.export(
        model,
        (x,),
        path,
        input_names=["input"],
        output_names=["logits"],
        opset_version=OPSET,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=True,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(path))

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    diff = float(np.max(np.abs(got - want)))
    if diff > 1e-4:
        raise SystemExit(f"{name}: PyTorch and ONNX Runtime differ by {diff}")

    np.save(os.path.join(OUT, f"{name}.input.npy"), x.numpy().astype("<f4"))
    np.save(os.path.join(OUT, f"{name}.ort.npy"), got.astype("<f4"))
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    print(
        f"{name}: {os.path.getsize(path)} bytes, ops {ops}, output {got.shape}, "
        f"torch vs onnxruntime {onnxruntime_version()} max abs diff {diff:e}"
    )


def onnxruntime_version() -> str:
    return ort.__version__


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    export("resnet_tiny", ResNetTiny(), (1, 3, 32, 32), seed=7)
    export("resnet8", ResNet8(), (1, 3, 64, 64), seed=8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
