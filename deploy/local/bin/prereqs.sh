#!/usr/bin/env bash
# Checks the tools the local stack needs; one line per missing tool, non-zero exit if any.
#   prereqs.sh            check only
#   prereqs.sh --install  install what apt-get can (as root): redis-server, debootstrap
#   prereqs.sh --test     what the tests need besides the stack: chromium, haproxy for the
#                         scale-out tests, faketime for the clock-skew tests (apt-get, as root)
set -euo pipefail

missing=0
need() {  # need TOOL HOW-TO-INSTALL
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$1 not found: $2" >&2
  missing=1
  return 1
}

apt_install() {  # apt_install COMMAND PACKAGE: when COMMAND is missing and apt-get can run
  command -v "$1" >/dev/null 2>&1 && return 0
  [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 0
  echo "installing $2 with apt-get" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } \
    >/dev/null 2>&1 || echo "apt-get install $2 failed" >&2
}

if [[ "${1:-}" == --test ]]; then
  apt_install chromium chromium
  need chromium "apt-get install chromium (the browser tests drive Debian's Chromium)" || true
  apt_install haproxy haproxy
  need haproxy "apt-get install haproxy (the scale-out tests balance two gateways with it)" || true
  apt_install faketime faketime
  need faketime "apt-get install faketime (the clock-skew tests offset a gateway's clock with it)" || true
  need docker "install the docker CLI (the compose tests run docker compose config, no engine)" || true
  exit "$missing"
fi

if [[ "${1:-}" == --install ]]; then
  apt_install redis-server redis-server
  apt_install debootstrap debootstrap
fi

if need java "apt-get install openjdk-17-jre-headless (Kafka 4 needs Java 17+)"; then
  [[ "$(java -version 2>&1)" =~ version\ \"([0-9]+) ]]
  if (( BASH_REMATCH[1] < 17 )); then
    echo "java ${BASH_REMATCH[1]} is too old: Kafka 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)" >&2
    missing=1
  fi
fi
need mvn "apt-get install maven" || true
if need go "install Go 1.25+ (https://go.dev/doc/install)"; then
  [[ "$(go env GOVERSION)" =~ go1\.([0-9]+) ]]
  if (( BASH_REMATCH[1] < 25 )); then
    echo "$(go env GOVERSION) is too old: FerretDB 2 needs Go 1.25+" >&2
    missing=1
  fi
fi
need redis-server "apt-get install redis-server" || true
need redis-cli "apt-get install redis-tools" || true
need uv "pip install uv==0.13.9" || true
need python3 "apt-get install python3" || true

exit "$missing"
