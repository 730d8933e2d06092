#!/usr/bin/env bash
# `sockecho bench` of two builds side by side (say, before and after a
# change), in interleaved rounds as bench/rounds.sh does for servers: the C
# reference servers (c_epoll_echo, and c_udp_echo batching 32) run pinned
# to SERVER_CPU, each client pinned to CLIENT_CPU, OLD then NEW for every
# scenario of every round. Prints per scenario the median over rounds of
# NEW/OLD messages per second and of client CPU per message (below 1 is
# better). Builds the two reference servers first (bench/build.sh, into
# BENCH_OUT, default target/bench-refs); a NEW (or OLD) of
# target/release/sockecho is rebuilt first (cargo build --release).
#
# Usage: scripts/client-rounds.sh OLD_BINARY [NEW_BINARY] [ROUNDS] [SECONDS]
#        (NEW default target/release/sockecho, ROUNDS 5, SECONDS 2)
#   SCENARIOS='tcp:100:64 udp:32:64 ...'  proto:connections:bytes, each on
#     both drivers (io_uring, --epoll); default 'tcp:100:64 udp:32:64 udp:1:64'
#   TCP_PORT, UDP_PORT   the reference servers' ports (default: free ones);
#     a port in use is an error
#   SERVER_CPU=0  CLIENT_CPU=1
#   BENCH_OUT     the references' directory
#   NO_BUILD=1    build nothing; use what BENCH_OUT and target/release hold
# An OLD binary from an earlier commit, for instance:
#   git worktree add /tmp/sockecho-old HEAD~1
#   cargo build --release --locked --manifest-path /tmp/sockecho-old/Cargo.toml
#   scripts/client-rounds.sh /tmp/sockecho-old/target/release/sockecho
# Smoke test: SCENARIOS=tcp:10:64 scripts/client-rounds.sh target/release/sockecho target/release/sockecho 1 1
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"

[ "$#" -ge 1 ] || bench_die "usage: $bench_prog OLD_BINARY [NEW_BINARY] [ROUNDS] [SECONDS]"
default_bin=${CARGO_TARGET_DIR:-$bench_repo/target}/release/sockecho
old=$1 new=${2:-$default_bin} rounds=${3:-5} secs=${4:-2}
for v in rounds secs; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then bench_die "$v must be a positive integer, not '${!v}'"; fi
done
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
bench_need taskset "util-linux"
bench_need timeout "coreutils"
bench_need python3
limit=$((secs * 2 + 30))

bench_build_refs c_epoll_echo c_udp_echo
refs=$BENCH_OUT
# The default binary (or one named by its path) is built here, so that it
# is the source in the tree.
for b in "$old" "$new"; do
  if [ "$(realpath -m "$b")" = "$(realpath -m "$default_bin")" ]; then
    bench_build_sockecho
    break
  fi
done
for b in "$old" "$new"; do
  [ -x "$b" ] || bench_die "$b is not an executable file"
done

if [ -n "${TCP_PORT:-}" ]; then bench_check_port "$TCP_PORT"; fi
if [ -n "${UDP_PORT:-}" ]; then bench_check_port "$UDP_PORT"; fi
if [ -z "${TCP_PORT:-}" ] || [ -z "${UDP_PORT:-}" ]; then
  read -r p1 p2 <<<"$(bench_free_ports 2)"
  TCP_PORT=${TCP_PORT:-$p1}
  UDP_PORT=${UDP_PORT:-$p2}
fi
[ "$TCP_PORT" != "$UDP_PORT" ] || bench_die "TCP_PORT and UDP_PORT are both $TCP_PORT"
bench_tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockecho-client-rounds.XXXXXX")
echo "starting c_epoll_echo on $TCP_PORT and c_udp_echo (batch 32) on $UDP_PORT, CPU $server_cpu" >&2
taskset -c "$server_cpu" "$refs/c_epoll_echo" "$TCP_PORT" >"$bench_tmp/tcp.log" 2>&1 &
tcp_pid=$!; bench_pids+=("$tcp_pid")
taskset -c "$server_cpu" "$refs/c_udp_echo" "$UDP_PORT" 32 >"$bench_tmp/udp.log" 2>&1 &
udp_pid=$!; bench_pids+=("$udp_pid")
bench_wait_ready c_epoll_echo "$tcp_pid" "$bench_tmp/tcp.log" "$TCP_PORT" tcp
bench_wait_ready c_udp_echo "$udp_pid" "$bench_tmp/udp.log" "$UDP_PORT" udp

scenarios=${SCENARIOS:-tcp:100:64 udp:32:64 udp:1:64}
for sc in $scenarios; do
  [[ $sc =~ ^(tcp|udp):[0-9]+:[0-9]+$ ]] || bench_die "scenario '$sc' is not tcp|udp:CONNS:BYTES"
done
results="$bench_tmp/results"
: >"$results"
TIMEFORMAT='%U %S'
for ((r = 1; r <= rounds; r++)); do
  for sc in $scenarios; do
    IFS=: read -r proto conns size <<<"$sc"
    port=$TCP_PORT; [ "$proto" = udp ] && port=$UDP_PORT
    for driver in "" --epoll; do
      for which in old new; do
        bin=$old; [ "$which" = new ] && bin=$new
        args=("$proto://127.0.0.1:$port" -c "$conns" -s "$size" -d "${secs}s" --threads 1 --json ${driver:+"$driver"})
        st=0
        { time timeout -k 5 "$limit" taskset -c "$client_cpu" "$bin" bench "${args[@]}" \
            >"$bench_tmp/out" 2>"$bench_tmp/err"; } 2>"$bench_tmp/time" || st=$?
        if [ "$st" -ne 0 ]; then
          cat "$bench_tmp/out" "$bench_tmp/err" >&2
          bench_die "round $r, $sc${driver:+ $driver}: $bin bench ${args[*]} exited with status $st (its output is above)"
        fi
        if ! kill -0 "$tcp_pid" 2>/dev/null || ! kill -0 "$udp_pid" 2>/dev/null; then
          bench_die "a reference server exited"
        fi
        msgs=$(grep -o '"msgs_per_s":[0-9.]*' "$bench_tmp/out" | head -n 1 | cut -d: -f2 || true)
        [ -n "$msgs" ] || bench_die "round $r, $sc: no msgs_per_s in the report of $bin"
        cpu=$(awk '{ print $1 + $2 }' "$bench_tmp/time")
        echo "round $r $sc${driver:+ $driver} $which msgs_per_s=$msgs client_cpu_s=$cpu"
        echo "$r|$sc${driver:+ $driver}|$which|$msgs|$cpu" >>"$results"
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
