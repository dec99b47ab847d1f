"""Performance benchmarks of FS-DINO against a dual-model (DINOv2-L + SAM-H) pipeline.

One command, ``python -m benchmarks.run``, measures on whatever device it finds and writes one JSON per
suite plus a markdown table (see ``benchmarks/README.md``). The package is not part of the installed
library: it imports :mod:`fsdino` and is run from the repository root.
"""
