"""Datasets, splits, episodes and transforms for few-shot segmentation (no model code here).

``base`` (the source interface) · ``pascal``, ``coco``, ``fss``, ``davis`` (the benchmarks' on-disk
formats) · ``splits`` (split files) · ``episodes`` (samplers) · ``transforms`` · ``dataset`` (torch
Dataset and loader) · ``benchmark`` (opening a staged folder) · ``synthetic`` (the demo benchmark) ·
``sa1b`` (distillation images).
"""
