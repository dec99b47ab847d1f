"""Fixtures: miniature datasets in the official formats, written per test into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.mini_datasets import make_coco, make_davis, make_fss, make_voc


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return make_voc(tmp_path / "pascal")


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return make_coco(tmp_path / "coco")


@pytest.fixture
def fss_root(tmp_path: Path) -> Path:
    return make_fss(tmp_path / "fss")


@pytest.fixture
def davis_root(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "DAVIS")
