#!/usr/bin/env bash
# Make podman usable on a machine like the project's CI (no Docker daemon, no image registry; run as root):
# install podman, runc and debootstrap from Debian, and give podman the settings known to work there: the runc
# runtime (crun fails on setrlimit and on the cgroup layout), vfs storage, the host network, explicit ulimits.
# It writes podman's own configuration only (/etc/containers/*.d), never anything kernel-wide (no binfmt).
# A machine whose podman already works needs none of this: scripts/build-image.sh only calls `podman build`.
set -euo pipefail
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "podman-setup: run as root to install podman, runc and debootstrap" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q podman runc debootstrap >/dev/null
fi
mkdir -p /etc/containers/containers.conf.d /etc/containers/storage.conf.d 2>/dev/null || true
conf=/etc/containers/containers.conf.d/50-e5rt-ci.conf
if [ ! -f "$conf" ] && [ -w /etc/containers/containers.conf.d ]; then
    cat > "$conf" <<'CONF'
# written by e5rt's scripts/podman-setup.sh: what podman needs on the project's CI machines
[containers]
netns = "host"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
fi
if [ ! -f /etc/containers/storage.conf ] && [ -w /etc/containers ]; then
    printf '# written by e5rt scripts/podman-setup.sh\n[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
        > /etc/containers/storage.conf
fi
podman --version
