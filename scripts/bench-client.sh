#!/usr/bin/env bash
# sockecho bench against the neutral C load client, side by side in one run:
# the same server (c_epoll_echo, or c_udp_echo with PROTO=udp, from
# ../shared/bench, pinned to CPU 0), each client pinned to CPU 1,
# alternating ROUNDS times. Prints messages/s and client CPU time per
# message for each round, then the means and the ratios sockecho/reference.
# Usage: scripts/bench-client.sh [CONNS] [SIZE] [SECONDS] [ROUNDS]
#   PROTO=udp: UDP flows; WINDOW (default 1) datagrams in flight per flow
#   for both clients (udp_load's window, sockecho's --pipeline), and both
#   count a datagram unanswered for 200 ms as lost (udp_load's fixed
#   deadline, sockecho's -W).
set -euo pipefail
conns=${1:-100}; size=${2:-64}; secs=${3:-3}; rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
refs=${BENCH_OUT:-/tmp/sockecho-bench}
proto=${PROTO:-tcp}
window=${WINDOW:-1}
[ -x "$refs/echo_load" ] || BENCH_OUT=$refs "$here/../shared/bench/build.sh" >/dev/null
bin=$here/target/release/sockecho
[ -x "$bin" ] || cargo build --release --manifest-path "$here/Cargo.toml" >/dev/null
port=$((20000 + RANDOM % 20000))
if [ "$proto" = udp ]; then
  taskset -c 0 "$refs/c_udp_echo" $port >/dev/null 2>&1 &
  endpoint=udp://127.0.0.1:$port
  ref() { taskset -c 1 "$refs/udp_load" 127.0.0.1 $port "$conns" "$size" "$secs" "$window"; }
  shape=(--pipeline "$window" -W 200ms)
else
  taskset -c 0 "$refs/c_epoll_echo" $port >/dev/null 2>&1 &
  endpoint=tcp://127.0.0.1:$port
  ref() { taskset -c 1 "$refs/echo_load" 127.0.0.1 $port "$conns" "$size" "$secs"; }
  shape=()
fi
server=$!
# Files of this run's own: others may run this script at the same time.
tmp=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 0.3
TIMEFORMAT='%U %S'
cpu() { awk '{ print $1 + $2 }' "$1"; }
printf '%-9s %10s %14s\n' client msgs/s cpu_us/msg
for _ in $(seq "$rounds"); do
  { time ref > "$tmp/ref.out"; } 2> "$tmp/ref.time"
  m=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' "$tmp/ref.out")
  c=$(awk -v c="$(cpu "$tmp/ref.time")" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')
  printf '%-9s %10.0f %14.3f\n' reference "$m" "$c" | tee -a "$tmp/all"
  { time taskset -c 1 "$bin" bench "$endpoint" -c "$conns" -s "$size" -d "${secs}s" "${shape[@]}" --json > "$tmp/se.out"; } 2> "$tmp/se.time"
  m=$(sed -n 's/.*"msgs_per_s":\([0-9.]*\).*/\1/p' "$tmp/se.out")
  c=$(awk -v c="$(cpu "$tmp/se.time")" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')
  printf '%-9s %10.0f %14.3f\n' sockecho "$m" "$c" | tee -a "$tmp/all"
done
awk '{ m[$1] += $2; c[$1] += $3; n[$1]++ }
  END {
    for (k in n) printf "%-9s %10.0f %14.3f  (mean of %d)\n", k, m[k] / n[k], c[k] / n[k], n[k]
    printf "ratio sockecho/reference: %.2f in msgs/s, %.2f in CPU per message\n",
      (m["sockecho"] / n["sockecho"]) / (m["reference"] / n["reference"]),
      (c["sockecho"] / n["sockecho"]) / (c["reference"] / n["reference"])
  }' "$tmp/all"
