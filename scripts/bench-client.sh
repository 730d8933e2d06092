#!/usr/bin/env bash
# `sockecho bench` against the neutral C load client, side by side in one
# run: the same reference server (c_epoll_echo, or c_udp_echo with
# PROTO=udp, pinned to SERVER_CPU), each client pinned to CLIENT_CPU in
# turn, alternating ROUNDS times. Prints messages/s and client CPU time per
# message for each round, then the means and the ratios sockecho/reference.
# Builds what it needs first: the references (bench/build.sh, into
# BENCH_OUT, default target/bench-refs) and sockecho's release binary.
#
# Usage: scripts/bench-client.sh [CONNS] [SIZE] [SECONDS] [ROUNDS]
#        (default 100 64 3 3)
#   PROTO=udp     UDP flows; WINDOW (default 1) datagrams in flight per flow
#                 for both clients (udp_load's window, sockecho's
#                 --pipeline), and both count a datagram unanswered for
#                 200 ms as lost (udp_load's fixed deadline, sockecho's -W)
#   PORT=N        the reference server's port (default: a free one); a port
#                 in use is an error
#   SERVER_CPU=0  CLIENT_CPU=1   where server and clients are pinned
#   SOCKECHO=PATH a sockecho binary to measure; nothing is built for it
#   BENCH_OUT     the references' directory
#   NO_BUILD=1    build nothing; use what BENCH_OUT and target/release hold
# Example (smoke test): scripts/bench-client.sh 10 64 1 1
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"

conns=${1:-100}; size=${2:-64}; secs=${3:-3}; rounds=${4:-3}
for v in conns size secs rounds; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then bench_die "$v must be a positive integer, not '${!v}'"; fi
done
proto=${PROTO:-tcp}
window=${WINDOW:-1}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
bench_need taskset "util-linux"
bench_need timeout "coreutils"
limit=$((secs * 2 + 30))

case $proto in
  udp) bench_build_refs c_udp_echo udp_load ;;
  tcp) bench_build_refs c_epoll_echo echo_load ;;
  *) bench_die "PROTO must be tcp or udp, not '$proto'" ;;
esac
bench_build_sockecho
refs=$BENCH_OUT

if [ -n "${PORT:-}" ]; then bench_check_port "$PORT"; port=$PORT; else port=$(bench_free_ports 1); fi
bench_tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockecho-bench-client.XXXXXX")
tmp=$bench_tmp
if [ "$proto" = udp ]; then
  server=("$refs/c_udp_echo" "$port")
  endpoint=udp://127.0.0.1:$port
  ref=("$refs/udp_load" 127.0.0.1 "$port" "$conns" "$size" "$secs" "$window")
  shape=(--pipeline "$window" -W 200ms)
else
  server=("$refs/c_epoll_echo" "$port")
  endpoint=tcp://127.0.0.1:$port
  ref=("$refs/echo_load" 127.0.0.1 "$port" "$conns" "$size" "$secs")
  shape=()
fi
echo "starting ${server[*]} on CPU $server_cpu" >&2
taskset -c "$server_cpu" "${server[@]}" >"$tmp/server.log" 2>&1 &
spid=$!
bench_pids+=("$spid")
bench_wait_ready "${server[0]##*/}" "$spid" "$tmp/server.log" "$port" "$proto"
se=("$SOCKECHO" bench "$endpoint" -c "$conns" -s "$size" -d "${secs}s" "${shape[@]}" --json)
echo "clients on CPU $client_cpu: ${ref[*]}; ${se[*]}" >&2

# run NAME OUT COMMAND...: times COMMAND (user + system CPU s into OUT.time),
# fails loudly if it fails or the server has gone.
run() {
  local name=$1 out=$2 st=0
  shift 2
  TIMEFORMAT='%U %S'
  { time timeout -k 5 "$limit" taskset -c "$client_cpu" "$@" >"$out" 2>"$out.err"; } 2>"$out.time" || st=$?
  if [ "$st" -ne 0 ] || ! kill -0 "$spid" 2>/dev/null; then
    cat "$out" "$out.err" >&2
    kill -0 "$spid" 2>/dev/null || { bench_show_log "$tmp/server.log"; bench_die "the reference server exited"; }
    bench_die "$name exited with status $st (its output is above; 124: ran past $limit s)"
  fi
}
cpu() { awk '{ print $1 + $2 }' "$1"; }
printf '%-9s %10s %14s\n' client msgs/s cpu_us/msg
for ((r = 1; r <= rounds; r++)); do
  run "the reference client" "$tmp/ref.out" "${ref[@]}"
  m=$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' "$tmp/ref.out")
  if [ -z "$m" ] || [ "$m" = 0 ]; then bench_die "no msgs_per_s from the reference client: $(cat "$tmp/ref.out")"; fi
  c=$(awk -v c="$(cpu "$tmp/ref.out.time")" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')
  printf '%-9s %10.0f %14.3f\n' reference "$m" "$c" | tee -a "$tmp/all"
  run "sockecho bench" "$tmp/se.out" "${se[@]}"
  m=$(sed -n 's/.*"msgs_per_s":\([0-9.]*\).*/\1/p' "$tmp/se.out")
  if [ -z "$m" ] || [ "$m" = 0 ]; then bench_die "no msgs_per_s in sockecho bench's report: $(head -c 300 "$tmp/se.out")"; fi
  c=$(awk -v c="$(cpu "$tmp/se.out.time")" -v m="$m" -v s="$secs" 'BEGIN { print c * 1e6 / (m * s) }')
  printf '%-9s %10.0f %14.3f\n' sockecho "$m" "$c" | tee -a "$tmp/all"
done
awk '{ m[$1] += $2; c[$1] += $3; n[$1]++ }
  END {
    printf "%-9s %10.0f %14.3f  (mean of %d)\n", "reference", m["reference"] / n["reference"], c["reference"] / n["reference"], n["reference"]
    printf "%-9s %10.0f %14.3f  (mean of %d)\n", "sockecho", m["sockecho"] / n["sockecho"], c["sockecho"] / n["sockecho"], n["sockecho"]
    printf "ratio sockecho/reference: %.2f in msgs/s, %.2f in CPU per message\n",
      (m["sockecho"] / n["sockecho"]) / (m["reference"] / n["reference"]),
      (c["sockecho"] / n["sockecho"]) / (c["reference"] / n["reference"])
  }' "$tmp/all"
