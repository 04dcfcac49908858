#!/usr/bin/env bash
# bash scripts/copy_checkout.sh DEST: the checkout's tracked and untracked, not ignored files (no
# build outputs, no venvs) into DEST, emptied first; for the scripts that build a copy elsewhere.
set -euo pipefail
dest=${1:?usage: bash scripts/copy_checkout.sh DEST}
checkout=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$dest" && mkdir -p "$dest"
git -C "$checkout" ls-files -z --cached --others --exclude-standard | (cd "$checkout" && tar --null -T - -cf -) \
  | tar -xf - -C "$dest"
