#!/usr/bin/env bash
# Prints the directory cargo builds into for this workspace: CARGO_TARGET_DIR or build.target-dir
# when set, else ./target (also when cargo cannot tell). Run from the repository root.
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "${target_dir:-$(pwd)/target}"
