#!/bin/sh
# Installs redis-server and redis-cli (redis-tools) for the cluster-mode tests
# (tests/cluster.rs: single server, a Sentinel, a three-master Redis Cluster).
# The tests start their own redis-server processes on free loopback ports
# (no persistence), so nothing is started here and no environment is needed.
set -eu
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    echo "# redis-server already installed: $(redis-server --version)" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >&2
$SUDO apt-get install -y -q redis-server redis-tools >&2
# The packaged service is not needed (tests run their own servers).
if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "# installed: $(redis-server --version)" >&2
