#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v4, pinned in tests/helm/go.mod) for the chart's tests: helm lint, helm
# template and helm install into the test control plane. There is no helm release binary to download
# here, so it is compiled (CGO_ENABLED=0) once per pinned version into
#   ${SPENDMETER_CACHE:-$HOME/.cache/spendmeter}/helm/<version>/helm
# and this script does nothing when that build is complete. It prints the folder on its last line.
# Exit status 3: Go is not installed. The first build takes a few minutes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/go-cache.sh
source "$root/scripts/go-cache.sh"
module="$root/tests/helm"
helm_version="$(pinned_version "$module/go.mod" helm.sh/helm/v4)"
out="$(cache_dir helm "${helm_version}-$(digest_of "$module/go.mod" "$module/go.sum" "$0")")"

build_helm() {
    local ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"
    ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
    echo "build-helm: building helm $helm_version into $1" >&2
    cd "$module"
    "$GO_CMD" build -trimpath -ldflags "$ldflags" -o "$1/helm.tmp" helm.sh/helm/v4/cmd/helm
    mv "$1/helm.tmp" "$1/helm"
}

cached_build "$out" build_helm
