#!/usr/bin/env bash
# Data-parallel training on this machine, in one run: bench_data_parallel
# alone with 2 threads, then under `mpirun -np 2` with 1 thread per rank
# (the same 2 cores), and the ratio of their step times.
#
#   bench/data_parallel.sh [BUILD_DIR]      (default: build)
set -euo pipefail
build=${1:-build}
bench=$build/bench/bench_data_parallel
# As root (CI), mpirun needs to be told that this is meant.
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

one=$("$bench" --threads 2)
two=$("${mpirun[@]}" "$bench" --threads 1)
printf '== one process, 2 threads\n%s\n\n== mpirun -np 2, 1 thread each\n%s\n\n' "$one" "$two"
# The step time of the 25 MB-bucket row of each.
step_of() { awk '$1 == "25" && NF == 6 { print $3 }' <<<"$1"; }
awk -v one="$(step_of "$one")" -v two="$(step_of "$two")" \
  'BEGIN { printf "mini step: %.3f s with 1 x 2 threads, %.3f s with 2 ranks x 1 thread: np 2 / np 1 = %.2f\n", one, two, two / one }'
