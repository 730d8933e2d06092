#!/usr/bin/env bash
# sockecho serve beside the reference servers of ../shared/bench, in one run
# of its compare.sh (server pinned to CPU 0, the neutral C load client on
# CPU 1). Usage: scripts/compare.sh [SECONDS]   (default 3)
#   PROTO=udp      UDP scenarios (c_udp_echo plain and batched as references)
#   IDLE_CONNS=N   also resident memory with N idle connections
#   SCENARIOS=...  as compare.sh takes them
set -euo pipefail
secs=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=$here/../shared/bench
refs=${BENCH_OUT:-/tmp/sockecho-bench}
[ -x "$refs/c_epoll_echo" ] || BENCH_OUT=$refs "$bench/build.sh" >/dev/null
cargo build --release --locked --manifest-path "$here/Cargo.toml" >/dev/null 2>&1
bin=$here/target/release/sockecho
if [ "${PROTO:-tcp}" = udp ]; then
  exec "$bench/compare.sh" "$secs" \
    "c-udp=$refs/c_udp_echo {PORT}" \
    "c-udp-mmsg=$refs/c_udp_echo {PORT} 32" \
    "sockecho=$bin serve -q udp://127.0.0.1:{PORT}"
fi
exec "$bench/compare.sh" "$secs" \
  "c-epoll=$refs/c_epoll_echo {PORT}" \
  "tokio=$refs/tokio_echo 127.0.0.1:{PORT}" \
  "sockecho=$bin serve -q tcp://127.0.0.1:{PORT}" \
  "sockecho-epoll=$bin serve -q --epoll tcp://127.0.0.1:{PORT}"
