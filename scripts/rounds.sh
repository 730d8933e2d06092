#!/usr/bin/env bash
# sockecho beside the reference servers, in interleaved rounds, from a
# clone: builds the references (bench/build.sh, into BENCH_OUT) and
# sockecho's release binary, then runs bench/rounds.sh. Every server runs
# at once, pinned to CPU 0; each round drives every scenario against each
# server in turn with the neutral C load client on CPU 1; the end lines
# give, per scenario and server, the median over the rounds of each
# round's ratio to the first server (bench/README.md, bench/rounds.sh).
#
# Usage: scripts/rounds.sh [SECONDS] [SERVER...]
#   SECONDS  per scenario, server and round (default 2)
#   SERVER   a name: c-epoll c-splice tokio go sockecho sockecho-epoll
#            sockecho-buffers c-udp c-udp-mmsg (c-splice: c_epoll_echo
#            splicing; sockecho-buffers: large messages not spliced;
#            sockecho and sockecho-epoll serve udp:// when PROTO=udp), or
#            'name=command with {PORT}', where {SOCKECHO} is the sockecho
#            built here and {REFS} the references' directory. The first is
#            the base of the ratios. Default, by PROTO:
#              tcp, churn  c-epoll tokio sockecho sockecho-epoll
#              udp         c-udp c-udp-mmsg sockecho
#
# Environment (bench/rounds.sh's header has the details):
#   ROUNDS=5        rounds
#   PROTO=tcp       tcp | udp | churn (a new connection per message)
#   SCENARIOS       CONNS:BYTES ...; default tcp "1:64 100:64 1000:512 10:65536",
#                   udp "1:64 32:64 32:1400", churn "1:64 16:64"
#   UDP_WINDOW=4    datagrams in flight per UDP flow
#   PORTS           one port per server, in order (default: free ports);
#                   a port in use is an error
#   SERVER_CPU=0    CPU list for the servers
#   CLIENT_CPU=1    CPU list for the load client
#   IDLE_CONNS=N    after the rounds, each server's resident memory while
#                   it holds N idle connections
#   BENCH_OUT       the references' directory (default target/bench-refs)
#   SOCKECHO=PATH   use this sockecho binary; nothing is built for it
#   NO_BUILD=1      build nothing: use BENCH_OUT's programs and
#                   target/release/sockecho as they are (a machine without
#                   compilers, binaries brought from elsewhere)
#
# Examples:
#   scripts/rounds.sh                      # TCP, 5 rounds of 2 s a scenario
#   PROTO=udp scripts/rounds.sh
#   PROTO=churn scripts/rounds.sh
#   ROUNDS=1 SCENARIOS=1:64 scripts/rounds.sh 1 c-epoll sockecho   # smoke test
#   scripts/rounds.sh 2 c-epoll \
#     'before=/tmp/sockecho-before serve -q tcp://127.0.0.1:{PORT}' sockecho
# Results go to standard output; what is built and started, to standard
# error. To keep them: scripts/rounds.sh 2>&1 | tee rounds.txt
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"

secs=${1:-2}
[ "$#" -eq 0 ] || shift
proto=${PROTO:-tcp}
if [ "$#" -eq 0 ]; then
  case $proto in
    udp) set -- c-udp c-udp-mmsg sockecho ;;
    tcp | churn) set -- c-epoll tokio sockecho sockecho-epoll ;;
    *) bench_die "PROTO must be tcp, udp or churn, not '$proto'" ;;
  esac
fi

bench_build_refs # all of them: go_echo only where go is installed
bench_build_sockecho

specs=()
for s in "$@"; do
  if [[ $s != *=* ]]; then
    case $s in
      tokio) [ -x "$BENCH_OUT/tokio_echo" ] || bench_die "$BENCH_OUT/tokio_echo is missing (bench/build.sh tokio_echo)" ;;
      go) [ -x "$BENCH_OUT/go_echo" ] || bench_die "$BENCH_OUT/go_echo is missing: bench/build.sh builds it where go is installed" ;;
    esac
    s=$(bench_server_spec "$s" "$proto")
  fi
  s=${s//\{SOCKECHO\}/$(printf %q "$SOCKECHO")}
  s=${s//\{REFS\}/$(printf %q "$BENCH_OUT")}
  specs+=("$s")
done
echo "running bench/rounds.sh: ROUNDS=${ROUNDS:-5} PROTO=$proto, $secs s a scenario; servers: ${specs[*]}" >&2
exec "$bench_dir/rounds.sh" "$secs" "${specs[@]}"
