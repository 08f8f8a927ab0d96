#!/usr/bin/env bash
# Builds the OpenTelemetry Collector and Jaeger v2 from their official Go sources,
# through the Go module proxy, at pinned versions, and links them into .bin/.
#
#   .bin/otelcol  the Collector built by the Collector builder (ocb) from
#                 collector/builder-config.yaml
#   .bin/jaeger   Jaeger v2 (cmd/jaeger: all-in-one, in-memory storage and query API)
#
# Builds are cached outside the checkout, in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/hackagent-otel/otel-bins/<name>-<version>/
# so a second clone on the same machine links the cached binaries in seconds. The
# Collector's cache entry also records the manifest's checksum: editing
# collector/builder-config.yaml rebuilds it. Set OTEL_BINS_REBUILD=1 to rebuild both.
#
# Why the Jaeger build looks the way it does: Jaeger tags every release twice on one
# commit (v1.N.0 and v2.M.0) and its go.mod has no /v2 suffix, so the module proxy only
# serves the v1.N.0 tags; v1.75.0 is the commit of Jaeger v2.12.0, and its cmd/jaeger is
# the v2 binary. Its go.mod has replace directives, which `go install pkg@version`
# refuses, so we build it from a throwaway wrapper module (in the cache folder) that
# requires Jaeger and carries the same replace directives. The module zip holds no UI
# assets (they are built by Jaeger's release process from a separate repository): the
# binary serves a placeholder page at / while its HTTP query API (/api/traces,
# /api/services) works fully, and that API is what the tests use.
set -euo pipefail

# -- pinned versions ------------------------------------------------------------------
# Collector release: the builder and every module in the manifest share it.
readonly OCB_VERSION="v0.160.0"
# Jaeger: the v1.x module tag of the v2.x release (same commit).
readonly JAEGER_MODULE_VERSION="v1.75.0"
readonly JAEGER_VERSION="v2.12.0"
# The oldest Go that builds both (the v0.160.0 Collector modules say `go 1.26.0`;
# Jaeger v1.75.0 says `go 1.24.6`).
readonly GO_MIN_MINOR=26

readonly OCB_MODULE="go.opentelemetry.io/collector/cmd/builder"
readonly JAEGER_MODULE="github.com/jaegertracing/jaeger"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly MANIFEST="$ROOT/collector/builder-config.yaml"
readonly COLLECTOR_CONFIG="$ROOT/collector/otelcol-config.yaml"
readonly LOADBALANCING_CONFIG="$ROOT/collector/otelcol-loadbalancing.yaml"
readonly JAEGER_CONFIG="$ROOT/collector/jaeger-config.yaml"
readonly BIN_DIR="$ROOT/.bin"
readonly CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/hackagent-otel/otel-bins"
readonly OCB_DIR="$CACHE_ROOT/ocb-$OCB_VERSION"
readonly OTELCOL_DIR="$CACHE_ROOT/otelcol-$OCB_VERSION"
readonly JAEGER_DIR="$CACHE_ROOT/jaeger-$JAEGER_VERSION"

say() { printf 'otel-bins: %s\n' "$*"; }
die() {
    printf 'otel-bins: ERROR: %s\n' "$*" >&2
    exit 1
}

# Seconds since the script started, for the progress lines.
START_SECONDS=$SECONDS
elapsed() { printf '%ss' "$((SECONDS - START_SECONDS))"; }

check_go() {
    command -v go >/dev/null 2>&1 ||
        die "Go is not installed or not on PATH. Install Go 1.${GO_MIN_MINOR} or newer (https://go.dev/dl/), then run 'make otel-bins' again."
    local version minor
    version="$(go env GOVERSION)"
    minor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$version")"
    [[ "$minor" =~ ^[0-9]+$ ]] || die "cannot read the Go version from '$version'"
    ((minor >= GO_MIN_MINOR)) ||
        die "found $version; building the pinned Collector ($OCB_VERSION) needs Go 1.${GO_MIN_MINOR} or newer."
    say "using $version ($(command -v go))"
}

# Resolve a module version through the proxy (or the local module cache), so an
# unreachable proxy fails here with a message that says so, not deep inside a build.
download_module() {
    local module="$1" version="$2" out
    if ! out="$(go mod download -json "$module@$version" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "cannot download $module@$version from the Go module proxy (GOPROXY=$(go env GOPROXY)). Check the network or GOPROXY, then run 'make otel-bins' again."
    fi
    # The path of the module's go.mod file in the module cache.
    sed -n -E 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p' <<<"$out"
}

manifest_checksum() {
    sha256sum "$MANIFEST" | cut -d' ' -f1
}

build_ocb() {
    if [[ -x "$OCB_DIR/builder" && -z "${OTEL_BINS_REBUILD:-}" ]]; then
        say "ocb $OCB_VERSION: cached ($OCB_DIR/builder)"
        return
    fi
    say "ocb $OCB_VERSION: installing $OCB_MODULE@$OCB_VERSION"
    download_module "$OCB_MODULE" "$OCB_VERSION" >/dev/null
    local tmp="$OCB_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    GOBIN="$tmp" go install "$OCB_MODULE@$OCB_VERSION" ||
        die "go install $OCB_MODULE@$OCB_VERSION failed"
    rm -rf "$OCB_DIR"
    mv "$tmp" "$OCB_DIR"
    say "ocb $OCB_VERSION: installed ($(elapsed))"
}

build_otelcol() {
    local checksum
    checksum="$(manifest_checksum)"
    if [[ -x "$OTELCOL_DIR/otelcol" && -z "${OTEL_BINS_REBUILD:-}" ]] &&
        [[ "$(cat "$OTELCOL_DIR/manifest.sha256" 2>/dev/null)" == "$checksum" ]]; then
        say "otelcol $OCB_VERSION: cached ($OTELCOL_DIR/otelcol)"
        return
    fi
    build_ocb
    say "otelcol $OCB_VERSION: building from collector/builder-config.yaml (takes minutes on a cold Go cache)"
    local tmp="$OTELCOL_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cp "$MANIFEST" "$tmp/builder-config.yaml"
    # dist.output_path (./build) is relative to the working directory.
    (cd "$tmp" && "$OCB_DIR/builder" --config=builder-config.yaml) >"$tmp/build.log" 2>&1 || {
        tail -n 40 "$tmp/build.log" >&2
        die "ocb failed to build the Collector; the full log is $tmp/build.log"
    }
    local name
    name="$(sed -n -E 's/^[[:space:]]+name:[[:space:]]*([^[:space:]#]+).*/\1/p' "$MANIFEST" | head -n 1)"
    [[ -x "$tmp/build/$name" ]] || die "ocb finished but $tmp/build/$name is missing"
    mv "$tmp/build/$name" "$tmp/otelcol"
    printf '%s\n' "$checksum" >"$tmp/manifest.sha256"
    rm -rf "$OTELCOL_DIR"
    mv "$tmp" "$OTELCOL_DIR"
    say "otelcol $OCB_VERSION: built ($(elapsed))"
}

# Prints the replace directives of a go.mod file, one `old => new` per line (single-line
# and block forms), so the wrapper module can carry them.
replace_directives() {
    awk '
        /^replace[[:space:]]*\($/ { inblock = 1; next }
        inblock && /^\)/ { inblock = 0; next }
        inblock && NF { sub(/^[[:space:]]+/, ""); sub(/[[:space:]]*\/\/.*$/, ""); print; next }
        /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); sub(/[[:space:]]*\/\/.*$/, ""); print }
    ' "$1"
}

build_jaeger() {
    if [[ -x "$JAEGER_DIR/jaeger" && -z "${OTEL_BINS_REBUILD:-}" ]]; then
        say "jaeger $JAEGER_VERSION: cached ($JAEGER_DIR/jaeger)"
        return
    fi
    say "jaeger $JAEGER_VERSION: building $JAEGER_MODULE/cmd/jaeger@$JAEGER_MODULE_VERSION (takes minutes on a cold Go cache)"
    local upstream_gomod
    upstream_gomod="$(download_module "$JAEGER_MODULE" "$JAEGER_MODULE_VERSION")"
    [[ -f "$upstream_gomod" ]] || die "no go.mod for $JAEGER_MODULE@$JAEGER_MODULE_VERSION in the module cache"
    local go_directive
    go_directive="$(sed -n -E 's/^go[[:space:]]+([0-9.]+)$/\1/p' "$upstream_gomod")"

    local tmp="$JAEGER_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/src"
    {
        printf '// Throwaway module that builds Jaeger %s (module tag %s) with its own\n' \
            "$JAEGER_VERSION" "$JAEGER_MODULE_VERSION"
        printf '// replace directives, which "go install pkg@version" would refuse.\n'
        printf 'module hackagent-otel.local/jaeger-build\n\ngo %s\n\n' "$go_directive"
        printf 'require %s %s\n\n' "$JAEGER_MODULE" "$JAEGER_MODULE_VERSION"
    } >"$tmp/src/go.mod"
    local line
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        # A replace pointing at a local directory only exists in Jaeger's own checkout.
        [[ "$line" =~ =\>[[:space:]]*\.{0,2}/ ]] &&
            die "$JAEGER_MODULE's go.mod replaces a module with a local path ($line); cannot build it from the proxy"
        printf 'replace %s\n' "$line" >>"$tmp/src/go.mod"
    done < <(replace_directives "$upstream_gomod")
    cat >"$tmp/src/tools.go" <<'EOF'
//go:build tools

// Package tools pins cmd/jaeger as a dependency of this wrapper module.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
EOF
    local ldflags="-s -w -X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_VERSION"
    (
        cd "$tmp/src" &&
            go mod tidy &&
            go build -trimpath -ldflags "$ldflags" -o "$tmp/jaeger" "$JAEGER_MODULE/cmd/jaeger"
    ) >"$tmp/build.log" 2>&1 || {
        tail -n 40 "$tmp/build.log" >&2
        die "building Jaeger failed; the full log is $tmp/build.log"
    }
    rm -rf "$JAEGER_DIR"
    mv "$tmp" "$JAEGER_DIR"
    say "jaeger $JAEGER_VERSION: built ($(elapsed))"
}

link_bins() {
    mkdir -p "$BIN_DIR"
    ln -sfn "$OTELCOL_DIR/otelcol" "$BIN_DIR/otelcol"
    ln -sfn "$JAEGER_DIR/jaeger" "$BIN_DIR/jaeger"
    say "linked .bin/otelcol -> $OTELCOL_DIR/otelcol"
    say "linked .bin/jaeger  -> $JAEGER_DIR/jaeger"
}

# Each binary checks its own config: a component a config names but the build lacks
# (or a renamed type) fails here, not in the middle of a test run.
validate_configs() {
    local config
    for config in "$COLLECTOR_CONFIG" "$LOADBALANCING_CONFIG"; do
        "$BIN_DIR/otelcol" validate --config="$config" >/dev/null 2>"$CACHE_ROOT/validate.log" || {
            cat "$CACHE_ROOT/validate.log" >&2
            die ".bin/otelcol rejects collector/$(basename "$config")"
        }
        say "collector/$(basename "$config"): valid for .bin/otelcol"
    done
    "$BIN_DIR/jaeger" validate --config="$JAEGER_CONFIG" >/dev/null 2>"$CACHE_ROOT/validate.log" || {
        cat "$CACHE_ROOT/validate.log" >&2
        die ".bin/jaeger rejects collector/jaeger-config.yaml"
    }
    say "collector/jaeger-config.yaml: valid for .bin/jaeger"
}

main() {
    [[ -f "$MANIFEST" ]] || die "missing $MANIFEST"
    check_go
    export GOTOOLCHAIN=local
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
    mkdir -p "$CACHE_ROOT"
    # One build at a time per machine: a second run waits, then finds the cache filled.
    exec 9>"$CACHE_ROOT/.lock"
    if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
        say "another otel-bins build holds $CACHE_ROOT/.lock; waiting for it"
        flock 9
    fi
    build_otelcol
    build_jaeger
    link_bins
    validate_configs
    say "done in $(elapsed)"
}

main "$@"
