#!/usr/bin/env bash
# Share intake over both front doors, in one run, for BENCHMARKS.md: the QUIC intake
# (`intake_bench`, N node connections) and then the Stratum V1 server (`stratum_intake`, N
# simulated miners over TCP), each verifying, crediting durably (SQLite, synchronous=FULL) and
# acknowledging every share; the machine's CPU and the load average are printed with them.
#
# Usage: scripts/bench-intake-both.sh [PEERS] [SECONDS]     (default 1000 peers, 10 seconds)
set -euo pipefail

cd "$(dirname "$0")/.."
peers="${1:-1000}"
secs="${2:-10}"

cargo build --locked --release --quiet -p hashgrid-coordinator --example intake_bench --example stratum_intake
grep -m1 'model name' /proc/cpuinfo || true
echo "cores: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== QUIC intake: $peers node connections, ${secs} s"
target/release/examples/intake_bench --connections "$peers" --seconds "$secs"
echo "== Stratum intake: $peers miners, ${secs} s"
target/release/examples/stratum_intake --miners "$peers" --seconds "$secs"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
