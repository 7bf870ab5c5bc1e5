#!/usr/bin/env bash
# The demo README gives: sudo ./scripts/demo.sh
# Installs what is needed (scripts/setup.sh), builds lanyard (unless LANYARD names a binary, e.g.
# the installed package's /usr/bin/lanyard), then on a throwaway lab LAN built in
# network namespaces: attaches two guests to a bridge (one with a default route and IPv6, one
# with a smaller MTU), a third with
# macvlan, shows `inspect`, pings, detaches, and checks that nothing is left behind. When dockerd
# is installed it also attaches a real container (a private dockerd that never touches the
# host's network: --bridge=none --iptables=false). The machine's own interfaces, addresses,
# routes and /etc/resolv.conf are never touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run as root (sudo ./scripts/demo.sh)" >&2
    exit 1
fi
./scripts/setup.sh >/dev/null
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
# LANYARD=/usr/bin/lanyard runs the demo with an installed lanyard (the Debian package's) and
# builds nothing.
if [ -n "${LANYARD:-}" ]; then
    if [ ! -x "$LANYARD" ]; then
        echo "demo.sh: LANYARD=$LANYARD is not an executable" >&2
        exit 1
    fi
    echo "==> using $LANYARD ($("$LANYARD" --version))"
else
    echo "==> building lanyard (release)"
    cargo build --release --quiet
    LANYARD=$PWD/target/release/lanyard
fi

id=lydemo$$
HOST=$id-host LAN=$id-lan A=$id-a B=$id-b C=$id-c D=$id-d
work=$(mktemp -d /tmp/lanyard-demo.XXXXXX)
export LANYARD_STATE_DIR=$work/state LANYARD_HOST_ID=demo
dockerd_pid=

cleanup() {
    set +e
    if [ -n "$dockerd_pid" ]; then
        DOCKER_HOST=unix://$work/docker.sock docker rm -f demo-web >/dev/null 2>&1
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$dockerd_pid" 2>/dev/null
        grep " $work/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
    fi
    [ -f "$work/dnsmasq.pid" ] && kill "$(cat "$work/dnsmasq.pid")" 2>/dev/null
    # The DHCP daemon lanyard started for this demo's state directory.
    pkill -f -- "--state-dir $LANYARD_STATE_DIR daemon" 2>/dev/null
    for ns in $HOST $LAN $A $B $C $D; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

# `lanyard` as it would run on a LAN host: inside the lab's "host" namespace.
ly() { echo "+ lanyard $*"; nsenter --net=/run/netns/$HOST "$LANYARD" "$@"; }
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/$ns "$@"; }

echo "==> lab: namespace $HOST with bridge br0 198.18.0.1/24 (the LAN and its gateway),"
echo "    uplink0 (a 'physical NIC' whose far end is on the LAN in $LAN), guests $A $B $C"
for ns in $HOST $LAN $A $B $C $D; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$HOST" link add br0 type bridge
ip -n "$HOST" addr add 198.18.0.1/24 dev br0
ip -n "$HOST" link set br0 up
ip -n "$LAN" link add br0 type bridge
ip -n "$LAN" addr add 198.18.1.1/24 dev br0
ip -n "$LAN" link set br0 up
ip -n "$LAN" link add lanport0 type veth peer name uplink0 netns "$HOST"
ip -n "$LAN" link set lanport0 master br0 up
ip -n "$HOST" link set uplink0 up

echo; echo "==> attach: a bridge port with a static address and default route"
ly attach br0 netns:$A 198.18.0.50/24@198.18.0.1 2001:db8::50/64
ly attach br0 netns:$B 198.18.0.51/24 --mtu 1400
echo; echo "==> attach: macvlan on uplink0 (not a bridge)"
ly attach uplink0 netns:$C 198.18.1.60/24@198.18.1.1
echo; echo "==> inspect"
ly inspect netns:$A
echo; echo "==> ping: guest A -> gateway, A -> B, C -> its gateway over macvlan"
in_ns "$A" ping -c 2 -W 2 198.18.0.1 | tail -2
in_ns "$A" ping -c 2 -W 2 198.18.0.51 | tail -2
in_ns "$C" ping -c 2 -W 2 198.18.1.1 | tail -2

echo; echo "==> DHCP: dnsmasq serves the lab LAN; lanyard's daemon keeps the lease"
nsenter --net=/run/netns/$HOST dnsmasq --keep-in-foreground --conf-file=/dev/null --interface=br0 --bind-interfaces \
    --except-interface=lo --port=0 --dhcp-authoritative --no-ping \
    --dhcp-range=198.18.0.100,198.18.0.200,2m --dhcp-leasefile="$work/dnsmasq.leases" \
    --pid-file="$work/dnsmasq.pid" --log-facility="$work/dnsmasq.log" &
for _ in $(seq 50); do grep -q 'DHCP, IP range' "$work/dnsmasq.log" 2>/dev/null && break; sleep 0.1; done
ly attach br0 netns:$D dhcp --hostname demo-d
ly leases
in_ns "$D" ping -c 1 -W 2 198.18.0.1 | tail -1
ly detach netns:$D
grep DHCPRELEASE "$work/dnsmasq.log" | tail -1 | sed 's/^/dnsmasq: /'

if command -v dockerd >/dev/null 2>&1; then
    echo; echo "==> a real container: private dockerd, busybox image imported locally"
    dockerd --data-root "$work/data" --exec-root "$work/exec" -H "unix://$work/docker.sock" \
        --pidfile "$work/docker.pid" --bridge=none --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    export DOCKER_HOST=unix://$work/docker.sock
    for _ in $(seq 150); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
    mkdir -p "$work/rootfs/bin"
    cp /bin/busybox "$work/rootfs/bin/"
    for a in sh sleep ip ping cat; do ln -s busybox "$work/rootfs/bin/$a"; done
    tar -C "$work/rootfs" -c . | docker import - lanyard-demo/busybox:latest >/dev/null
    docker run -d --net none --name demo-web lanyard-demo/busybox sleep 600 >/dev/null
    ly attach br0 demo-web 198.18.0.80/24@198.18.0.1
    docker exec demo-web ping -c 2 -W 2 198.18.0.1 | tail -2
    docker exec demo-web ip addr show eth1 | grep -E 'link/ether|inet '
    ly detach demo-web
else
    echo; echo "(dockerd not installed: skipping the container part of the demo)"
fi

echo; echo "==> detach everything (and once more: detach is idempotent)"
ly detach netns:$A
ly detach netns:$B
ly detach netns:$C
ly detach netns:$A
left=$(ip -n "$HOST" -o link show | grep -vcE ' (lo|br0|uplink0)[:@]' || true)
records=$(find "$LANYARD_STATE_DIR" -name '*.json' | wc -l)
echo "links left in $HOST besides lo, br0, uplink0: $left; records left: $records"
[ "$left" -eq 0 ] && [ "$records" -eq 0 ]
echo "demo: done, nothing left behind"
