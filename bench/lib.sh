# shellcheck shell=bash
# Shell helpers shared by bench/*.sh and scripts/*.sh; source it, do not run it.
#
# Sourcing it turns on strict mode (set -Eeuo pipefail) and an ERR trap
# that names the failing file, line and command, so that no script stops
# without a word. It also gives:
#   bench_die MSG...          print `error: SCRIPT: MSG` and exit 1
#   bench_need CMD [HINT]     fail unless CMD is installed
#   bench_free_ports N        N distinct free ports (TCP and UDP, 127.0.0.1)
#   bench_check_port PORT     fail unless PORT is free (TCP and UDP)
#   bench_ports N             PORTS if set (checked, N of them), else free ones
#   bench_wait_ready NAME PID LOG PORT PROTO
#                             wait until a server listens; fail with its log
#                             if it exits first (a busy port) or never does
#   bench_kill_tree PID       end a process and everything it started
#   bench_build_refs [PROG..] bench/build.sh into BENCH_OUT
#   bench_build_sockecho      the release build of sockecho (sets SOCKECHO)
#                             (NO_BUILD=1: build nothing, here or in bench_build_refs)
#   bench_server_spec NAME PROTO
#                             'NAME=command {PORT}' for a known server name
# and cleans up at exit (also on INT and TERM): bench_cleanup_hook first if
# the script defines one, then every PID in bench_pids and every process
# this shell still runs, with their children, then the directory bench_tmp.

set -Eeuo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_repo=$(dirname "$bench_dir")
bench_prog=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
bench_prog=${bench_prog#"$bench_repo"/}
# Where bench/build.sh puts the reference programs (absolute).
BENCH_OUT=${BENCH_OUT:-$bench_repo/target/bench-refs}
case $BENCH_OUT in /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
export BENCH_OUT

bench_on_err() { # status file line command
  # A failure inside $(...) or a pipeline is reported by the command that
  # used it, in the script's own shell; say it once.
  if [ "$BASH_SUBSHELL" -eq 0 ]; then
    echo "error: $bench_prog: $2 line $3: \`$4\` exited with status $1" >&2
  fi
}
trap 'bench_on_err $? "${BASH_SOURCE[0]##*/}" "$LINENO" "$BASH_COMMAND"' ERR

bench_die() {
  echo "error: $bench_prog: $*" >&2
  exit 1
}

bench_need() { # command [how to get it]
  command -v "$1" >/dev/null 2>&1 || bench_die "$1 not found${2:+ ($2)}"
}

bench_pids=()
bench_tmp=""
bench_exit() {
  local status=$? p
  trap - ERR
  set +e
  if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook; fi
  for p in "${bench_pids[@]}"; do bench_kill_tree "$p"; done
  # Whatever else this shell still runs (a load client in a $(...), when
  # interrupted).
  for p in $(pgrep -P "$$" 2>/dev/null || true); do bench_kill_tree "$p"; done
  if [ -n "$bench_tmp" ]; then rm -rf "$bench_tmp"; fi
  exit "$status"
}
trap bench_exit EXIT
trap 'echo "error: $bench_prog: interrupted" >&2; exit 130' INT
trap 'echo "error: $bench_prog: terminated" >&2; exit 143' TERM

# A process and its descendants, parents first.
bench_descendants() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" 2>/dev/null || true); do bench_descendants "$c"; done
}

bench_kill_tree() { # pid: TERM the tree, children first; KILL what is left after 2 s
  local p i tree
  tree=$(bench_descendants "$1" | tac)
  for p in $tree; do kill "$p" 2>/dev/null || true; done
  for ((i = 0; i < 20; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  for p in $tree; do kill -9 "$p" 2>/dev/null || true; done
  wait "$1" 2>/dev/null || true
}

# Ports are taken below the kernel's ephemeral range where there is room,
# so that no load client's own connections can be given one of them.
bench_free_ports() { # count
  local n=$1 lo
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$n" "$lo" <<'PY' || bench_die "no $n free ports found"
import random, socket, sys
n, lo = int(sys.argv[1]), int(sys.argv[2])
first, last = (10000, lo - 1) if lo > 11000 else (lo, 65535)
got = []
for _ in range(2000):
    if len(got) == n:
        break
    p = random.randint(first, last)
    if p in got:
        continue
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        t.bind(("127.0.0.1", p))
        u.bind(("127.0.0.1", p))
        got.append(p)
    except OSError:
        pass
    finally:
        t.close()
        u.close()
if len(got) < n:
    sys.exit(1)
print(" ".join(map(str, got)))
PY
  else
    bench_need ss "iproute2; or install python3"
    local got=() p i
    for ((i = 0; i < 2000 && ${#got[@]} < n; i++)); do
      p=$((10000 + RANDOM % (lo > 11000 ? lo - 10000 : 20000)))
      [[ " ${got[*]} " == *" $p "* ]] && continue
      [ -z "$(ss -Htuan "( sport = :$p )")" ] && got+=("$p")
    done
    [ "${#got[@]}" -eq "$n" ] || bench_die "no $n free ports found"
    echo "${got[*]}"
  fi
}

bench_check_port() { # port: fail unless nothing holds it on 127.0.0.1 (TCP or UDP)
  local p=$1
  if ! [[ $p =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then bench_die "bad port '$p'"; fi
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$p" <<'PY' && return 0
import socket, sys
p = int(sys.argv[1])
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    t.bind(("127.0.0.1", p))
    u.bind(("127.0.0.1", p))
except OSError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
PY
  else
    bench_need ss "iproute2; or install python3"
    [ -n "$(ss -Htuln "( sport = :$p )")" ] || return 0
  fi
  bench_die "port $p is in use (TCP or UDP on 127.0.0.1); pick another, or leave the port unset for a free one"
}

bench_ports() { # count: the PORTS variable (checked), or that many free ports
  local n=$1 p _ports
  if [ -n "${PORTS:-}" ]; then
    read -r -a _ports <<<"$PORTS"
    [ "${#_ports[@]}" -eq "$n" ] || bench_die "PORTS names ${#_ports[@]} ports, $n are needed (one per server, in order)"
    for p in "${_ports[@]}"; do bench_check_port "$p"; done
    echo "${_ports[*]}"
  else
    bench_free_ports "$n"
  fi
}

bench_show_log() { # log
  echo "--- last lines of $1:" >&2
  tail -n 20 "$1" >&2 || true
  echo "---" >&2
}

# Waits (5 s at most) for a server started in the background to listen:
# its log says `listen ok`, or the TCP port takes a connection, or (UDP) the
# port is bound. Fails with the server's log if it exits first.
bench_wait_ready() { # name pid log port proto
  local name=$1 pid=$2 log=$3 port=$4 proto=$5 i
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      local st=0
      wait "$pid" 2>/dev/null || st=$?
      bench_show_log "$log"
      bench_die "server $name exited (status $st) before listening on port $port (is the port taken? is the command right?)"
    fi
    if grep -q 'listen ok' "$log" 2>/dev/null; then return 0; fi
    if [ "$proto" = udp ]; then
      if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hlun "( sport = :$port )")" ]; then return 0; fi
    elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  bench_show_log "$log"
  bench_die "server $name did not listen on port $port within 5 s"
}

# shellcheck disable=SC2120 # no arguments: all of them
bench_build_refs() { # [program...]: bench/build.sh into BENCH_OUT
  "$bench_dir/build.sh" "$@" || bench_die "bench/build.sh failed (see above)"
}

# The release build of sockecho, cargo's output shown (on stderr). A
# caller that sets SOCKECHO to a binary gets that binary and no build;
# with NO_BUILD=1, the release binary already there and no build.
bench_build_sockecho() {
  if [ -n "${SOCKECHO:-}" ]; then
    [ -x "$SOCKECHO" ] || bench_die "SOCKECHO=$SOCKECHO is not an executable file"
    echo "using SOCKECHO=$SOCKECHO (not built here)" >&2
    return 0
  fi
  if [ "${NO_BUILD:-0}" = 1 ]; then
    SOCKECHO=${CARGO_TARGET_DIR:-$bench_repo/target}/release/sockecho
    [ -x "$SOCKECHO" ] || bench_die "NO_BUILD=1 and $SOCKECHO is missing (or set SOCKECHO)"
    echo "using $SOCKECHO (NO_BUILD=1: not built)" >&2
    return 0
  fi
  bench_need cargo "https://rustup.rs"
  echo "building sockecho (release): cargo build --release --locked -p sockecho-cli --bin sockecho" >&2
  if ! cargo build --release --locked --manifest-path "$bench_repo/Cargo.toml" -p sockecho-cli --bin sockecho; then
    bench_die "the release build of sockecho failed (cargo's errors are above)"
  fi
  SOCKECHO=${CARGO_TARGET_DIR:-$bench_repo/target}/release/sockecho
  case $SOCKECHO in /*) ;; *) SOCKECHO=$bench_repo/$SOCKECHO ;; esac
  [ -x "$SOCKECHO" ] || bench_die "cargo succeeded but $SOCKECHO is not there"
  echo "sockecho: $SOCKECHO" >&2
}

# The servers scripts know by name; the commands take {PORT}. The first of
# a run is the base its ratios are to.
bench_server_names="c-epoll c-splice tokio go sockecho sockecho-epoll sockecho-buffers c-udp c-udp-mmsg"
bench_server_spec() { # name proto
  local refs se
  refs=$(printf %q "$BENCH_OUT")
  se=$(printf %q "${SOCKECHO:-sockecho}")
  local sproto=tcp
  [ "$2" = udp ] && sproto=udp
  case $1 in
    c-epoll) echo "c-epoll=$refs/c_epoll_echo {PORT}" ;;
    c-splice) echo "c-splice=$refs/c_epoll_echo {PORT} splice" ;;
    tokio) echo "tokio=$refs/tokio_echo 127.0.0.1:{PORT}" ;;
    go) echo "go=$refs/go_echo 127.0.0.1:{PORT}" ;;
    c-udp) echo "c-udp=$refs/c_udp_echo {PORT}" ;;
    c-udp-mmsg) echo "c-udp-mmsg=$refs/c_udp_echo {PORT} 32" ;;
    sockecho) echo "sockecho=$se serve -q $sproto://127.0.0.1:{PORT}" ;;
    sockecho-epoll) echo "sockecho-epoll=$se serve -q --epoll $sproto://127.0.0.1:{PORT}" ;;
    # The io_uring engine with large messages through its buffers, not spliced.
    sockecho-buffers) echo "sockecho-buffers=env SOCKECHO_URING_NO_SPLICE=1 $se serve -q $sproto://127.0.0.1:{PORT}" ;;
    *) bench_die "unknown server '$1' (known: $bench_server_names; or give 'name=command with {PORT}')" ;;
  esac
}
