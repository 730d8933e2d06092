#!/usr/bin/env bash
# How long an echo loop started by one forged datagram lasts (CVE-2024-2169,
# "Loop DoS"): the figure docs/reliability.md gives.
#
#   sudo scripts/loop-dos.sh [SOCKECHO] [RUNS]
#
# In a network namespace of its own (root), a sockecho serves
# udp://127.0.0.2:P and a partner listens on 127.0.0.3: another sockecho,
# then a naive Python echo that answers everything. One datagram, forged
# from a raw socket to come from the partner's port, is sent to the
# sockecho. The namespace's UDP stack counts every datagram the loop moves
# (InDatagrams); the loop has ended when the count stands still for 300 ms
# (a loop still running after 10 s is cut off there).
# Printed per run: datagrams moved and the milliseconds from the forged
# datagram to the last one. RUNS (default 5) runs per partner.
set -euo pipefail

bin=${1:-target/release/sockecho}
runs=${2:-5}
bin=$(realpath "$bin")
ns=sockecho-loopdos-$$
ip netns add "$ns"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip -n "$ns" link set lo up

# Starts `ARGV...` in the namespace; its first output line (listen ok, or
# a port) lands in $first.
start() {
    local out
    out=$(mktemp)
    ip netns exec "$ns" "$@" >"$out" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 500); do
        [[ -s $out ]] && break
        sleep 0.01
    done
    first=$(head -1 "$out")
    rm -f "$out"
}

measure() {
    local partner=$1 a=$2 b=$3
    ip netns exec "$ns" python3 - "$a" "$b" <<'EOF'
import socket, struct, sys, time
def udp_in():
    with open('/proc/net/snmp') as f:
        rows = [l.split() for l in f if l.startswith('Udp:')]
    return int(rows[1][rows[0].index('InDatagrams')])
(dst, dport), (src, sport) = [(h, int(p)) for h, p in (x.rsplit(':', 1) for x in sys.argv[1:3])]
# A payload of its own each run: no run starts inside a guard's memory of
# the last one.
payload = b'one forged datagram %d' % time.monotonic_ns()
udp = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
before = udp_in()
start = time.monotonic()
raw.sendto(ip + udp, (dst, 0))
count, last = before, start
while time.monotonic() - last < 0.3 and time.monotonic() - start < 10:
    now = udp_in()
    if now != count:
        count, last = now, time.monotonic()
    time.sleep(0.0005)
print(f"{count - before} datagrams, {(last - start) * 1000:.0f} ms")
# Past every guard's memory (1 s) before the next run.
time.sleep(1.1)
EOF
}

start "$bin" serve udp://127.0.0.2:0 -q
a=${first#listen ok udp://}
start "$bin" serve udp://127.0.0.3:0 -q
b=${first#listen ok udp://}
for run in $(seq "$runs"); do
    echo "sockecho <-> sockecho, run $run: $(measure sockecho "$a" "$b")"
done

start python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.3", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
'
naive=127.0.0.3:$first
for run in $(seq "$runs"); do
    echo "sockecho <-> naive echo, run $run: $(measure naive "$a" "$naive")"
done
