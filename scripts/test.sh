#!/usr/bin/env bash
# Runs the whole test suite. As root it also runs the network-namespace end-to-end tests
# (they skip with a reason elsewhere); the control plane is built first when the tests need it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
