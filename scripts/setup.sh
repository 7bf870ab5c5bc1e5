#!/usr/bin/env bash
# Installs what lanyard's build and test lab need on a Debian 12 machine. Run as root:
#   sudo ./scripts/setup.sh
# Idempotent and non-interactive; quick (no apt) when everything is already there.
# It starts and enables no system service: the tests run their own dockerd, dnsmasq, Kea and
# radvd inside network namespaces, never in the root namespace.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
# needrestart (if installed) must not restart any service after an install.
export NEEDRESTART_SUSPEND=1

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (sudo ./scripts/setup.sh)" >&2
    exit 1
fi

# Test lab: iproute2 (ip, bridge), DHCP servers, dockerd, busybox for the test image, tcpdump,
# radvd, ping, ebtables (iptables: the rebinding test drops unicast in its own namespace),
# systemd-analyze (package systemd: checks the shipped unit), promtool (package prometheus:
# checks the metrics text), podman (runs containers on lanyard's CNI networks), docker-compose
# (Compose on lanyard's Docker networks), containernetworking-plugins (the reference CNI plugins
# of the CNI bench and podman's CNI backend; podman alone may pull netavark instead), BIND 9
# (named, tsig-keygen), dig and Kea's DDNS daemon (DNS update tests: every named and
# kea-dhcp-ddns runs inside a test namespace).
# Build: a C toolchain for -sys crates; dpkg-dev (dpkg-shlibdeps: the Debian package's Depends).
PACKAGES=(
    iproute2 iputils-ping dnsmasq-base kea-dhcp4-server docker.io busybox-static tcpdump radvd systemd
    prometheus
    iptables
    podman docker-compose containernetworking-plugins
    bind9 bind9-dnsutils kea-dhcp-ddns-server
    ca-certificates gcc libc6-dev pkg-config dpkg-dev
)
# Packages whose postinst would start or enable a system service.
SERVICE_UNITS=(docker.service docker.socket containerd.service radvd.service
    kea-dhcp4-server.service prometheus.service podman.socket podman.service podman-restart.service
    named.service named-resolvconf.service kea-dhcp-ddns-server.service)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# Where cargo is: PATH, root's ~/.cargo/bin, or the invoking sudo user's ~/.cargo/bin.
find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
        return 0
    fi
    local home
    for home in "${HOME:-/root}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            echo "$home/.cargo/bin/cargo"
            return 0
        fi
    done
    return 1
}

updated=0
apt_update_once() {
    if [ "$updated" = 0 ]; then
        apt-get update -q
        updated=1
    fi
}

apt_install() {
    # Block service starts during the install (docker.io's postinst would start the system
    # dockerd, which creates docker0 and iptables rules in the root namespace). Keep an existing
    # policy-rc.d (someone else's) as it is.
    local policy=/usr/sbin/policy-rc.d ours=0 before=()
    local unit
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# lanyard setup.sh: no service starts during install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=1
    fi
    for unit in "${SERVICE_UNITS[@]}"; do
        if [ -e "/etc/systemd/system/multi-user.target.wants/$unit" ] ||
            [ -e "/etc/systemd/system/sockets.target.wants/$unit" ]; then
            before+=("$unit")
        fi
    done
    local rc=0
    apt_update_once || rc=$?
    if [ "$rc" -eq 0 ]; then
        apt-get install -y -q --no-install-recommends "$@" || rc=$?
    fi
    if [ "$ours" = 1 ]; then
        rm -f "$policy"
    fi
    # Do not leave newly installed services enabled for the next boot; units that were enabled
    # before stay as they were.
    if command -v systemctl >/dev/null 2>&1; then
        for unit in "${SERVICE_UNITS[@]}"; do
            case " ${before[*]:-} " in *" $unit "*) continue ;; esac
            systemctl disable "$unit" >/dev/null 2>&1 || true
        done
    fi
    return "$rc"
}

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done

# Rust: any cargo already there (rustup's in ~/.cargo/bin, or Debian's); else Debian 12's
# newer toolchain packages (plain rustc/cargo in bookworm are too old for the dependencies).
if ! find_cargo >/dev/null; then
    apt_update_once
    if apt-cache policy rustc-web 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        missing+=(rustc-web cargo-web rust-web-clippy rustfmt-web)
    else
        echo "setup.sh: no cargo found and no rustc-web package available: install Rust" >&2
        exit 1
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

for tool in ip bridge tcpdump dnsmasq kea-dhcp4 dockerd busybox radvd ping gcc named tsig-keygen dig \
    kea-dhcp-ddns; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
        echo "setup.sh: $tool is still missing after install" >&2
        exit 1
    fi
done

cargo=$(find_cargo) || {
    echo "setup.sh: cargo is still missing after install" >&2
    exit 1
}
cargo_dir=$(dirname "$cargo")
echo "setup.sh: $("$cargo" --version) ($cargo); $("$cargo_dir/rustc" --version 2>/dev/null || rustc --version)"

# cargo-deb builds the Debian package (scripts/test.sh, tests/packaging.rs). Pinned, so every
# machine builds the package the same way; installed once (about 2 minutes), after that this is
# one `cargo deb --version`. cargo finds it in $CARGO_HOME/bin even when that is not on PATH.
CARGO_DEB_VERSION=3.8.0
if ! "$cargo" deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "setup.sh: installing cargo-deb $CARGO_DEB_VERSION"
    "$cargo" install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
