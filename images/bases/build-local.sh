#!/usr/bin/env bash
# Registry-free base images for air-gapped machines and for the image tests (tests/images/):
#
#   1. a Debian Python base made with mmdebstrap from a Debian mirror and imported into the engine:
#        $PYTHON_BASE   (default localhost/tokensmith-base/python:3.11-bookworm)
#   2. a CPU PyTorch base on top of it (torch in the system site-packages, like the upstream
#      pytorch/pytorch images):
#        $TORCH_BASE    (default localhost/tokensmith-base/pytorch:2.13.0-cpu)
#
# Needs root, mmdebstrap and podman (Debian: apt-get install podman buildah mmdebstrap uidmap
# fuse-overlayfs runc). pip inside the build uses the host's pip configuration and CA certificates,
# handed to that one RUN only (build secrets; local find-links directories and file:// indexes are
# served on loopback while it runs, see images/build.py), so a find-links directory holding the CPU
# wheel works as well as PyTorch's CPU index. Existing bases are kept; FORCE=1 rebuilds them.
#
#   images/bases/build-local.sh                      # or: make images-bases
#   DEBIAN_MIRROR=http://mirror.internal/debian images/bases/build-local.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE=${DEBIAN_SUITE:-bookworm}                 # bookworm's python3 is 3.11, like the upstream bases
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON_BASE=${PYTHON_BASE:-localhost/tokensmith-base/python:3.11-$SUITE}
TORCH_VERSION=${TORCH_VERSION:-$(sed -nE 's/.*"torch==([0-9.]+)".*/\1/p' pyproject.toml | head -1)}
TORCH_BASE=${TORCH_BASE:-localhost/tokensmith-base/pytorch:$TORCH_VERSION-cpu}
ENGINE=${ENGINE:-podman}
PYTHON=${PYTHON:-python3}

have() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
for tool in mmdebstrap "$ENGINE"; do
  command -v "$tool" >/dev/null || { echo "build-local.sh: $tool not found; apt-get install podman buildah mmdebstrap uidmap fuse-overlayfs runc" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "build-local.sh: run as root (mmdebstrap and rootful podman)" >&2; exit 2; }

if [ -n "${FORCE:-}" ] || ! have "$PYTHON_BASE"; then
  tarball=$(mktemp --suffix=.tar)
  trap 'rm -f "$tarball"' EXIT
  echo "== $PYTHON_BASE: Debian $SUITE (minbase) + python3 from $MIRROR"
  # minbase = essential packages + apt; passwd for useradd in the images; python-is-python3 so
  # `python` runs, as in the python:*-slim images. Apt lists and caches are dropped (the images run
  # apt-get update before they install anything).
  mmdebstrap --variant=minbase --mode=root \
    --include=ca-certificates,passwd,python3,python3-venv,python3-pip,python-is-python3 \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    --customize-hook='find "$1"/usr/lib/python3* -depth -type d \( -name test -o -name tests \) -exec rm -rf {} +' \
    "$SUITE" "$tarball" "$MIRROR"
  "$ENGINE" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change 'LABEL org.opencontainers.image.title=tokensmith-base-python' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase and python3, made with mmdebstrap from $MIRROR\"" \
    --change "LABEL org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$tarball" "$PYTHON_BASE"
  rm -f "$tarball"
else
  echo "== $PYTHON_BASE: present (FORCE=1 rebuilds)"
fi

if [ -n "${FORCE:-}" ] || ! have "$TORCH_BASE"; then
  echo "== $TORCH_BASE: torch==$TORCH_VERSION (CPU) on $PYTHON_BASE"
  "$PYTHON" images/build.py engine-build --engine "$ENGINE" -- \
    -f images/bases/pytorch-cpu/Containerfile \
    --build-arg PYTHON_BASE="$PYTHON_BASE" \
    --build-arg TORCH_VERSION="$TORCH_VERSION" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --build-arg TORCH_INDEX_URL="$("$PYTHON" images/build.py torch-index-url --torch-version "$TORCH_VERSION")" \
    -t "$TORCH_BASE" images/bases/pytorch-cpu
else
  echo "== $TORCH_BASE: present (FORCE=1 rebuilds)"
fi
"$ENGINE" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep tokensmith-base || true
