"""Fixtures for the network-namespace end-to-end tests (the harness itself is in ``netns.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import NetnsLab


@pytest.fixture
def netns_lab() -> Iterator[NetnsLab]:
    """A fresh pod namespace and provider namespace, removed after the test."""
    with NetnsLab() as lab:
        yield lab


@pytest.fixture(scope="session")
def spendmeter_command() -> list[str]:
    """The installed ``spendmeter`` console script, as the image runs it."""
    script = Path(sys.executable).parent / "spendmeter"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project (pip install -e .) into this environment")
    return [str(script)]
