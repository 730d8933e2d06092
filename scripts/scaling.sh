#!/usr/bin/env bash
# Multi-core scaling of `sockecho serve --threads N` beside the references.
#
# For each server and each N in THREADS, the server runs pinned to CPUs
# 0..N-1 and CLIENTS neutral load clients (echo_load: one thread each, every
# echoed byte checked) run pinned one per CPU from CLIENT_CPU0 up, each with
# CONNS connections ping-ponging SIZE-byte messages for SECS seconds. One
# line per (server, N): the clients' summed msgs/s, the ratio to the same
# server at N=1, the server's CPU time over the run (all its threads, from
# /proc/PID/task/*/schedstat) as cores busy and as microseconds per message,
# the busiest and least busy of its N busiest threads, the worst client
# p99, the clients' own CPU, accept-queue overflows and the measured window.
#
# The layout follows the machine: half the CPUs for the server, half for
# the clients. On 16 CPUs: THREADS "1 2 4 8", the server on CPUs 0-7, 8
# clients on CPUs 8-15; on 2 CPUs: THREADS 1, the server on CPU 0, one
# client on CPU 1 (which shows one core's figures, not scaling).
#
# What it runs. By default it builds, before measuring, what it needs:
# echo_load, c_epoll_echo and tokio_echo (bench/build.sh, into BENCH_OUT,
# default target/bench-refs) and sockecho's release binary (cargo build
# --release; SOCKECHO=PATH measures that binary instead). With BIN=DIR it
# builds nothing and runs DIR/sockecho and DIR/echo_load (both needed) and,
# if present, DIR/tokio_echo and DIR/c_epoll_echo: for a machine without
# compilers (a lent VM, say), with static binaries built on this one:
#   STATIC=1 BENCH_OUT=$PWD/target/scaling-bin bench/build.sh echo_load c_epoll_echo tokio_echo
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
#     --target x86_64-unknown-linux-gnu --target-dir target/static
#   cp target/static/x86_64-unknown-linux-gnu/release/sockecho target/scaling-bin/
#   # copy scripts/, bench/lib.sh and target/scaling-bin/ there, then there:
#   BIN=target/scaling-bin scripts/scaling.sh
#
# Results go to standard output and nowhere else (builds and progress to
# standard error); keep them with
#   scripts/scaling.sh | tee scaling-$(date +%F).txt
# docs/scaling.md ("Multi-core scaling on one machine") says how to read them.
#
# Usage: scripts/scaling.sh                       (the layout above)
#        THREADS=1 SECS=1 SERVERS=sockecho scripts/scaling.sh       (smoke test)
# Environment: SECS (default 5) THREADS CLIENTS CLIENT_CPU0 CONNS (default
#              50) SIZE (default 64) REPEAT (default 1)
#              SERVER_CPUS CLIENT_CPUS (comma-separated lists)
#              SERVERS (default "sockecho sockecho-epoll tokio c-epoll")
#              PORT: the servers' port (default: sockecho and tokio_echo
#              take one from the kernel, c_epoll_echo a free one); a port
#              in use is an error
#              BIN, SOCKECHO, BENCH_OUT: above; NO_BUILD=1 builds nothing
#              and runs BENCH_OUT's programs and target/release/sockecho
# Fails with an `error:` line if a server does not start or a client fails.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"

ncpu=$(getconf _NPROCESSORS_ONLN)
half=$((ncpu / 2))
[ "$half" -ge 1 ] || bench_die "needs at least 2 CPUs (server and clients apart); $ncpu online"
default_threads=""
for ((n = 1; n <= half; n *= 2)); do default_threads+="${default_threads:+ }$n"; done

secs=${SECS:-5}
threads=${THREADS:-$default_threads}
clients=${CLIENTS:-$half}
client_cpu0=${CLIENT_CPU0:-$half}
# Explicit CPU lists (comma-separated) override the layout: the server with
# N threads gets the first N of SERVER_CPUS, client i the i-th of CLIENT_CPUS.
IFS=, read -r -a server_cpus <<<"${SERVER_CPUS:-$(seq -s, 0 $((client_cpu0 - 1)))}"
IFS=, read -r -a client_cpus <<<"${CLIENT_CPUS:-$(seq -s, "$client_cpu0" $((client_cpu0 + clients - 1)))}"
conns=${CONNS:-50}
size=${SIZE:-64}
repeat=${REPEAT:-1}
servers=${SERVERS:-"sockecho sockecho-epoll tokio c-epoll"}
for name in $servers; do
  case $name in sockecho | sockecho-epoll | tokio | c-epoll) ;; *) bench_die "unknown server '$name' in SERVERS (sockecho sockecho-epoll tokio c-epoll)" ;; esac
done
if [ -n "${PORT:-}" ]; then bench_check_port "$PORT"; fi

bench_tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockecho-scaling.XXXXXX")
work=$bench_tmp
pids=()
bench_cleanup_hook() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

die() { bench_die "$@"; }
# pin CPULIST (comma-separated) COMMAND...: exec COMMAND on those CPUs (same
# PID); taskset, or python3 where util-linux is missing.
if command -v taskset >/dev/null; then
  pin() { local cpus=$1; shift; exec taskset -c "$cpus" "$@"; }
elif command -v python3 >/dev/null; then
  pin() {
    local cpus=$1; shift
    exec python3 -c 'import os, sys
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
os.execvp(sys.argv[2], sys.argv[2:])' "$cpus" "$@"
  }
else
  die "need taskset (util-linux) or python3 to pin processes"
fi

# --- what it runs -------------------------------------------------------
if [ -n "${BIN:-}" ]; then
  se=$BIN/sockecho
  refs=$BIN
  echo "BIN=$BIN: running the binaries there, building nothing" >&2
else
  progs=(echo_load)
  [[ " $servers " == *" tokio "* ]] && progs+=(tokio_echo)
  [[ " $servers " == *" c-epoll "* ]] && progs+=(c_epoll_echo)
  bench_build_refs "${progs[@]}"
  refs=$BENCH_OUT
  if [[ " $servers " == *" sockecho"* ]]; then
    bench_build_sockecho
    se=$SOCKECHO
  else
    se=""
  fi
fi
if [[ " $servers " == *" sockecho"* ]]; then
  [ -x "$se" ] || die "$se missing"
fi
[ -x "$refs/echo_load" ] || die "$refs/echo_load missing"

max_n=0
for n in $threads; do [ "$n" -gt "$max_n" ] && max_n=$n; done
if [ "$ncpu" -lt 16 ]; then
  echo "NOTE: only $ncpu CPUs online (the demonstration layout wants 16: server on 0-7," \
       "clients on 8-15); these figures show at most $half server core(s)."
fi
[ "${#client_cpus[@]}" -ge "$clients" ] || die "CLIENT_CPUS names fewer than $clients CPUs"
[ "${#server_cpus[@]}" -ge "$max_n" ] ||
  die "N=$max_n needs $max_n server CPUs, only ${#server_cpus[@]} are free of clients (set CLIENTS / CLIENT_CPU0 / SERVER_CPUS)"
for c in "${server_cpus[@]:0:$max_n}" "${client_cpus[@]:0:$clients}"; do
  [ "$c" -lt "$ncpu" ] || die "CPU $c is not online ($ncpu CPUs; set CLIENTS / CLIENT_CPU0)"
done
overlap=$(printf '%s\n' "${server_cpus[@]:0:$max_n}" "${client_cpus[@]:0:$clients}" | sort | uniq -d)
[ -z "$overlap" ] || die "server and client CPUs overlap: $overlap"
server_cpu_list() { local IFS=,; echo "${server_cpus[*]:0:$1}"; }

# --- the machine --------------------------------------------------------
echo "== machine"
echo "kernel $(uname -r), $ncpu CPUs online, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
sib=$(cat /sys/devices/system/cpu/cpu*/topology/thread_siblings_list 2>/dev/null | sort -un | tr '\n' ' ' || true)
echo "SMT sibling groups: ${sib:-unknown}"
echo "NUMA nodes: $(find /sys/devices/system/node -maxdepth 1 -name 'node[0-9]*' 2>/dev/null | wc -l)"
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
  echo "kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled)"
fi
echo "params: secs=$secs clients=$clients (CPUs $(IFS=,; echo "${client_cpus[*]:0:$clients}"))" \
     "server CPUs: first N of $(IFS=,; echo "${server_cpus[*]}")" \
     "conns/client=$conns size=$size threads='$threads' repeat=$repeat"

# --- which engine serves TCP here -----------------------------------------
# The io_uring engine logs `serving TCP engine="io_uring" threads=N` at -v;
# the epoll engine (tokio's reactor) logs nothing of the kind.
engine_probe() { # label, extra args...
  local label=$1; shift
  "$se" -v serve -q --threads 2 "$@" tcp://127.0.0.1:0 >"$work/probe.out" 2>"$work/probe.err" &
  local p=$!; pids+=("$p")
  for _ in $(seq 50); do grep -q 'listen ok' "$work/probe.out" 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  pids=()
  local line
  line=$(grep -h 'engine' "$work/probe.err" | head -1 || true)
  echo "$label: ${line:-no engine line (epoll engine: tokio reactor)}"
}
if [ -n "$se" ]; then
  echo "== engine"
  engine_probe "sockecho -v serve --threads 2"
  engine_probe "sockecho -v serve --threads 2 --epoll" --epoll
fi

# --- measuring ----------------------------------------------------------
# Per-thread CPU time (ns) of a process: "tid ns" lines.
task_ns() {
  local t v
  for t in /proc/"$1"/task/*; do
    v=$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) || continue
    echo "${t##*/} ${v:-0}"
  done
}

# Starts server $1 on CPUs 0..$2-1; sets spid and sport.
start_server() {
  local name=$1 n=$2 cpus out="$work/server.out" port=${PORT:-0}
  cpus=$(server_cpu_list "$2")
  : >"$out"
  if [ "$port" != 0 ]; then
    bench_check_port "$port"
  elif [ "$name" = c-epoll ]; then
    port=$(bench_free_ports 1) # it cannot take one from the kernel
  fi
  case $name in
    sockecho) (pin "$cpus" "$se" serve -q --threads "$n" "tcp://127.0.0.1:$port") >"$out" 2>&1 & ;;
    sockecho-epoll) (pin "$cpus" "$se" serve -q --epoll --threads "$n" "tcp://127.0.0.1:$port") >"$out" 2>&1 & ;;
    tokio) (pin "$cpus" "$refs/tokio_echo" "127.0.0.1:$port") >"$out" 2>&1 & ;;
    c-epoll) (pin "$cpus" "$refs/c_epoll_echo" "$port") >"$out" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  spid=$!; pids+=("$spid")
  for _ in $(seq 100); do
    grep -q 'listen ok' "$out" && break
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.05
  done
  sport=$(sed -n 's/^listen ok .*:\([0-9][0-9]*\)$/\1/p' "$out" | head -1)
  if [ -z "$sport" ] || ! kill -0 "$spid" 2>/dev/null; then
    bench_show_log "$out"
    die "$name (N=$n) did not start: no 'listen ok' within 5 s, or it exited (port ${PORT:-$port} taken?)"
  fi
}

stop_server() {
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

# CPU seconds (user+sys) of this shell's waited-for children, from `times`.
children_cpu() { # sets cl: must run in this shell, not a $(...) subshell
  times >"$work/times"
  cl=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }; print t }' "$work/times")
}
# The kernel's count of connections dropped because an accept queue was full.
listen_overflows() {
  awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' \
    /proc/net/netstat 2>/dev/null || echo 0
}
echo "net.core.somaxconn=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo ?)"
echo "columns: msgs/s summed over clients; xN=1 the ratio to the same server at N=1;" \
     "cores = server CPU time / wall time; us/msg = server CPU per message;" \
     "thr = busiest and N-th busiest server thread, in cores; cl_cores = the clients' CPU" \
     "(of $clients); ovf = accept-queue overflows; wall = the measured window in s"
declare -A base
hdr() {
  printf '%-15s %2s %10s %6s %6s %7s %11s %8s %8s %4s %4s %5s\n' \
    server N msgs/s xN=1 cores us/msg thr_max-min p99max_us cl_cores bad ovf wall
}
hdr
run_point() { # server, N
  local name=$1 n=$2 i c cpids=() rc=0
  start_server "$name" "$n"
  local t0 t1 cl cl0 cl1 ovf0 ovf1
  ovf0=$(listen_overflows); children_cpu; cl0=$cl
  t0=$EPOCHREALTIME
  task_ns "$spid" >"$work/before"
  for ((i = 0; i < clients; i++)); do
    c=${client_cpus[$i]}
    (pin "$c" "$refs/echo_load" 127.0.0.1 "$sport" "$conns" "$size" "$secs") >"$work/load.$i" 2>&1 &
    cpids+=($!); pids+=($!)
  done
  for c in "${cpids[@]}"; do wait "$c" || rc=$?; done
  task_ns "$spid" >"$work/after"
  t1=$EPOCHREALTIME
  children_cpu; cl1=$cl; ovf1=$(listen_overflows)
  stop_server
  pids=() # all ended: nothing left for cleanup to kill
  # Sum the clients; join per-thread CPU before/after.
  local msgs p99 bad
  read -r msgs p99 bad < <(cat "$work"/load.* | awk '
    /msgs_per_s=/ { for (i = 1; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == "msgs_per_s") m += kv[2];
      if (kv[1] == "p99_us" && kv[2] > p) p = kv[2];
      if (kv[1] == "bad") b += kv[2] } ; ok++ }
    END { printf "%d %s %d\n", m, (p == "" ? 0 : p), b + 0 }')
  local good
  good=$(cat "$work"/load.* | grep -c 'msgs_per_s=' || true)
  if [ "$good" -ne "$clients" ] || [ "$rc" -ne 0 ]; then
    cat "$work"/load.* | grep -v 'msgs_per_s=' | head -5 >&2 || true
    die "$name N=$n: $good of $clients clients reported, exit status $rc (a client's own output is above)"
  fi
  local stats
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  stats=$(awk -v secs="$secs" -v wall="$wall" -v msgs="$msgs" -v n="$n" '
    NR == FNR { b[$1] = $2; next }
    { d = $2 - b[$1]; tot += d; ds[++k] = d }
    END {
      # the n busiest threads: max and min share of a core
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (ds[j] > ds[i]) { t = ds[i]; ds[i] = ds[j]; ds[j] = t }
      mn = (k >= n ? ds[n] : 0)
      printf "%.2f %s %.2f-%.2f\n", tot / 1e9 / wall,
        (msgs > 0 ? sprintf("%.2f", tot / (msgs * secs) / 1000) : "n/a"),
        ds[1] / 1e9 / wall, mn / 1e9 / wall
    }' "$work/before" "$work/after")
  local cores per spread ratio
  read -r cores per spread <<<"$stats"
  if [ "$n" -eq 1 ]; then base[$name]=$msgs; fi
  ratio=$(awk -v m="$msgs" -v b="${base[$name]:-0}" 'BEGIN { if (b > 0) printf "%.2f", m / b; else print "-" }')
  local clc
  clc=$(awk -v a="$cl0" -v b="$cl1" -v w="$wall" 'BEGIN { printf "%.2f", (b - a) / w }')
  printf '%-15s %2s %10s %6s %6s %7s %11s %8s %8s %4s %4s %5s\n' \
    "$name" "$n" "$msgs" "$ratio" "$cores" "$per" "$spread" "$p99" "$clc" "$bad" "$((ovf1 - ovf0))" "$wall"
}

for ((r = 1; r <= repeat; r++)); do
  if [ "$repeat" -gt 1 ]; then echo "== round $r"; fi
  for name in $servers; do
    case $name in
      tokio) [ -x "$refs/tokio_echo" ] || { echo "skip tokio: $refs/tokio_echo missing"; continue; } ;;
      c-epoll) [ -x "$refs/c_epoll_echo" ] || { echo "skip c-epoll: $refs/c_epoll_echo missing"; continue; } ;;
    esac
    for n in $threads; do
      # c_epoll_echo is one thread: the one-core baseline only.
      [ "$name" = c-epoll ] && [ "$n" -ne 1 ] && continue
      run_point "$name" "$n"
    done
  done
done
