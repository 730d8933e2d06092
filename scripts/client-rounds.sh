#!/usr/bin/env bash
# `sockecho bench` of two builds side by side (say, before and after a
# change), in interleaved rounds as ../shared/bench/rounds.sh does for
# servers: the C reference servers run pinned to CPU 0, each client pinned
# to CPU 1, OLD then NEW for every scenario of every round. Prints per
# scenario the median over rounds of NEW/OLD messages per second and of
# client CPU per message (below 1 is better).
#
# Usage: scripts/client-rounds.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#   SCENARIOS='tcp:100:64 udp:32:64 ...'  proto:connections:bytes, each on
#   both drivers (io_uring, --epoll)
set -euo pipefail
old=$1 new=$2 rounds=${3:-5} secs=${4:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
refs=${BENCH_OUT:-/tmp/sockecho-bench}
for ref in c_epoll_echo c_udp_echo; do
  if [ ! -x "$refs/$ref" ]; then
    echo "client-rounds: building $refs/$ref from ../shared/bench" >&2
    mkdir -p "$refs"
    gcc -O2 -Wall -o "$refs/$ref" "$here/../shared/bench/$ref.c"
  fi
done
command -v bc >/dev/null || { echo "client-rounds: needs bc" >&2; exit 1; }
tcp_port=$((27000 + RANDOM % 1000)) udp_port=$((28000 + RANDOM % 1000))
taskset -c 0 "$refs/c_epoll_echo" "$tcp_port" >/dev/null 2>&1 & tcp_pid=$!
taskset -c 0 "$refs/c_udp_echo" "$udp_port" 32 >/dev/null 2>&1 & udp_pid=$!
trap 'kill $tcp_pid $udp_pid 2>/dev/null' EXIT
sleep 0.5
results=$(mktemp)
for r in $(seq "$rounds"); do
  for sc in ${SCENARIOS:-tcp:100:64 udp:32:64 udp:1:64}; do
    IFS=: read -r proto conns size <<<"$sc"
    port=$tcp_port; [ "$proto" = udp ] && port=$udp_port
    for driver in "" --epoll; do
      for which in old new; do
        bin=$old; [ "$which" = new ] && bin=$new
        out=$({ /usr/bin/time -f "cpu=%U+%S" taskset -c 1 "$bin" bench "$proto://127.0.0.1:$port" \
          -c "$conns" -s "$size" -d "${secs}s" --threads 1 --json $driver; } 2>&1 || true)
        msgs=$(grep -o '"msgs_per_s":[0-9.]*' <<<"$out" | cut -d: -f2)
        cpu=$(grep -o 'cpu=[0-9.+]*' <<<"$out" | cut -d= -f2 | bc)
        echo "round $r $sc${driver:+ $driver} $which msgs_per_s=${msgs:-0} client_cpu_s=$cpu"
        echo "$r|$sc${driver:+ $driver}|$which|${msgs:-0}|$cpu" >>"$results"
      done
    done
  done
done
python3 - "$results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, sc, which, msgs, cpu = line.strip().split("|")
    runs[(r, sc)][which] = (float(msgs), float(cpu))
ratios = collections.defaultdict(list)
for (r, sc), v in runs.items():
    (mo, co), (mn, cn) = v["old"], v["new"]
    if mo > 0 and mn > 0:
        ratios[sc].append((mn / mo, (cn / mn) / (co / mo)))
for sc, l in ratios.items():
    m = [x for x, _ in l]
    c = [y for _, y in l]
    print(f"ratio {sc} new/old msgs_per_s median={statistics.median(m):.2f} min={min(m):.2f} max={max(m):.2f}"
          f"  cpu_per_msg median={statistics.median(c):.2f}")
PY
rm -f "$results"
