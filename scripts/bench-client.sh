#!/usr/bin/env bash
# sockecho bench against the neutral C load client, side by side in one run:
# the same server (c_epoll_echo from ../shared/bench, pinned to CPU 0), each
# client pinned to CPU 1, alternating ROUNDS times. Prints messages/s and
# client CPU time per message for each, and the ratios.
# Usage: scripts/bench-client.sh [CONNS] [SIZE] [SECONDS] [ROUNDS]   (PROTO=udp for UDP)
set -euo pipefail
conns=${1:-100}; size=${2:-64}; secs=${3:-3}; rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
refs=${BENCH_OUT:-/tmp/sockecho-bench}
proto=${PROTO:-tcp}
[ -x "$refs/echo_load" ] || BENCH_OUT=$refs "$here/../shared/bench/build.sh" >/dev/null
bin=$here/target/release/sockecho
[ -x "$bin" ] || cargo build --release --manifest-path "$here/Cargo.toml" >/dev/null
port=$((20000 + RANDOM % 20000))
if [ "$proto" = udp ]; then
  taskset -c 0 "$refs/c_udp_echo" $port >/dev/null 2>&1 &
  endpoint=udp://127.0.0.1:$port
  ref() { taskset -c 1 "$refs/udp_load" 127.0.0.1 $port "$conns" "$size" "$secs" 1; }
else
  taskset -c 0 "$refs/c_epoll_echo" $port >/dev/null 2>&1 &
  endpoint=tcp://127.0.0.1:$port
  ref() { taskset -c 1 "$refs/echo_load" 127.0.0.1 $port "$conns" "$size" "$secs"; }
fi
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 0.3
TIMEFORMAT='%U %S'
cpu() { awk '{ print $1 + $2 }' "$1"; }
printf '%-9s %10s %14s\n' client msgs/s cpu_us/msg
for _ in $(seq "$rounds"); do
  { time ref > /tmp/bc-ref.out; } 2> /tmp/bc-ref.time
  m=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' /tmp/bc-ref.out)
  printf '%-9s %10s %14.3f\n' reference "$m" "$(awk -v c="$(cpu /tmp/bc-ref.time)" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')"
  { time taskset -c 1 "$bin" bench "$endpoint" -c "$conns" -s "$size" -d "${secs}s" --json > /tmp/bc-se.out; } 2> /tmp/bc-se.time
  m=$(sed -n 's/.*"msgs_per_s":\([0-9.]*\).*/\1/p' /tmp/bc-se.out)
  printf '%-9s %10.0f %14.3f\n' sockecho "$m" "$(awk -v c="$(cpu /tmp/bc-se.time)" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')"
done
