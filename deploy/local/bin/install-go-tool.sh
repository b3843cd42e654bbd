#!/usr/bin/env bash
# Builds a pinned Go tool from its module's source:
#   install-go-tool.sh MODULE VERSION PACKAGE OUT
# Not `go install MODULE/PACKAGE@VERSION`: that also asks the module proxy for the module's
# version list (a deprecation check), which the proxy here refuses, and FerretDB's module
# source lacks the generated build/version/version.txt its binary panics without.
set -euo pipefail

module="$1" version="$2" package="$3" out="$4"
name="${module#github.com/}"
src="$(dirname "$out")/../src/${name//\//-}@$version"

if [[ ! -d "$src" ]]; then
  dir="$(go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" ]] || { echo "go mod download $module@$version failed" >&2; exit 1; }
  rm -rf "$src.tmp" && mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp"
  mv "$src.tmp" "$src"
fi

case "$module" in
  */FerretDB | */FerretDB/v*) echo "$version" >"$src/build/version/version.txt"; ldflags="" ;;
  */process-compose)
    ldflags="-X $module/src/config.Version=$version -X $module/src/config.CheckForUpdates=false" ;;
  helm.sh/helm/v*) ldflags="-X $module/internal/version.version=$version" ;;
  */kubeconform | */kube-score) ldflags="-X main.version=$version" ;;
  *) ldflags="" ;;
esac

mkdir -p "$(dirname "$out")"
(cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags="$ldflags" -o "$out.tmp" "$package")
mv "$out.tmp" "$out"
