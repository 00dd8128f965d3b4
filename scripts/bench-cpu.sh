#!/usr/bin/env bash
# CPU hashing benchmark for BENCHMARKS.md: the OpenSSL single-stream SHA-256 reference and the
# hashgrid CPU backend, each kernel at 1 thread and at all threads, in one run.
#
# Usage: scripts/bench-cpu.sh [SECONDS]     (default 5 seconds per measurement)
#   KERNELS="avx512x16 avx2x8"  kernels to measure (default: all four; unsupported ones are
#                               reported and skipped)
#   THREADS="1 2"               thread counts (default: 1 and all cores)
#
# The kernel is forced with HASHGRID_CPU_KERNEL; `hashgrid-node bench` reports the kernel that
# actually ran in its device string, which is checked here. The OpenSSL figure is user CPU
# time (openssl speed's default); hashgrid's is wall time, so run this on an idle machine (the
# load average is printed before and after).
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-5}"
kernels="${KERNELS:-baseline scalar avx2x8 avx512x16}"
all="$(nproc)"
threads="${THREADS:-1 $all}"
[ "$all" = 1 ] && threads="${THREADS:-1}"

cargo build --release --quiet --bin hashgrid-node
node=target/release/hashgrid-node

echo "## Machine"
echo
echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "- cores: $all ($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
flags=""
for f in avx2 avx512f avx512bw avx512vl sha_ni bmi2; do
    if grep -qw "$f" /proc/cpuinfo; then flags="$flags $f"; else flags="$flags no-$f"; fi
done
echo "- flags:$flags"
echo "- $(rustc --version), $(openssl version | cut -d' ' -f1-2)"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "## Reference: openssl speed -seconds 3 -bytes 16384 -evp sha256"
echo
# The last line is "sha256  <thousands of bytes per second>k".
kbytes="$(openssl speed -seconds 3 -bytes 16384 -evp sha256 2>/dev/null | awk '/^sha256/ {sub("k", "", $2); print $2}' | tail -1)"
limit="$(awk -v k="$kbytes" 'BEGIN { printf "%.0f", k * 1000 / 64 / 2 }')"
awk -v k="$kbytes" 'BEGIN {
    b = k * 1000
    printf "- %.1f MB/s (16384-byte blocks, one thread) = %.3f M compressions/s\n", b / 1e6, b / 64 / 1e6
    printf "- single-stream sha256d limit (2 compressions per hash): %.3f MH/s\n", b / 128 / 1e6
}'
echo

echo "## hashgrid-node bench --backend cpu --threads N --seconds $secs --json"
echo
echo "| kernel | threads | device | MH/s | x single-stream limit |"
echo "|---|---:|---|---:|---:|"
for kernel in $kernels; do
    for t in $threads; do
        json="$(HASHGRID_CPU_KERNEL="$kernel" "$node" bench --backend cpu --threads "$t" --seconds "$secs" --json)"
        device="$(printf '%s' "$json" | sed -E 's/.*"device":"([^"]*)".*/\1/')"
        rate="$(printf '%s' "$json" | sed -E 's/.*"hashrate":([0-9.eE+-]+).*/\1/')"
        case "$device" in
        *", $kernel)") ;;
        *)
            echo "| $kernel | $t | not supported here (ran: $device) | - | - |"
            continue
            ;;
        esac
        awk -v k="$kernel" -v t="$t" -v d="$device" -v r="$rate" -v l="$limit" \
            'BEGIN { printf "| %s | %s | %s | %.3f | %.2f |\n", k, t, d, r / 1e6, r / l }'
    done
done
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
