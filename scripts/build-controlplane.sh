#!/usr/bin/env bash
# Builds the real Kubernetes control plane that the operator's tests run against: kube-apiserver and
# kube-controller-manager from k8s.io/kubernetes, and etcd from go.etcd.io/etcd/server/v3, all pinned in
# tests/controlplane/go.mod. There is no cluster and no container engine on a test machine, so these are
# compiled (CGO_ENABLED=0) into a cache outside the repository, once per pinned version:
#   ${SPENDMETER_CACHE:-$HOME/.cache/spendmeter}/controlplane/<version>/{etcd,kube-apiserver,kube-controller-manager}
# A complete build is marked by a file named "complete"; when it is there this script does nothing.
# It prints the folder holding the binaries on its last line. The first build takes many minutes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
module="$root/tests/controlplane"
go="${GO:-}"
if [[ -z "$go" ]]; then
    go="$(command -v go || true)"
    [[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
fi

# The pinned versions, read from the go.mod requirements ("require X v" or "\tX v" lines).
pinned() { awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "$module/go.mod"; }
kube_version="$(pinned k8s.io/kubernetes)"
etcd_version="$(pinned go.etcd.io/etcd/server/v3)"
# The folder name carries both versions and a digest of what is built, so any change rebuilds.
digest="$(cat "$module/go.mod" "$module/go.sum" "$module/etcd/main.go" "$0" | sha256sum | cut -c1-12)"
version="kube-${kube_version}-etcd-${etcd_version}-${digest}"
out="${SPENDMETER_CACHE:-$HOME/.cache/spendmeter}/controlplane/$version"

if [[ -f "$out/complete" ]]; then
    echo "$out"
    exit 0
fi
if [[ -z "$go" ]]; then
    echo "build-controlplane: Go is not installed (looked for \$GO, go on PATH, /usr/local/go/bin/go)" >&2
    exit 3
fi

mkdir -p "$out"
# One build at a time per cache folder (pytest-xdist workers or a parallel CI step may race here).
exec 9>"$out.lock"
flock 9
if [[ -f "$out/complete" ]]; then
    echo "$out"
    exit 0
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
minor="$(echo "$kube_version" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done

cd "$module"
echo "build-controlplane: building kube $kube_version and etcd $etcd_version into $out" >&2
"$go" build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" ./etcd
mv "$out/etcd.tmp" "$out/etcd"
for cmd in kube-apiserver kube-controller-manager; do
    "$go" build -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/$cmd.tmp" "$out/$cmd"
done
touch "$out/complete"
echo "$out"
