#!/usr/bin/env bash
# CPU hashing benchmark for BENCHMARKS.md: every hashgrid CPU kernel beside the reference
# miners, sha256d at one thread, in one run, repeats interleaved (ref, ours, ref, ours, ...).
#
# Usage: scripts/bench-cpu.sh [SECONDS]     (default 10 seconds per measurement)
#   CPUMINER_OPT=/path/to/cpuminer  cpuminer-opt (JayDDee), built from source; measured with
#                                   `-a sha256d --benchmark -t 1` when set
#   CPUMINER=/path/to/minerd        cpuminer 2.5.1 (pooler), likewise
#   KERNELS="shanix4 avx512x16"     kernels to measure (default: all five; unsupported ones
#                                   are reported and skipped)
#   REPEATS=3                       rounds; each figure is the median of its rounds
#   THREADS=1                       hashgrid thread count (the references run one thread)
#
# The kernel is forced with HASHGRID_CPU_KERNEL; `hashgrid-node bench` reports the kernel that
# actually ran in its device string, which is printed and checked here. These are ranges of
# one version; `cargo run --release -p hashgrid-node --example rolled_bench` measures
# version-rolled ranges (the schedule shared across versions, or not) the same interleaved way. cpuminer-opt's rate is
# the median of its "Total: ... MH/s" lines (every 5 s, the first dropped), cpuminer's of its
# "thread 0: ... khash/s" lines (the first dropped). Those are wall-clock rates, so run this on
# an idle machine; the load average is printed before and after. On a shared machine read the
# per-CPU-second columns instead: hashgrid's hashes over the bench process's user + system
# time (less a moment-long run's, which takes the warm-up out), and cpuminer 2.5.1's hashes
# reported after its first report over the CPU time its threads used between that report and
# its last (/proc/PID/task/*/schedstat, read as each line arrives). cpuminer-opt has no
# per-CPU-second figure here.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-10}"
kernels="${KERNELS:-baseline scalar avx2x8 avx512x16 shanix4}"
repeats="${REPEATS:-3}"
threads="${THREADS:-1}"

cargo build --locked --release --quiet --bin hashgrid-node
node=target/release/hashgrid-node
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "## Machine"
echo
echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1) (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p'))"
echo "- cores: $(nproc) ($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
flags=""
for f in sha_ni avx2 avx512f avx512bw avx512vl bmi2; do
    if grep -qw "$f" /proc/cpuinfo; then flags="$flags $f"; else flags="$flags no-$f"; fi
done
echo "- flags:$flags"
echo "- $(rustc --version)"
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The median of the numbers on stdin (one per line), or "-" if there are none.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# One hashgrid measurement: appends MH/s to $work/<kernel>, MH per CPU-second to
# $work/<kernel>.cpu and the device to $work/<kernel>.device. The per-CPU-second figure is a
# difference of two runs, SECONDS long and a moment long, so that the bench's warm-up (half a
# second of CPU, not counted in its hashes) drops out.
ours() {
    local kernel="$1" json device rate hashes cpu short short_hashes short_cpu
    short="$(bench_timed "$kernel" 0.001)"
    short_cpu="$(tail -n 1 "$work/time" | awk '{ print $1 + $2 }')"
    short_hashes="$(printf '%s' "$short" | sed -E 's/.*"hashes":([0-9]+).*/\1/')"
    json="$(bench_timed "$kernel" "$secs")"
    cpu="$(tail -n 1 "$work/time" | awk '{ print $1 + $2 }')"
    device="$(printf '%s' "$json" | sed -E 's/.*"device":"([^"]*)".*/\1/')"
    rate="$(printf '%s' "$json" | sed -E 's/.*"hashrate":([0-9.eE+-]+).*/\1/')"
    hashes="$(printf '%s' "$json" | sed -E 's/.*"hashes":([0-9]+).*/\1/')"
    echo "$device" >"$work/$kernel.device"
    case "$device" in
    *", $kernel)" | *", $kernel, shared schedule)")
        awk -v r="$rate" 'BEGIN { printf "%.3f\n", r / 1e6 }' >>"$work/$kernel"
        awk -v h="$((hashes - short_hashes))" -v c="$cpu" -v c0="$short_cpu" \
            'BEGIN { if (c > c0) printf "%.3f\n", h / (c - c0) / 1e6 }' >>"$work/$kernel.cpu"
        ;;
    *) : ;; # not supported here: another kernel ran
    esac
}

# `hashgrid-node bench` of kernel $1 for $2 seconds: prints its JSON line, and writes the
# process's user and system seconds (bash's `time`) to $work/time.
bench_timed() {
    { TIMEFORMAT='%U %S'; time HASHGRID_CPU_KERNEL="$1" "$node" bench --backend cpu --threads "$threads" \
        --seconds "$2" --json; } 2>"$work/time"
}

# Appends the median of the numbers on stdin to file $1, unless there are none.
record() {
    local m
    m="$(median)"
    [ "$m" = - ] || echo "$m" >>"$1"
}

# cpuminer-opt: the median of its 5-second totals after the first.
reference_opt() {
    # timeout ends it (status 124).
    { timeout "$((secs + 8))" "$CPUMINER_OPT" -a sha256d --benchmark -t 1 2>&1 || true; } |
        sed -nE 's/.*Total: ([0-9.]+) MH\/s.*/\1/p' | tail -n +2 | record "$work/cpuminer-opt"
}

# cpuminer 2.5.1: the median of its per-thread rates after the first, in MH/s, to
# $work/cpuminer; its hashes per CPU-second after the first report to $work/cpuminer.cpu.
reference_pooler() {
    local line pid cpu first_cpu="" last_cpu="" hashes=0 reports=0 started=$SECONDS
    coproc POOLER { exec "$CPUMINER" -a sha256d --benchmark -t 1 2>&1; }
    pid=$POOLER_PID
    while IFS= read -r line <&"${POOLER[0]}"; do
        [[ $line =~ thread\ 0:\ ([0-9]+)\ hashes,\ ([0-9.]+)\ khash ]] || continue
        cpu="$(cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }')"
        if [ -z "$first_cpu" ]; then
            first_cpu=$cpu
        else
            hashes=$((hashes + BASH_REMATCH[1]))
            last_cpu=$cpu
            echo "${BASH_REMATCH[2]}" >>"$work/pooler.rates"
        fi
        reports=$((reports + 1))
        [ $((SECONDS - started)) -ge "$secs" ] && [ "$reports" -ge 3 ] && break
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk '{ printf "%.3f\n", $1 / 1000 }' "$work/pooler.rates" | record "$work/cpuminer"
    rm -f "$work/pooler.rates"
    [ -n "$last_cpu" ] && awk -v h="$hashes" -v c="$((last_cpu - first_cpu))" \
        'BEGIN { if (c > 0) printf "%.3f\n", h / c * 1000 }' >>"$work/cpuminer.cpu"
    return 0
}

refs=""
[ -n "${CPUMINER_OPT:-}" ] && refs="$refs cpuminer-opt"
[ -n "${CPUMINER:-}" ] && refs="$refs cpuminer"
for round in $(seq "$repeats"); do
    echo "round $round of $repeats (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    for kernel in $kernels; do
        [ -n "${CPUMINER_OPT:-}" ] && reference_opt
        ours "$kernel"
    done
    [ -n "${CPUMINER:-}" ] && reference_pooler
done

echo "## sha256d, one thread: median of $repeats rounds of ${secs} s, interleaved"
echo
touch "$work/cpuminer-opt" "$work/cpuminer" "$work/cpuminer-opt.cpu" "$work/cpuminer.cpu"
opt="$(median <"$work/cpuminer-opt")"
pooler="$(median <"$work/cpuminer")"
pooler_cpu="$(median <"$work/cpuminer.cpu")"
echo "| miner | kernel that ran | MH/s (median) | all rounds | × cpuminer-opt | × cpuminer 2.5.1 | MH per CPU-s (median) | all rounds | × cpuminer 2.5.1 per CPU-s |"
echo "|---|---|---:|---|---:|---:|---:|---|---:|"
row() {
    local name="$1" device="$2" file="$3" med all cmed call
    med="$(median <"$file")"
    all="$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$file")"
    cmed="$(median <"$file.cpu")"
    call="$(awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$file.cpu")"
    awk -v n="$name" -v d="$device" -v m="$med" -v a="$all" -v o="$opt" -v p="$pooler" \
        -v cm="$cmed" -v ca="${call:--}" -v pc="$pooler_cpu" 'BEGIN {
        ro = (o == "-") ? "-" : sprintf("%.2f", m / o)
        rp = (p == "-") ? "-" : sprintf("%.2f", m / p)
        c = (cm == "-") ? "-" : sprintf("%.2f", cm)
        rc = (cm == "-" || pc == "-") ? "-" : sprintf("%.2f", cm / pc)
        printf "| %s | %s | %.2f | %s | %s | %s | %s | %s | %s |\n", n, d, m, a, ro, rp, c, ca, rc
    }'
}
for ref in $refs; do
    [ -s "$work/$ref" ] || { echo "| $ref | gave no rate | - | - | - | - | - | - | - |"; continue; }
    row "$ref" "$([ "$ref" = cpuminer-opt ] && echo "its own pick (-a sha256d)" || echo "sha256d (pooler)")" "$work/$ref"
done
for kernel in $kernels; do
    if [ -s "$work/$kernel" ]; then
        row "hashgrid $kernel" "$(cat "$work/$kernel.device")" "$work/$kernel"
    else
        echo "| hashgrid $kernel | not supported here (ran: $(cat "$work/$kernel.device")) | - | - | - | - | - | - | - |"
    fi
done
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
