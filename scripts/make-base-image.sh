#!/usr/bin/env bash
# Make a Debian base image with Python 3 offline from an image registry: debootstrap from the machine's Debian
# mirror, then `podman import`. For machines that reach Debian's packages but no registry (this project's CI);
# elsewhere the Dockerfile's default base (python:3.11-slim-bookworm) is pulled as usual.
#   scripts/make-base-image.sh [TAG]      (default localhost/e5rt-base:bookworm; kept if it exists)
set -euo pipefail
TAG=${1:-localhost/e5rt-base:bookworm}
ENGINE=${CONTAINER_ENGINE:-podman}
if "$ENGINE" image exists "$TAG" 2>/dev/null; then
    echo "$TAG exists"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "make-base-image: debootstrap needs root" >&2; exit 1; }
# The mirror apt uses here (deb822 or one-line sources), so debootstrap reaches what apt reaches.
MIRROR=${DEBIAN_MIRROR:-$(grep -hoP '^URIs:\s*\K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)}
MIRROR=${MIRROR:-$(grep -hoP '^deb\s+\K\S+' /etc/apt/sources.list 2>/dev/null | head -1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /var/tmp/e5rt-rootfs.XXXXXX)
chmod 755 "$ROOTFS"  # the image's / (mktemp makes it 0700: no other user could reach anything)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "$ENGINE" import -q --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "$TAG imported ($(du -sh "$ROOTFS" | cut -f1) rootfs from $MIRROR)"
