#!/usr/bin/env bash
# One sha256 digest over files, their paths and contents: build-images.sh labels each image with
# the digest of everything it is built from, and builds it again only when that changes.
#   digest.sh [--also TEXT]... DIR [PATH...]          every file under DIR (or under its PATHs)
#   digest.sh [--also TEXT]... --git DIR PATHSPEC...  the files of a git work tree that git does
#       not ignore (tracked or not, as they are on disk): a build context whose ignored files
#       (.venv, caches) never reach an image
# --also adds text to the digest: the build arguments, the ids of the images built upon.
set -euo pipefail

git_mode=
also=()
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --git) git_mode=1 && shift ;;
    --also) also+=("${2?--also needs a text}") && shift 2 ;;
    *) echo "digest.sh: unknown option $1" >&2 && exit 2 ;;
  esac
done
dir="${1:?usage: digest.sh [--also TEXT]... [--git] DIR [PATH...]}"
shift
cd "$dir"

files() {  # NUL-separated paths, sorted, of the files to digest
  if [[ -n "$git_mode" ]]; then
    # -c and -o: tracked and untracked; a tracked file deleted on disk is left out, as the build
    # context leaves it out.
    git ls-files -z -c -o --exclude-standard -- "$@" | while IFS= read -r -d '' path; do
      if [[ -f "$path" ]]; then printf '%s\0' "$path"; fi
    done
  else
    find "${@:-.}" -type f -print0
  fi | LC_ALL=C sort -z -u
}

list="$(mktemp)"
trap 'rm -f "$list"' EXIT
files "$@" >"$list"
{
  printf '%s\n' "${also[@]}"
  # Each file's mode (a script that loses its execute bit is another image), then its contents.
  xargs -0 -r stat -c '%a %n' <"$list"
  xargs -0 -r sha256sum <"$list"
} | sha256sum | cut -d' ' -f1
