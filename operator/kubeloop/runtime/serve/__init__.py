"""The inference server: ONNX Runtime behind the Open Inference Protocol (V2) and V1 ``:predict``.

``python -m kubeloop.runtime serve --model-dir DIR`` (flags: :mod:`.cli`). Never imports the operator.
"""

from .cli import main

__all__ = ["main"]
