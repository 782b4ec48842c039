#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 from Debian packages, for building Sidegate's image
# where no container registry is reachable (the tests, an air-gapped CI with a Debian mirror).
#
#   scripts/debootstrap-base.sh [IMAGE]          # default IMAGE: localhost/sidegate-base:bookworm
#   make image BASE=localhost/sidegate-base:bookworm
#
# What it holds: a debootstrap "minbase" (essential packages, apt) plus `python3` (Debian's 3.11, at
# /usr/bin/python3). No compiler: the Containerfile's builder stage installs gcc and python3-dev itself,
# exactly as it does on the official python:3.11-slim-bookworm image, so one base serves both stages.
#
# Cached: the root file system is tarred once into $SIDEGATE_IMAGE_CACHE (default
# /var/tmp/sidegate-image-cache), under a name keyed by this script's content, and the image is
# labelled with the same key, so a second run with the image still in buildah's storage does nothing
# and one with only the tarball left just imports it. Edit this script and everything is rebuilt.
# Needs root (debootstrap), debootstrap and buildah: `make image-deps` installs them.
# DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).
set -euo pipefail

image="${1:-localhost/sidegate-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${SIDEGATE_IMAGE_CACHE:-/var/tmp/sidegate-image-cache}"
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
tarball="$cache/bookworm-python3-$key.tar"

for tool in debootstrap buildah; do
    if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$tool" ]]; then
        echo "debootstrap-base: $tool is missing; run 'make image-deps' (as root)" >&2
        exit 1
    fi
done
if [[ $(id -u) -ne 0 ]]; then
    echo "debootstrap-base: debootstrap needs root (run it as root or under sudo)" >&2
    exit 1
fi

if [[ $(buildah inspect --type image --format '{{index .ImageAnnotations "org.sidegate.base-key"}}' \
    "$image" 2>/dev/null) == "$key" ]]; then
    echo "debootstrap-base: $image is up to date ($key)"
    exit 0
fi

if [[ ! -f "$tarball" ]]; then
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    # On a tmpfs of its own, dpkg's thousands of fsyncs cost nothing (54 s against 62 s here); on disk if
    # that mount is refused.
    if mount -t tmpfs -o size=2g,mode=0755 sidegate-rootfs "$root" 2>/dev/null; then
        trap 'umount -R "$root"; rmdir "$root"' EXIT
    else
        trap 'umount -R "$root" 2>/dev/null; rm -rf --one-file-system "$root"' EXIT
    fi
    echo "debootstrap-base: debootstrap bookworm minbase + python3 from $mirror (about a minute)"
    started=$SECONDS
    /usr/sbin/debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" \
        >"$cache/debootstrap.log" 2>&1 ||
        {
            tail -20 "$cache/debootstrap.log" >&2
            echo "debootstrap-base: debootstrap failed; full log in $cache/debootstrap.log" >&2
            exit 1
        }
    # What an image needs none of: downloaded packages, package lists (the builder runs apt-get update),
    # documentation, and the host's name and resolver (the container runtime provides both).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "debootstrap-base: root file system built in $((SECONDS - started)) s: $tarball"
fi

# Import: a container from scratch, the tarball unpacked at /, committed as an image.
trap - EXIT
[[ -z "${root:-}" ]] || { umount -R "$root" 2>/dev/null || true; rm -rf --one-file-system "$root"; }
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$tarball" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --annotation "org.sidegate.base-key=$key" \
    --label "org.opencontainers.image.description=Debian bookworm minbase with python3 (debootstrap)" "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
echo "debootstrap-base: imported $image ($key)"
