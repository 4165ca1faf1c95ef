#!/usr/bin/env bash
# ctest's fuzz.<target>: a short run of one libFuzzer target of a -DFE_FUZZ=ON build. Its corpus
# (tests/fuzz/corpus/<target>: seeds, and regress-* inputs that once crashed) is replayed first,
# then mutated for at most FUZZ_RUNS inputs or FUZZ_SECONDS. New inputs go to a scratch directory,
# never into the tree. Fails on any crash, sanitizer report, leak or broken invariant.
#   smoke.sh BUILD-FUZZ/tests/fuzz/<target> SCRATCH-DIR
set -euo pipefail
bin=$1
work=$2
name=$(basename "$bin")
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$bin" ] || { echo "smoke.sh: $bin not built (cmake --build of the fuzz tree)" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work/new"
dict=()
[ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
exec "$bin" "${dict[@]}" -runs="${FUZZ_RUNS:-50000}" -max_total_time="${FUZZ_SECONDS:-10}" \
  -timeout=10 -print_final_stats=1 -artifact_prefix="$work/" "$work/new" "$here/corpus/$name"
