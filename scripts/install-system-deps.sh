#!/usr/bin/env bash
# Install the Debian packages Sidegate's tests, demo and benchmark need, only if they are missing.
#
#   scripts/install-system-deps.sh                        # default set: nginx-light redis-server
#   scripts/install-system-deps.sh nginx-light redis-server wrk
#   SIDEGATE_SYSTEM_DEPS="nginx-light wrk" scripts/install-system-deps.sh
#
# Known packages: nginx-light (or nginx), wrk, redis-server, chromium, buildah, debootstrap, iptables. A package
# counts as present when dpkg has it installed or its command is already on PATH (so a hand-built nginx
# is fine too).
# Idempotent: when everything is present it does nothing and needs no root. When something is missing it
# must run as root (or under sudo): `apt-get update` once, then a quiet non-interactive install. Services
# that the packages start on the system (nginx on :80, redis on :6379) are stopped and disabled again:
# tests and the benchmark start their own instances on free loopback ports.
set -euo pipefail

DEFAULT_PACKAGES="nginx-light redis-server"

if [[ $# -gt 0 ]]; then
    packages=("$@")
else
    read -r -a packages <<<"${SIDEGATE_SYSTEM_DEPS:-$DEFAULT_PACKAGES}"
fi

# The command that proves a package is usable, and the system service its postinst may start.
command_for() {
    case "$1" in
        nginx | nginx-light | nginx-full | nginx-core) echo nginx ;;
        redis-server) echo redis-server ;;
        chromium) echo chromium ;;
        iptables) echo iptables-restore ;;
        *) echo "$1" ;;
    esac
}

# Installed alongside (we skip Recommends): headless Chromium renders text only with some font present.
extras_for() {
    case "$1" in
        chromium) echo fonts-liberation ;;
        *) echo "" ;;
    esac
}

service_for() {
    case "$1" in
        nginx | nginx-light | nginx-full | nginx-core) echo nginx ;;
        redis-server) echo redis-server ;;
        *) echo "" ;;
    esac
}

is_present() {
    local pkg=$1 cmd
    cmd=$(command_for "$pkg")
    # nginx and redis-server live in /usr/sbin, which a non-root PATH may lack.
    if command -v "$cmd" >/dev/null 2>&1 || [[ -x "/usr/sbin/$cmd" ]]; then
        return 0
    fi
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for pkg in "${packages[@]}"; do
    if ! is_present "$pkg"; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "system deps: all present (${packages[*]})"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system deps: missing ${missing[*]} and apt-get is not available;" \
        "install them with your package manager." >&2
    exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "system deps: missing ${missing[*]}." >&2
        echo "Run as root:  sudo $0 ${packages[*]}" >&2
        echo "or:           sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

to_install=("${missing[@]}")
for pkg in "${missing[@]}"; do
    extra=$(extras_for "$pkg")
    [[ -z "$extra" ]] || to_install+=("$extra")
done

echo "system deps: installing ${to_install[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${to_install[@]}" >/dev/null

# Package scripts may have started a system-wide instance (nginx on port 80, redis on 6379). Stop only
# what this run installed; a service that was already there belongs to someone else.
for pkg in "${missing[@]}"; do
    svc=$(service_for "$pkg")
    [[ -n "$svc" ]] || continue
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
done

for pkg in "${missing[@]}"; do
    if ! is_present "$pkg"; then
        echo "system deps: $pkg still missing after apt-get install" >&2
        exit 1
    fi
done
echo "system deps: installed ${missing[*]}"
