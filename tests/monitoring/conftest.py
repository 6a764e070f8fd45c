"""Fixtures for the monitoring tests: Debian's prometheus and promtool, and the real helm (the alert
rules are the chart's PrometheusRule as helm renders it).

Without prometheus/promtool the tests that need them are skipped (scripts/setup.sh installs them as
root), unless SPENDMETER_REQUIRE_CONTROLPLANE=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from chart.helming import Helm, build_helm


def _tool(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Debian package prometheus; scripts/setup.sh installs it as root)"
        if os.environ.get("SPENDMETER_REQUIRE_CONTROLPLANE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Path(found)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _tool("promtool")


@pytest.fixture(scope="session")
def prometheus() -> Path:
    return _tool("prometheus")


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(build_helm(), tmp_path_factory.mktemp("helm-home"))
