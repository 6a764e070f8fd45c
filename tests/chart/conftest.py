"""Fixtures for the chart's tests: the real helm, and the real control plane of the operator's tests.

``control_plane`` is the operator tests' own fixture (tests/operator/conftest.py), imported here rather
than copied; ``helm`` builds helm once per machine (cached outside the repository).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from .helming import Helm, build_helm


def _operator_fixtures() -> object:
    path = Path(__file__).resolve().parents[1] / "operator" / "conftest.py"
    spec = importlib.util.spec_from_file_location("operator_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


operator_fixtures = _operator_fixtures()
control_plane = operator_fixtures.control_plane  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(build_helm(), tmp_path_factory.mktemp("helm-home"))
