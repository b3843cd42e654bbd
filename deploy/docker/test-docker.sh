#!/usr/bin/env bash
# The Docker path (make test-docker): a Docker engine, every image built here with no registry
# (those whose inputs changed: build-images.sh), deploy/compose.yaml + compose.local-images.yaml
# up on the ports of COMPOSE_PORTS (deploy/compose.ci-ports.env unless set), the integration
# tests and the container-kill test against it, then the stack down with its volumes (a run
# starts from empty ones too). Each step is timed; the stack is brought down whatever happens.
#   test-docker.sh [--lean]   --lean (CI's make test-docker-ci): make test-compose LEAN=1, a
#                             subset of the tests and the short kill round
set -euo pipefail
cd "$(dirname "$0")/../.."
lean=()
[[ "${1:-}" == --lean ]] && lean=(LEAN=1)

# UP_TIMEOUT: three JVMs and three PostgreSQL on two shared cores take minutes to be healthy.
settings=(COMPOSE_IMAGES=local "COMPOSE_PORTS=${COMPOSE_PORTS:-deploy/compose.ci-ports.env}" UP_TIMEOUT=600)
# The stack's data is dropped with its volumes, so nothing is gained by a graceful stop.
drop=(COMPOSE_DOWN_FLAGS="--volumes --timeout 2")
timings=()
step() {  # step NAME COMMAND...
  local name="$1" start=$SECONDS status=0
  shift
  echo "=== docker: $name"
  "$@" || status=$?
  timings+=("$(printf '%-14s %4ds' "$name" $((SECONDS - start)))$(if ((status)); then echo " (exit $status)"; fi)")
  return "$status"
}
report() {
  local status=$?
  step "down" make compose-down "${settings[@]}" "${drop[@]}" || true
  echo "=== docker: timings"
  printf '  %s\n' "${timings[@]}"
  printf '  %-14s %4ds (exit %d)\n' total "$SECONDS" "$status"
  exit "$status"
}

step "engine" make compose-engine
# The compose plugin is built from its Go module (tests/compose/install-tools.sh) by make test.
docker compose version >/dev/null 2>&1 || step "compose tool" make compose-tools
trap report EXIT
step "clean start" make compose-down "${settings[@]}" "${drop[@]}"
step "images" make compose-images "${settings[@]}" || { tail -n 30 "${CACHE_DIR:-.cache}/docker/build.log" >&2; exit 1; }
step "up" make compose-up "${settings[@]}"
step "tests" make test-compose "${settings[@]}" "${lean[@]}"
