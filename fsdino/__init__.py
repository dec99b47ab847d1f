"""FS-DINO: a frozen DINOv2 encoder plus a lightweight, SAM-distilled few-shot segmenter.

The library knows nothing of pipelines: ``fsdino.models`` holds the network, ``fsdino.checkpoints``
is the only place that reads weights, ``fsdino.io`` reads and writes images, and ``fsdino.inference``
offers the user-facing :class:`~fsdino.inference.Segmenter`.
"""

from fsdino.errors import InputError

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
