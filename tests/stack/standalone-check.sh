#!/usr/bin/env bash
# The repository runs on its own: copies the files of this checkout (tracked and new, not
# ignored) into an empty temporary directory, with nothing beside them, and runs the local
# execution there. Installed tools are reused, not copied: the venv, the npm packages and the
# Cargo target directory (the copy builds only its own crates into it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
copy="$scratch/agent"
mkdir "$copy"
cd "$repo"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
  [ -e "$file" ] && printf '%s\0' "$file"
done | tar --null -T - -cf - | tar -xf - -C "$copy"
ln -s "$repo/.local" "$copy/.local"
ln -s "$repo/tests/stack/node_modules" "$copy/tests/stack/node_modules"
cd "$copy"
test ! -e ../shared
# As `make run` runs it: two executions of the schedule's input, cargo's progress shown.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" .local/venv/bin/python tests/stack/stack.py run \
  --input '{}' --runs 2 --build-progress > "$scratch/run.log" 2>&1 || { cat "$scratch/run.log"; exit 1; }
[ "$(grep -c '^execution SUCCEEDED' "$scratch/run.log")" -eq 2 ] || { cat "$scratch/run.log"; exit 1; }
# A first run's inactive heartbeats are explained, once: the second execution finds the stages synced.
[ "$(grep -c '^note: the heartbeats of .* (notSyncedYet)' "$scratch/run.log")" -eq 1 ] || { cat "$scratch/run.log"; exit 1; }
echo "standalone check: both local executions succeeded in a copy with nothing beside it ($copy)"
