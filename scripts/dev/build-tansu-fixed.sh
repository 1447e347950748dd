#!/usr/bin/env bash
# Build tansu 0.6.0 with one fix to its group coordinator (scripts/dev/tansu/*.patch): a follower's
# SyncGroup no longer completes a generation whose leader was expired. Stock 0.6.0 then forms
# the group with empty assignments, so after a `kill -9` a restarted pipeline can own nothing
# (ARCHITECTURE.md, "Known broker quirks"). This build exists to run the crash test against a
# broker without that defect; the product itself copes with stock 0.6.0 (the group watchdog).
#
#   scripts/dev/build-tansu-fixed.sh      # prints the binary's path (builds it once, ≈15 min)
#
# Sources come from crates.io (tansu and tansu-broker 0.6.0 tarballs); the rest of the
# dependency tree is pinned by tansu's own Cargo.lock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${DP_TOOLS_DIR:-$HOME/.cache/dicom-pipeline/tools}"
VERSION=0.6.0
OUT="$TOOLS/tansu-$VERSION-fixed"
BIN="$OUT/bin/tansu"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

SRC="$OUT/src"
rm -rf "$SRC" && mkdir -p "$SRC" "$OUT/bin"
fetch() { curl -fsSL "https://static.crates.io/crates/$1/$1-$VERSION.crate" | tar -xz -C "$SRC"; }
fetch tansu
fetch tansu-broker
(cd "$SRC/tansu-broker-$VERSION" && for p in "$ROOT"/scripts/dev/tansu/*.patch; do patch -p1 <"$p" >&2; done)
cat >>"$SRC/tansu-$VERSION/Cargo.toml" <<TOML

[patch.crates-io]
tansu-broker = { path = "../tansu-broker-$VERSION" }
TOML
# No --locked: the patch replaces one lock entry; every other crate keeps its locked version.
(cd "$SRC/tansu-$VERSION" && cargo build --release --features dynostore,libsql >&2)
cp "$SRC/tansu-$VERSION/target/release/tansu" "$BIN"
rm -rf "$SRC/tansu-$VERSION/target"
echo "$BIN"
