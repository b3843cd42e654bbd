#!/usr/bin/env bash
# Builds every image deploy/compose.yaml + deploy/compose.local-images.yaml run, with no registry:
#   build-images.sh REPO_ROOT CACHE_DIR [--early]
#
#   regionstore-base:local        Debian bookworm (minbase, python3), made with debootstrap and
#                                 `docker import`ed: the base of everything below but the stores
#   regionstore-uv:local          the uv binary alone, imported, for deploy/Dockerfile's uv stage
#   regionstore:dev               deploy/Dockerfile on the base (PyPI through uv.lock)
#   regionstore-kafka:local       Debian's JRE + the Kafka jars of CACHE_DIR/kafka/libs
#   regionstore-redis:local       Debian's redis-server
#   regionstore-docdb-root:local  the local stack's DocumentDB root (CACHE_DIR/docdb-root), imported
#   regionstore-store:local       that root + FerretDB 2 (CACHE_DIR/bin): one region's store
#
# --early builds only what needs nothing `make tools` makes: the base, uv, the service image,
# Redis and the JRE stage of the Kafka image (the slow, downloading part), so CI runs it while
# the tools are built and the local stack's tests run; the full build then finds those in the
# layer cache and adds the jars, the DocumentDB root and FerretDB (about 30 s).
#
# Each image carries a label, regionstore.inputs, with a digest of everything it is made from
# (deploy/docker/digest.sh: its Dockerfile and build context, its build arguments, the id of the
# image it is built on; for the base, the function below that makes its root). An image whose
# label matches is left as it is, so a second run builds nothing; a change to any input builds
# that image and those built on it again. The debootstrapped root is kept as
# CACHE_DIR/docker/base-root.tar with its digest. Each step is timed.
set -euo pipefail

repo="${1:?usage: build-images.sh REPO_ROOT CACHE_DIR [--early]}"
cache="${2:?usage: build-images.sh REPO_ROOT CACHE_DIR [--early]}"
early="${3:-}"
state="$cache/docker"
here="$repo/deploy/docker"
log="$state/build${early:+-early}.log"

fail() { echo "docker images: $*" >&2; exit 1; }
step() {  # step NAME COMMAND...: runs it, logs it, times it
  local name="$1" start=$SECONDS
  shift
  "$@" >>"$log" 2>&1 || fail "$name could not be built: see the end of $log, fix that, then make compose-images"
  printf '  %-26s %4ds\n' "$name" $((SECONDS - start))
}
LABEL=regionstore.inputs
# current IMAGE DIGEST: the image exists and was made from these inputs ("up to date" is printed).
current() {
  [[ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" == "$2" ]] \
    && printf '  %-26s up to date\n' "$1"
}
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
digest() { "$here/digest.sh" "$@"; }
text_digest() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }

command -v docker >/dev/null || fail "no docker CLI here: make compose-engine (as root) installs Debian's docker.io"
docker info >/dev/null 2>&1 || fail "no Docker engine answers: make compose-engine (as root) starts Debian's"
: "${FERRETDB:=$(ls "$cache"/bin/ferretdb-v2.* 2>/dev/null | tail -n 1)}"
: "${DOCDB_ROOT:=$cache/docdb-root}"
if [[ -z "$early" ]]; then
  [[ -x "$FERRETDB" ]] || fail "no FerretDB binary in $cache/bin: run make tools STORE_IMPL=ferretdb"
  [[ -f "$DOCDB_ROOT/.complete" ]] || fail "no DocumentDB root at $DOCDB_ROOT: run make tools STORE_IMPL=ferretdb"
  compgen -G "$cache/kafka/libs/.complete-*" >/dev/null || fail "no Kafka jars in $cache/kafka/libs: run make tools"
fi

mkdir -p "$state"
: >"$log"

# docker 20.10's own CLI has BuildKit built in; a newer CLI needs its buildx plugin for it.
build_cli=(docker)
if ! docker buildx version >/dev/null 2>&1 && [[ -x /usr/bin/docker ]]; then build_cli=(/usr/bin/docker); fi
# --network host: RUN steps reach PyPI and the Debian mirror as the host does.
build() {  # build DIGEST ARGS...
  local inputs="$1"
  shift
  DOCKER_BUILDKIT=1 "${build_cli[@]}" build --network host --progress plain --label "$LABEL=$inputs" "$@"
}

base_root() {
  [[ $EUID -eq 0 ]] || fail "debootstrap needs root"
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
  local mirror root="$state/base-root.tmp"
  mirror="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1)" || true
  mirror="${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
  rm -rf "$root"
  # bookworm: Python 3.11, the interpreter the test suite runs on.
  debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$root" "$mirror"
  # No service is started while an image is built; docs and caches stay out of the image.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
  # The host's own CA certificates (a TLS-inspecting egress proxy's, say), so that builds reach
  # PyPI as the host does.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  # (man1 stays: packages such as the JRE link their pages into it through update-alternatives.)
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/*
  mkdir -p "$root/usr/share/man/man1"
  tar --numeric-owner -C "$root" -cf "$state/base-root.tar.tmp" .
  mv "$state/base-root.tar.tmp" "$state/base-root.tar"
  rm -rf "$root"
}

uv_image() {  # uv_image UV_BINARY DIGEST
  local uv="$1" dir="$state/uv"
  file -L "$uv" | grep -q ELF || fail "no uv binary found (pip install uv)"
  rm -rf "$dir" && mkdir -p "$dir" && cp "$uv" "$dir/uv"
  tar -C "$dir" -c uv | docker import -m "uv $("$uv" --version)" -c "LABEL $LABEL=$2" - regionstore-uv:local
}

context() {  # context NAME FILES...: a fresh build context in CACHE_DIR/docker/NAME
  local dir="$state/$1"
  shift
  rm -rf "$dir" && mkdir -p "$dir" && cp -r "$@" "$dir/"
  echo "$dir"
}

echo "building the images (log: $log)"
# The base: the function that makes its root, the host's CA certificates it copies in, the
# settings of the import.
base_changes=(-c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt')
base_inputs="$(text_digest "$(declare -f base_root)" "${base_changes[*]}" \
  "$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null)")"
if ! current regionstore-base:local "$base_inputs"; then
  [[ -s "$state/base-root.tar" && "$(cat "$state/base-root.digest" 2>/dev/null)" == "$base_inputs" ]] \
    || { step "base root (debootstrap)" base_root && echo "$base_inputs" >"$state/base-root.digest"; }
  step "import base" docker import "${base_changes[@]}" -c "LABEL $LABEL=$base_inputs" \
    "$state/base-root.tar" regionstore-base:local
fi
base_id="$(image_id regionstore-base:local)"
uv_bin="$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null)" || uv_bin="$(command -v uv)" \
  || fail "no uv binary found (pip install uv)"
uv_inputs="$(sha256sum <"$uv_bin" | cut -d' ' -f1)"
current regionstore-uv:local "$uv_inputs" || step "import uv" uv_image "$uv_bin" "$uv_inputs"
# The service image's context: the repository as deploy/Dockerfile and .dockerignore use it
# (the tests aside); every file of it when the repository is not a git work tree.
service_args=(--build-arg PYTHON_IMAGE=regionstore-base:local --build-arg UV_IMAGE=regionstore-uv:local
  --build-arg PYTHON=/usr/bin/python3)
members=(pyproject.toml uv.lock .dockerignore deploy/Dockerfile shared gateway writer-service
  replicator-service recovery-service tools testing bench)
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  sources=(--git "$repo" "${members[@]}" ':(exclude)*/tests/*' ':(exclude)bench/results/*')
else
  sources=("$repo" "${members[@]}")
fi
service_inputs="$(digest --also "${service_args[*]}" --also "$base_id" --also "$(image_id regionstore-uv:local)" \
  "${sources[@]}")"
current regionstore:dev "$service_inputs" || step "regionstore:dev" build "$service_inputs" \
  -f "$repo/deploy/Dockerfile" "${service_args[@]}" -t regionstore:dev "$repo"
redis_inputs="$(digest --also "$base_id" "$here/redis")"
current regionstore-redis:local "$redis_inputs" \
  || step "regionstore-redis:local" build "$redis_inputs" -t regionstore-redis:local "$here/redis"
if [[ -n "$early" ]]; then
  # The JRE stage alone, tagged so that the next run finds it: its context needs no jars.
  jre_context="$(context jre-context "$here/kafka/Dockerfile")"
  jre_inputs="$(digest --also "$base_id" --also "target jre" "$jre_context")"
  current regionstore-kafka-jre:local "$jre_inputs" \
    || step "Kafka's JRE stage" build "$jre_inputs" --target jre -t regionstore-kafka-jre:local "$jre_context"
else
  kafka_context="$(context kafka-context "$here/kafka/Dockerfile" "$here/kafka/bin" \
    "$repo/deploy/local/kafka/log4j2.xml" "$cache/kafka/libs")"
  kafka_inputs="$(digest --also "$base_id" "$kafka_context")"
  current regionstore-kafka:local "$kafka_inputs" \
    || step "regionstore-kafka:local" build "$kafka_inputs" -t regionstore-kafka:local "$kafka_context"
  # The DocumentDB root is hundreds of MB: its digest is its script's and its files' names,
  # sizes and times (docdb-root.sh makes it anew, so a new root has new times).
  docdb_inputs="$(digest --also "$(find "$DOCDB_ROOT" -printf '%P %s %T@ %m\n' | LC_ALL=C sort | sha256sum)" \
    "$repo/deploy/local/bin" docdb-root.sh)"
  if ! current regionstore-docdb-root:local "$docdb_inputs"; then
    step "import DocumentDB root" bash -c 'tar --numeric-owner -C "$1" -c . | docker import -c "LABEL $2" - regionstore-docdb-root:local' \
      _ "$DOCDB_ROOT" "$LABEL=$docdb_inputs"
  fi
  store_context="$(context store-context "$here/store/Dockerfile" "$here/store/start.sh" "$here/store/healthy.sh")"
  cp "$FERRETDB" "$store_context/ferretdb"
  store_inputs="$(digest --also "$(image_id regionstore-docdb-root:local)" "$store_context")"
  current regionstore-store:local "$store_inputs" \
    || step "regionstore-store:local" build "$store_inputs" -t regionstore-store:local "$store_context"
fi

echo "image sizes:"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^regionstore' | sort | sed 's/^/  /'
