#!/usr/bin/env bash
# Runs the whole test suite. As root it also runs the network-namespace end-to-end tests
# (they skip with a reason elsewhere). The real control plane and helm are built first, outside the
# tests' time limits: only when missing from the cache (the first build takes about 15 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
    echo "test: control plane in $(bash scripts/build-controlplane.sh | tail -n 1)"
    echo "test: helm in $(bash scripts/build-helm.sh | tail -n 1)"
else
    echo "test: no Go here: the control-plane and helm tests will say so" >&2
fi
exec .venv/bin/python -m pytest "$@"
