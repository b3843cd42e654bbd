#!/usr/bin/env bash
# Installs Docker Compose (the `docker compose` CLI plugin) built from its Go module, for
# tests/compose. The build machines have the docker CLI but no engine and no compose plugin;
# `compose config` needs no engine, so a real compose can validate deploy/compose.yaml here.
#
# Debian's docker-compose 1.29 is not enough: it predates the top-level `name:` of the Compose
# Specification. v5.6.0 is the newest release whose go.mod the installed Go (1.26.8) satisfies.
#
# Idempotent: does nothing when `docker compose version` already reports this version.
# Takes about three minutes on two cores the first time (the build is cached after that).
set -euo pipefail

COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_VERSION=${COMPOSE_VERSION:-v5.6.0}
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
BUILD_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/regionstore/compose-build

if docker compose version --short 2>/dev/null | grep -qx "${COMPOSE_VERSION#v}"; then
    echo "docker compose ${COMPOSE_VERSION} already installed"
    exit 0
fi

command -v go >/dev/null || { echo "install-compose: Go is needed to build compose" >&2; exit 1; }
command -v docker >/dev/null || { echo "install-compose: the docker CLI is needed" >&2; exit 1; }

mkdir -p "$BUILD_DIR" "$PLUGIN_DIR"
# Built inside the downloaded module so its own go.mod and go.sum (with their exclude directives,
# which `go install pkg@version` refuses) pick every dependency, exactly as upstream builds it.
go mod download "${COMPOSE_MODULE}@${COMPOSE_VERSION}"
SOURCE_DIR=$(go list -m -f '{{.Dir}}' "${COMPOSE_MODULE}@${COMPOSE_VERSION}")
(cd "$SOURCE_DIR" && GOFLAGS=-buildvcs=false go build -trimpath \
    -ldflags "-s -w -X ${COMPOSE_MODULE}/internal.Version=${COMPOSE_VERSION}" \
    -o "$BUILD_DIR/docker-compose" ./cmd)
install -m 0755 "$BUILD_DIR/docker-compose" "$PLUGIN_DIR/docker-compose"
docker compose version
