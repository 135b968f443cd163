#!/bin/sh
# Packs Debian's static busybox into a one-layer OCI archive tagged busybox:latest:
#   scripts/busybox-image.sh FLOTILLA_BIN OUT.tar
set -eu
BIN="$1"
OUT="$2"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc"
cp /bin/busybox "$ROOT/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
"$BIN" image pack "$ROOT" --tag busybox:latest --cmd sh -o "$OUT"
