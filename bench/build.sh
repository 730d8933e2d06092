#!/usr/bin/env bash
# Builds the reference servers and load clients of bench/ into one
# directory: BENCH_OUT, by default target/bench-refs under the repository
# root (whatever the current directory).
#
# Usage: bench/build.sh [PROGRAM...]      (default: all of them)
#   PROGRAM: echo_load udp_load churn_load c_epoll_echo c_udp_echo
#            tokio_echo go_echo
#
#   the C programs   ${CC:-gcc} -O2 -Wall (CFLAGS adds flags)
#   tokio_echo       cargo build --release --locked in bench/tokio-echo (its
#                    own workspace and lock file), copied out of
#                    BENCH_OUT/tokio-target
#   go_echo          go build, where `go` is installed; skipped otherwise,
#                    saying so (asked for by name, it is an error)
#
# Environment:
#   BENCH_OUT  output directory (default: <repo>/target/bench-refs)
#   STATIC=1   static binaries (gcc -static, tokio_echo with crt-static,
#              go_echo without cgo), which run on a machine that lacks the
#              build machine's libraries (see scripts/scaling.sh, BIN)
#   FORCE=1    rebuild even what is up to date
#   NO_BUILD=1 build nothing: only check that the programs are in BENCH_OUT
#              (binaries brought from elsewhere, no compilers here)
# A C program whose binary is newer than its source, built with the same
# compiler and flags, is not rebuilt. Prints what it builds and where, on
# standard error; a missing compiler or a failed build stops it with an
# `error:` line and a non-zero status.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

out=$BENCH_OUT
cc=${CC:-gcc}
cflags=(-O2 -Wall)
[ "${STATIC:-0}" = 1 ] && cflags+=(-static)
# shellcheck disable=SC2206 # CFLAGS is a list of words by convention
[ -n "${CFLAGS:-}" ] && cflags+=($CFLAGS)
c_progs="echo_load udp_load churn_load c_epoll_echo c_udp_echo"
all="$c_progs tokio_echo go_echo"

want=("$@")
[ "${#want[@]}" -gt 0 ] || read -r -a want <<<"$all"
for p in "${want[@]}"; do
  [[ " $all " == *" $p "* ]] || bench_die "unknown program '$p' (known: $all)"
done

if [ "${NO_BUILD:-0}" = 1 ]; then
  for p in "${want[@]}"; do
    if [ -x "$out/$p" ]; then
      echo "$p: $out/$p (NO_BUILD=1: not built)" >&2
    elif [ "$p" = go_echo ] && [ "$#" -eq 0 ]; then
      echo "go_echo: not in $out; skipped" >&2
    else
      bench_die "NO_BUILD=1 and $out/$p is missing"
    fi
  done
  exit 0
fi

mkdir -p "$out"
echo "bench/build.sh: building into $out: ${want[*]}" >&2

# Each C program's compiler and flags, kept beside it: others mean rebuild.
flags="$cc ${cflags[*]}"

built=() skipped=()
for p in "${want[@]}"; do
  case $p in
    tokio_echo)
      bench_need cargo "https://rustup.rs; needed for tokio_echo"
      args=(build --release --locked --manifest-path "$bench_dir/tokio-echo/Cargo.toml")
      src="$out/tokio-target/release/tokio-echo-baseline"
      if [ "${STATIC:-0}" = 1 ]; then
        # crt-static with an explicit --target, so that tokio's proc macros
        # (built for the host) stay dynamic.
        host=$(rustc -vV | sed -n 's/^host: //p')
        args+=(--target "$host")
        src="$out/tokio-target/$host/release/tokio-echo-baseline"
        export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
      fi
      echo "tokio_echo: cargo ${args[*]} (target dir $out/tokio-target)" >&2
      CARGO_TARGET_DIR="$out/tokio-target" cargo "${args[@]}" ||
        bench_die "building tokio_echo failed (cargo's errors are above)"
      cp "$src" "$out/tokio_echo"
      built+=(tokio_echo)
      ;;
    go_echo)
      if ! command -v go >/dev/null 2>&1; then
        if [ "$#" -gt 0 ]; then bench_die "go not found (apt-get install golang-go): cannot build go_echo"; fi
        echo "go_echo: skipped: go not found (apt-get install golang-go to build it)" >&2
        skipped+=(go_echo)
        continue
      fi
      cgo=${CGO_ENABLED:-1}
      [ "${STATIC:-0}" = 1 ] && cgo=0
      echo "go_echo: go build -o $out/go_echo main.go (CGO_ENABLED=$cgo)" >&2
      (cd "$bench_dir/go-echo" && CGO_ENABLED=$cgo go build -o "$out/go_echo" main.go) ||
        bench_die "building go_echo failed (go's errors are above)"
      built+=(go_echo)
      ;;
    *)
      bench_need "$cc" "apt-get install gcc, or set CC; needed for $p"
      src="$bench_dir/$p.c"
      stamp="$out/.$p.flags"
      if [ "${FORCE:-0}" != 1 ] && [ "$out/$p" -nt "$src" ] && [ -f "$stamp" ] &&
        [ "$(cat "$stamp")" = "$flags" ]; then
        echo "$p: up to date" >&2
        continue
      fi
      echo "$p: $cc ${cflags[*]} -o $out/$p bench/$p.c" >&2
      "$cc" "${cflags[@]}" -o "$out/$p" "$src" || bench_die "compiling $p failed ($cc's errors are above)"
      echo "$flags" >"$stamp"
      built+=("$p")
      ;;
  esac
done
echo "bench/build.sh: done: $out${built[*]:+ (built: ${built[*]})}${skipped[*]:+ (skipped: ${skipped[*]})}" >&2
