#!/usr/bin/env bash
# Interleaved side-by-side comparison of echo servers: every server runs at
# once (each pinned to SERVER_CPU, idle while another is measured), and for
# each of ROUNDS rounds every scenario is driven against each server in turn
# by the neutral load client pinned to CLIENT_CPU. Drift of the machine's
# speed during the run then hits every server alike; the figure to quote is
# the median, over the rounds, of each round's ratio to the first server.
#
# Usage: [ROUNDS=5] bench/rounds.sh SECONDS 'base=command with {PORT}' 'other=...' ...
#   SECONDS   how long the load client drives each server in each scenario
#   commands  run through `bash -c "exec COMMAND"`, {PORT} replaced by the
#             server's port; the first server is the base of the ratios
# It builds nothing: run bench/build.sh first (scripts/rounds.sh builds the
# references and sockecho, then runs this).
#
# Environment:
#   ROUNDS      rounds (default 5); ROUNDS=1 is one side-by-side run
#   PROTO       tcp (default): echo_load, CONNS connections ping-ponging
#                 BYTES-byte messages; scenarios "1:64 100:64 1000:512 10:65536"
#               udp: udp_load, CONNS flows with UDP_WINDOW (default 4)
#                 datagrams in flight each; scenarios "1:64 32:64 32:1400"
#               churn: churn_load, a new TCP connection per message, CONNS in
#                 flight; scenarios "1:64 16:64"; the CPU figure is then per
#                 connection
#   SCENARIOS   CONNS:BYTES ... instead of PROTO's
#   BENCH_OUT   where bench/build.sh put the load clients
#               (default <repo>/target/bench-refs)
#   ECHO_LOAD   a load client to use instead of PROTO's
#   PORTS       the servers' ports, one per server in order (default: free
#               ports chosen here); a port in use is an error, as is a
#               server that exits or does not listen within 5 s
#   SERVER_CPU  CPU list the servers are pinned to (default 0)
#   CLIENT_CPU  CPU list the load client is pinned to (default 1)
#   IDLE_CONNS  N: after the rounds, each server's resident memory (its
#               process tree's VmRSS) before and while holding N idle
#               connections (hold_idle.py; TCP servers only)
#
# Server CPU time is measured per server: in a cgroup-v1 cpuacct group of
# its own where one can be made (which also counts exited children), else
# schedstat summed over its live process tree. Servers' output goes to a
# log each, shown when a server fails. A load client that fails (a wrong
# echoed byte, a connection the server closed), or a server that exits,
# stops the run with an error.
#
# Prints, on standard output, one line per round, scenario and server:
#   round R NAME  CONNS conns  BYTES B  <load client's line> server_cpu_us_per_msg=X
# then one per scenario and server other than the base:
#   ratio CONNSxBYTES NAME cpu_per_msg median=R min=R max=R rounds=K  msgs_per_s median=R
# (server CPU per message, NAME / base: below 1 is better; messages per
# second, NAME / base: above 1 is better).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$#" -ge 2 ] || bench_die "usage: [ROUNDS=5] $bench_prog SECONDS 'base=command with {PORT}' 'other=command' ..."
secs=$1; shift
[[ $secs =~ ^[0-9]+([.][0-9]+)?$ ]] || bench_die "SECONDS must be a number, not '$secs'"
rounds=${ROUNDS:-5}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || bench_die "ROUNDS must be a positive integer, not '$rounds'"
proto=${PROTO:-tcp}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
extra=()
case $proto in
  udp)
    load=${ECHO_LOAD:-$BENCH_OUT/udp_load}
    scenarios=${SCENARIOS:-"1:64 32:64 32:1400"}; extra=("${UDP_WINDOW:-4}") ;;
  churn)
    load=${ECHO_LOAD:-$BENCH_OUT/churn_load}
    scenarios=${SCENARIOS:-"1:64 16:64"} ;;
  tcp)
    load=${ECHO_LOAD:-$BENCH_OUT/echo_load}
    scenarios=${SCENARIOS:-"1:64 100:64 1000:512 10:65536"} ;;
  *) bench_die "PROTO must be tcp, udp or churn, not '$proto'" ;;
esac
for sc in $scenarios; do
  [[ $sc =~ ^[0-9]+:[0-9]+$ ]] || bench_die "scenario '$sc' is not CONNS:BYTES"
done
[ -x "$load" ] || bench_die "no load client at $load: run bench/build.sh (BENCH_OUT=$BENCH_OUT)"
bench_need taskset "util-linux"
bench_need pgrep "procps"
bench_need timeout "coreutils"
if [ -n "${IDLE_CONNS:-}" ]; then
  [[ $IDLE_CONNS =~ ^[1-9][0-9]*$ ]] || bench_die "IDLE_CONNS must be a positive integer"
  bench_need python3 "for hold_idle.py"
  # Servers and hold_idle.py need a descriptor each per connection.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE_CONNS + 64)) ] ||
    echo "warning: $bench_prog: open-file limit $(ulimit -n) is below IDLE_CONNS=$IDLE_CONNS" >&2
fi
# A load client that runs this much past its SECONDS has hung.
limit=$(awk -v s="$secs" 'BEGIN { printf "%d", s * 2 + 30 }')

# CPU time (ns) of a server's process tree: its own cpuacct group where one
# could be made, else schedstat summed over the live tree.
cpu_ns() {
  local pid=$1 cg=$2 total=0 p t v
  if [ -n "$cg" ]; then cat "$cg/cpuacct.usage"; return; fi
  for p in $(bench_descendants "$pid"); do
    for t in /proc/"$p"/task/*/schedstat; do
      v=$(cut -d' ' -f1 "$t" 2>/dev/null) && total=$((total + ${v:-0}))
    done
  done
  echo "$total"
}
# Resident memory (KiB) of a process tree.
rss_kib() {
  local total=0 p v
  for p in $(bench_descendants "$1"); do
    v=$(awk '/^VmRSS/ { print $2 }' /proc/"$p"/status 2>/dev/null) && total=$((total + ${v:-0}))
  done
  echo "$total"
}

names=(); pids=(); ports=(); cgs=(); logs=()
bench_cleanup_hook() {
  local i p
  for i in "${!pids[@]}"; do
    bench_kill_tree "${pids[$i]}"
    if [ -n "${cgs[$i]}" ]; then
      while read -r p; do kill "$p" 2>/dev/null; done <"${cgs[$i]}/cgroup.procs" 2>/dev/null
      sleep 0.2; rmdir "${cgs[$i]}" 2>/dev/null
    fi
  done
}
bench_tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockecho-rounds.XXXXXX")
port_str=$(bench_ports "$#")
read -r -a port_list <<<"$port_str"
i=0
for spec in "$@"; do
  [[ $spec == *=* ]] || bench_die "'$spec' is not NAME=COMMAND"
  name=${spec%%=*}; cmd=${spec#*=}; port=${port_list[$i]}; i=$((i + 1))
  [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || bench_die "server name '$name': letters, digits, . _ - only"
  for n in "${names[@]}"; do [ "$n" != "$name" ] || bench_die "two servers named $name"; done
  [[ $cmd == *'{PORT}'* ]] || bench_die "the command of $name has no {PORT}: $cmd"
  cmd=${cmd//\{PORT\}/$port}
  log="$bench_tmp/$name.log"
  echo "starting $name on port $port (CPU $server_cpu): $cmd" >&2
  taskset -c "$server_cpu" bash -c "exec $cmd" >"$log" 2>&1 &
  pid=$!
  cg=""
  if mkdir "/sys/fs/cgroup/cpuacct/echo-rounds-$$-$name" 2>/dev/null; then
    cg="/sys/fs/cgroup/cpuacct/echo-rounds-$$-$name"; echo "$pid" >"$cg/cgroup.procs"
  fi
  names+=("$name"); pids+=("$pid"); ports+=("$port"); cgs+=("$cg"); logs+=("$log")
  wproto=tcp; [ "$proto" = udp ] && wproto=udp
  bench_wait_ready "$name" "$pid" "$log" "$port" "$wproto"
done
how="schedstat of each process tree"
if [ -n "${cgs[0]}" ]; then how="cpuacct cgroups"; fi
echo "servers up; server CPU from $how; load client $load on CPU $client_cpu," \
  "$rounds round(s) of $scenarios, $secs s each" >&2

alive() { # index
  kill -0 "${pids[$1]}" 2>/dev/null && return 0
  bench_show_log "${logs[$1]}"
  bench_die "server ${names[$1]} exited during the run"
}

results="$bench_tmp/results"
: >"$results"
for ((r = 1; r <= rounds; r++)); do
  for sc in $scenarios; do
    conns=${sc%%:*}; size=${sc#*:}
    for i in "${!names[@]}"; do
      alive "$i"
      before=$(cpu_ns "${pids[$i]}" "${cgs[$i]}")
      if ! out=$(timeout -k 5 "$limit" taskset -c "$client_cpu" "$load" 127.0.0.1 "${ports[$i]}" "$conns" "$size" "$secs" "${extra[@]}" 2>&1); then
        echo "$out" >&2
        alive "$i"
        bench_die "round $r, ${conns}x$size, server ${names[$i]}: the load client failed (its output is above; 124: it ran past ${limit} s)"
      fi
      out=$(tail -n 1 <<<"$out")
      after=$(cpu_ns "${pids[$i]}" "${cgs[$i]}")
      msgs=$(sed -n 's/.*\(msgs\|conns\)_per_s=\([0-9]*\).*/\2/p' <<<"$out")
      [ -n "$msgs" ] || bench_die "round $r, ${conns}x$size, ${names[$i]}: no msgs_per_s in the load client's line: $out"
      per=$(awk -v c=$((after - before)) -v m="$msgs" -v s="$secs" 'BEGIN { if (m > 0) printf "%.3f", c / (m * s) / 1000; else print "nan" }')
      printf 'round %d %-10s %5s conns %6s B  %s server_cpu_us_per_msg=%s\n' "$r" "${names[$i]}" "$conns" "$size" "$out" "$per"
      echo "$r ${conns}x$size ${names[$i]} $per $msgs" >>"$results"
    done
  done
done

# Per round, each server against the first (the base); then the median.
if [ "${#names[@]}" -gt 1 ]; then
  awk -v base="${names[0]}" -v order="${names[*]}" '
    { cpu[$1, $2, $3] = $4; rate[$1, $2, $3] = $5; sc[$2] = 1; nm[$3] = 1; rd[$1] = 1; if (!($2 in ord)) { ord[$2] = ++n; scs[n] = $2 } }
    function median(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    END {
      ns = split(order, names, " ")
      for (s = 1; s <= n; s++) for (x = 1; x <= ns; x++) { name = names[x]; if (name == base) continue
        k = 0; q = 0; delete rc; delete rr
        for (r in rd) {
          b = cpu[r, scs[s], base]; o = cpu[r, scs[s], name]
          if (b > 0 && o > 0 && b != "nan" && o != "nan") rc[++k] = o / b
          b = rate[r, scs[s], base]; o = rate[r, scs[s], name]
          if (b > 0) rr[++q] = o / b }
        if (k == 0) { printf "ratio %s %s cpu_per_msg=n/a\n", scs[s], name; continue }
        mc = median(rc, k); lo = rc[1]; hi = rc[k]
        mr = median(rr, q)
        printf "ratio %s %s cpu_per_msg median=%.2f min=%.2f max=%.2f rounds=%d  msgs_per_s median=%.2f\n", scs[s], name, mc, lo, hi, k, mr }
    }' "$results"
fi

# Idle memory: one server at a time holds IDLE_CONNS connections.
if [ -n "${IDLE_CONNS:-}" ]; then
  if [ "$proto" = udp ]; then
    echo "IDLE_CONNS: UDP servers hold no connections; skipped" >&2
  else
    for i in "${!names[@]}"; do
      alive "$i"
      base_kib=$(rss_kib "${pids[$i]}")
      ready="$bench_tmp/idle.out"
      : >"$ready"
      python3 "$bench_dir/hold_idle.py" 127.0.0.1 "${ports[$i]}" "$IDLE_CONNS" 60 >"$ready" 2>&1 &
      hp=$!; bench_pids=("$hp")
      for ((w = 0; w < 600; w++)); do
        grep -q ready "$ready" && break
        kill -0 "$hp" 2>/dev/null || break
        sleep 0.1
      done
      if ! grep -q ready "$ready"; then
        cat "$ready" >&2
        bench_die "${names[$i]}: hold_idle.py did not establish $IDLE_CONNS connections (its output is above)"
      fi
      sleep 0.5
      held_kib=$(rss_kib "${pids[$i]}")
      printf 'idle %-10s %5s conns: server RSS %s KiB -> %s KiB, %s KiB per connection\n' "${names[$i]}" "$IDLE_CONNS" \
        "$base_kib" "$held_kib" "$(awk -v a="$base_kib" -v b="$held_kib" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (b - a) / n }')"
      bench_kill_tree "$hp"; bench_pids=()
      alive "$i"
    done
  fi
fi
