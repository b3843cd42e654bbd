#!/usr/bin/env bash
# Makes sure a Docker engine answers: Debian's docker.io, installed with apt-get and started as
# root when none runs (the CI machines have the docker CLI but no engine). Idempotent: an engine
# that already answers is used as it is, and one started here keeps running for the next build.
#   engine.sh STATE_DIR     (STATE_DIR holds dockerd's log and pid file)
set -euo pipefail

state="${1:?usage: engine.sh STATE_DIR}"
fail() { echo "docker: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 && exit 0
[[ $EUID -eq 0 ]] || fail "no Docker engine answers and starting one needs root: run as root, or start Docker and retry"
if ! command -v dockerd >/dev/null; then
  echo "installing Debian's docker.io with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } \
    >"$state.apt.log" 2>&1 || fail "apt-get install docker.io failed (log: $state.apt.log)"
fi
mkdir -p "$state"
echo "starting dockerd (log: $state/dockerd.log)"
# setsid: the engine outlives the make that started it (kill "$(cat STATE_DIR/dockerd.pid)" ends it).
setsid dockerd --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 120); do
  docker info >/dev/null 2>&1 && { echo "dockerd ready: $(docker version -f '{{.Server.Version}}')"; exit 0; }
  kill -0 $! 2>/dev/null || { tail -n 5 "$state/dockerd.log" >&2; fail "dockerd exited (log: $state/dockerd.log)"; }
  sleep 0.5
done
fail "dockerd did not answer within 60 s (log: $state/dockerd.log)"
