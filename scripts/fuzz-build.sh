#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ on the stable toolchain, and optionally runs them.
#
#   scripts/fuzz-build.sh              build fuzz/target/<host>/release/{decode_frame,stratum_line,stratum_server}
#   scripts/fuzz-build.sh --run 30     build, then fuzz each target for 30 seconds
#
# cargo-fuzz's own `cargo fuzz build` wants nightly only for its sanitizers (-Zsanitizer) and
# -Zbuild-std. libFuzzer itself needs only LLVM's SanitizerCoverage instrumentation, which
# stable rustc exposes through -C passes / -C llvm-args. So this passes the same flags that
# `cargo fuzz build --sanitizer none --debug-assertions` passes (cargo-fuzz 0.13), to a plain
# `cargo build`: nothing to install, and the binaries land where cargo-fuzz puts them, so a
# developer with cargo-fuzz can use `cargo fuzz run decode_frame --sanitizer none` on the same
# build. The flags go through --target so that build scripts and proc macros are not
# instrumented (they do not link libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."

run_secs=""
case "${1:-}" in
  "") ;;
  --run) run_secs="${2:?--run needs a number of seconds}" ;;
  *) echo "usage: $0 [--run SECONDS]" >&2; exit 2 ;;
esac

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends g++
fi

host=$(rustc -vV | sed -n 's/^host: //p')
targets=(decode_frame stratum_line stratum_server)

export RUSTFLAGS="--cfg fuzzing \
 -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"

cargo build --manifest-path fuzz/Cargo.toml --locked --release --target "$host" \
  $(printf -- '--bin %s ' "${targets[@]}")

if [ -n "$run_secs" ]; then
  for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" fuzz/artifacts/$t
    echo "== fuzzing $t for ${run_secs}s"
    "fuzz/target/$host/release/$t" -max_total_time="$run_secs" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" "$corpus"
  done
fi
