"""Shared test fixtures. Being at the top of ``tests/``, this file also makes ``tests/samples.py``
importable from every test folder (``from samples import load_samples``)."""

from __future__ import annotations

import pytest
from samples import Sample, load_samples


@pytest.fixture(scope="session")
def provider_samples() -> list[Sample]:
    """Every recorded provider exchange of the corpus."""
    return load_samples()
