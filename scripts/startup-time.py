#!/usr/bin/env python3
"""Time from starting `sockecho serve` to its `listen ok` line, N runs.
Usage: scripts/startup-time.py [BINARY] [N] [serve arguments...]"""
import statistics, subprocess, sys, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/sockecho"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
extra = sys.argv[3:] or ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]
times = []
for _ in range(runs):
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "-q", *extra], stdout=subprocess.PIPE)
    for _ in extra:
        line = proc.stdout.readline()
        assert line.startswith(b"listen ok"), line
    times.append((time.perf_counter() - start) * 1000)
    proc.terminate()
    proc.wait(timeout=10)
times.sort()
print(f"start to listen ok over {runs} runs: median {statistics.median(times):.2f} ms, "
      f"min {times[0]:.2f} ms, max {times[-1]:.2f} ms")
