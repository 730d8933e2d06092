#!/usr/bin/env bash
# sockecho beside the reference servers in one side-by-side run: one round
# of scripts/rounds.sh (which builds the references and sockecho, then runs
# bench/rounds.sh). For figures to quote, use scripts/rounds.sh with its
# default 5 rounds: one run on a shared machine drifts by 20-30%.
#
# Usage: scripts/compare.sh [SECONDS] [SERVER...]     (default 3 s)
#   PROTO=udp       UDP scenarios (c_udp_echo plain and batched as references)
#   PROTO=churn     a new connection per message
#   IDLE_CONNS=N    also resident memory with N idle connections
#   SCENARIOS=...   CONNS:BYTES ...
#   ROUNDS=N        more rounds (default here 1)
#   PORTS, SERVER_CPU, CLIENT_CPU, BENCH_OUT, SOCKECHO, NO_BUILD: as
#                   scripts/rounds.sh
# Servers, by default: c-epoll tokio sockecho sockecho-epoll (TCP, churn),
# c-udp c-udp-mmsg sockecho (UDP); ratios are to the first.
#
# Unlike the harness's compare.sh it replaces, the servers run all at once
# (each idle while another is measured), not one after another.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"   # set -Eeuo pipefail, an ERR trap naming the line
secs=${1:-3}
[ "$#" -eq 0 ] || shift
export ROUNDS=${ROUNDS:-1}
exec "$(dirname "$0")/rounds.sh" "$secs" "$@"
