#!/usr/bin/env bash
# Sets up everything spendmeter's demo and tests need on a fresh machine:
# a Python >= 3.12 virtualenv in .venv installed from the pinned constraints.txt,
# and (when run as root on Debian) the system tools the end-to-end tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local c v
    for c in "${SPENDMETER_PYTHON:-}" python3.13 python3.12 python3 \
             "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 \
             /root/.pyenv/versions/3.13*/bin/python3 /root/.pyenv/versions/3.12*/bin/python3; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
        v=$("$c" -c 'import sys; print(int(sys.version_info >= (3, 12)))' 2>/dev/null) || continue
        if [ "$v" = 1 ]; then command -v "$c" 2>/dev/null || echo "$c"; return 0; fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    py=$(find_python) || {
        echo "spendmeter needs Python >= 3.12 (mitmproxy >= 11.1 does) and none was found." >&2
        echo "Install one (for example 'pyenv install 3.12') or set SPENDMETER_PYTHON=/path/to/python3.12." >&2
        exit 1
    }
    echo "setup: using $py"
    rm -rf .venv
    "$py" -m venv .venv
fi
stamp=.venv/.spendmeter-installed
if [ ! -f "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
    touch "$stamp"
fi

# System tools for the end-to-end tests (root only; skipped quietly elsewhere).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${SPENDMETER_SKIP_APT:-}" != 1 ]; then
    need=()
    command -v iptables >/dev/null 2>&1 || need+=(iptables)
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
    if ((${#need[@]})); then
        echo "setup: apt-get install ${need[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
echo "setup: ready (.venv: $(.venv/bin/python --version))"
