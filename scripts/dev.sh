#!/bin/sh
# `make dev`: build a busybox demo image, start `flotilla dev`, apply examples/hello.yaml, show
# the pods and what to try next. Ctrl-C stops the cluster (its pods too); `make dev` again
# resumes it. Needs root (containers, network namespaces).
set -eu
BIN="$1"
DEV_DIR="$2"
API=127.0.0.1:7001
export FLOTILLA_SERVER=$API

if [ "$(id -u)" != 0 ]; then
    echo "flotilla dev runs containers: run 'sudo make dev'" >&2
    exit 1
fi

# The demo image: Debian's static busybox in a one-layer OCI archive, side-loaded.
mkdir -p "$DEV_DIR/agent/images/import"
if ! "$BIN" image ls --data-dir "$DEV_DIR/agent" 2>/dev/null | grep -q '^busybox:latest'; then
    "$(dirname "$0")/busybox-image.sh" "$BIN" "$DEV_DIR/agent/images/import/busybox.tar"
fi

"$BIN" dev --data-dir "$DEV_DIR" 2>"$DEV_DIR/dev.log" &
echo "flotilla dev started; its log: $DEV_DIR/dev.log"
DEV=$!
trap 'kill -INT $DEV 2>/dev/null; wait $DEV' INT TERM

for _ in $(seq 1 60); do
    "$BIN" get nodes 2>/dev/null | grep -q ' Ready ' && break
    sleep 0.5
done
"$BIN" apply -f examples/hello.yaml
for _ in $(seq 1 60); do
    [ "$("$BIN" get pods -l app=hello 2>/dev/null | grep -c ' Running ')" -ge 3 ] && break
    sleep 0.5
done
"$BIN" get pods -o wide
IP=$("$BIN" get pods -l app=hello -o wide | awk 'NR==2 {print $6}')
cat <<TIPS

Flotilla is running (API $API). Next, in another terminal (export FLOTILLA_SERVER=$API):
  wget -qO- http://$IP:8080/                    # a replica answers on its pod IP
  flotilla scale deployment/hello --replicas 5
  flotilla delete pod <name>                    # and watch it come back: flotilla get pods -w
  flotilla logs <pod>  /  flotilla exec <pod> -- ls /
  flotilla describe deployment hello
Ctrl-C here stops the cluster; 'make dev' again resumes it.
TIPS
wait $DEV
