#!/usr/bin/env bash
# Installs what tests/compose validates with, built from Go modules (about three minutes on two
# cores the first time, seconds once Go's caches are warm):
#
# - Docker Compose, as the `docker compose` CLI plugin. The build machines have the docker CLI but
#   no engine and no compose plugin; `compose config` needs no engine. Debian's docker-compose 1.29
#   is not enough: it predates the top-level `name:` of the Compose Specification. v5.6.0 is the
#   newest release whose go.mod the machine's Go (1.26.8) satisfies.
# - dockerfile-check (tests/compose/dockerfile-check): BuildKit's own Dockerfile checks, offline.
# - promtool, Prometheus's rule checker and rule unit tester (tests/compose/test_alerts.py), from
#   the Prometheus module of the image deploy/compose.yaml runs (v0.316.0 is Prometheus 3.16.0),
#   without service discovery plugins: about three minutes of CPU the first time.
#
# Idempotent: compose and promtool are left alone when they already report their versions.
set -euo pipefail

COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_VERSION=${COMPOSE_VERSION:-v5.6.0}
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
TOOLS_DIR=${REGIONSTORE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/regionstore/tools}
PROMETHEUS_MODULE=github.com/prometheus/prometheus
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INSTALL_GO_TOOL="$HERE/../../deploy/local/bin/install-go-tool.sh"

command -v go >/dev/null || { echo "install-tools: Go is needed" >&2; exit 1; }
command -v docker >/dev/null || { echo "install-tools: the docker CLI is needed" >&2; exit 1; }
mkdir -p "$TOOLS_DIR" "$PLUGIN_DIR"

if docker compose version --short 2>/dev/null | grep -qx "${COMPOSE_VERSION#v}"; then
    echo "docker compose ${COMPOSE_VERSION} already installed"
else
    # Built inside the downloaded module so its own go.mod and go.sum (with exclude directives,
    # which `go install pkg@version` refuses) pick every dependency, as upstream builds it.
    go mod download "${COMPOSE_MODULE}@${COMPOSE_VERSION}"
    source_dir=$(go list -m -f '{{.Dir}}' "${COMPOSE_MODULE}@${COMPOSE_VERSION}")
    (cd "$source_dir" && GOFLAGS=-buildvcs=false go build -trimpath \
        -ldflags "-s -w -X ${COMPOSE_MODULE}/internal.Version=${COMPOSE_VERSION}" \
        -o "$TOOLS_DIR/docker-compose" ./cmd)
    install -m 0755 "$TOOLS_DIR/docker-compose" "$PLUGIN_DIR/docker-compose"
fi
docker compose version

(cd "$HERE/dockerfile-check" && GOFLAGS=-buildvcs=false go build -trimpath \
    -o "$TOOLS_DIR/dockerfile-check" .)
echo "dockerfile-check installed in $TOOLS_DIR"

promtool_version=$("$TOOLS_DIR/promtool" --version 2>/dev/null || true)
if [[ "$promtool_version" == *"version ${PROMETHEUS_VERSION} "* ]]; then
    echo "promtool ${PROMETHEUS_VERSION} already installed"
else
    bash "$INSTALL_GO_TOOL" "$PROMETHEUS_MODULE" "$PROMETHEUS_VERSION" ./cmd/promtool \
        "$TOOLS_DIR/promtool"
fi
echo "promtool installed in $TOOLS_DIR: $("$TOOLS_DIR/promtool" --version 2>&1 | sed -n 1p)"
