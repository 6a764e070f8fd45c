# Shared by the scripts that build Go tools for the tests (scripts/build-helm.sh, and the control plane's):
# finding Go, naming a cache folder per pinned version, and building into it once, under a lock.
# Source it; it defines functions only. Tools are compiled with CGO_ENABLED=0 GOTOOLCHAIN=local from the
# go.mod/go.sum of a module under tests/, into ${SPENDMETER_CACHE:-$HOME/.cache/spendmeter}/<tool>/<version>/.
# A complete build is marked by a file named "complete"; the build scripts exit 3 when Go is missing.

GO_MISSING=3

# The go command: $GO, go on PATH, or /usr/local/go/bin/go; empty when none.
find_go() {
    local go="${GO:-}"
    if [[ -z "$go" ]]; then
        go="$(command -v go || true)"
        [[ -z "$go" && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
    fi
    echo "$go"
}

# The version a go.mod pins for a module: pinned_version GO_MOD MODULE.
pinned_version() {
    awk -v m="$2" '{ for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "$1"
}

# A short digest of files, so that any change to what is built names a new cache folder.
digest_of() {
    cat "$@" | sha256sum | cut -c1-12
}

# The cache folder for a tool and version.
cache_dir() {
    echo "${SPENDMETER_CACHE:-$HOME/.cache/spendmeter}/$1/$2"
}

# cached_build OUT BUILD_FUNCTION: runs BUILD_FUNCTION OUT (with Go's build environment set) unless OUT is
# complete, one build at a time per folder; prints OUT on the last line. Exits GO_MISSING without Go.
cached_build() {
    local out="$1" build="$2"
    if [[ -f "$out/complete" ]]; then
        echo "$out"
        return 0
    fi
    GO_CMD="$(find_go)"
    if [[ -z "$GO_CMD" ]]; then
        echo "$(basename "$0"): Go is not installed (looked for \$GO, go on PATH, /usr/local/go/bin/go)" >&2
        exit "$GO_MISSING"
    fi
    mkdir -p "$out"
    # One build at a time per cache folder (parallel test workers or CI steps may race here).
    exec 9>"$out.lock"
    flock 9
    if [[ ! -f "$out/complete" ]]; then
        (
            export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"
            "$build" "$out"
        )
        touch "$out/complete"
    fi
    exec 9>&-
    echo "$out"
}
