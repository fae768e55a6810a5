# shellcheck shell=bash
# Shared by scripts/setup, scripts/test, scripts/check-install and .ci/run
# (sourced, not run). Holds the one list of Debian packages flowgrad needs and
# the helpers that install them and configure a build directory.

# Everything needed to build flowgrad and run its tests on Debian 12.
FLOWGRAD_APT_PACKAGES=(
  meson ninja-build pkg-config g++
  libopenblas-dev libtbb-dev catch2 nlohmann-json3-dev libcli11-dev zlib1g-dev libcairo2-dev
  libopenmpi-dev openmpi-bin
  dataset-fashion-mnist
)

# What scripts/fuzz needs besides: clang and its libFuzzer runtime.
# shellcheck disable=SC2034  # used by scripts/fuzz
FLOWGRAD_FUZZ_PACKAGES=(clang libclang-rt-14-dev)  # the sanitizer and fuzzing build
# A real browser for the test that loads flow_inspect's HTML report (skipped without it).
FLOWGRAD_BROWSER_PACKAGES=(chromium)

# shellcheck disable=SC2034  # used by the scripts that source this file
FLOWGRAD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Parallel compile jobs; FLOWGRAD_JOBS overrides.
flowgrad_jobs() {
  echo "${FLOWGRAD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
}

# Test executables run side by side. Each one already uses
# FLOWGRAD_NUM_THREADS threads (oneTBB + OpenBLAS), so one process per two
# cores keeps the machine from being oversubscribed.
flowgrad_test_processes() {
  local cores
  cores=$(nproc 2>/dev/null || echo 2)
  echo "${FLOWGRAD_TEST_PROCESSES:-$(( cores / 2 > 0 ? cores / 2 : 1 ))}"
}

log() { printf '==> %s\n' "$*"; }

# flowgrad_missing_packages [PACKAGE...]: those of FLOWGRAD_APT_PACKAGES and
# the extra ones given that are not installed.
flowgrad_missing_packages() {
  local package
  for package in "${FLOWGRAD_APT_PACKAGES[@]}" "$@"; do
    if [[ $(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null) != installed ]]; then
      echo "$package"
    fi
  done
}

# ensure_deps [PACKAGE...]: installs whatever in FLOWGRAD_APT_PACKAGES (and
# the extra packages given) is missing. Runs apt-get update only when
# something has to be installed.
ensure_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found: install these packages by hand: ${FLOWGRAD_APT_PACKAGES[*]}"
    return 0
  fi
  local missing
  mapfile -t missing < <(flowgrad_missing_packages "$@")
  if (( ${#missing[@]} == 0 )); then
    return 0
  fi
  local as_root=()
  if (( EUID != 0 )); then
    if command -v sudo >/dev/null 2>&1; then
      as_root=(sudo)
    else
      log "missing packages (${missing[*]}) and not root, no sudo: install them as root first" >&2
      return 1
    fi
  fi
  log "installing missing packages: ${missing[*]}"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# configure_build DIR [meson options...]: sets DIR up the first time with
# everything this repository builds (tests, examples, benchmarks: enabled, so
# a missing dependency is an error, not a silently smaller build) unless an
# option given says otherwise; later only applies the options (ninja re-runs
# meson by itself when a meson.build changes).
configure_build() {
  local dir=$1
  shift
  local everything=() part
  for part in tests examples bench; do
    [[ " $* " == *" -D$part="* ]] || everything+=("-D$part=enabled")
  done
  if [[ -f $dir/meson-private/coredata.dat ]]; then
    meson configure "$dir" "${everything[@]}" "$@" >/dev/null
    return 0
  fi
  log "configuring $dir"
  meson setup "$dir" "${everything[@]}" "$@"
}

# configure_sanitized_build DIR: the one AddressSanitizer + UBSan build
# (clang, so that it also holds the libFuzzer targets of tests/fuzz) that
# scripts/test --sanitize and scripts/fuzz share. -fno-sanitize-recover makes
# every UBSan finding stop the program, so a test fails instead of printing a
# warning and passing; b_lundef=false is what meson needs to link sanitized
# shared libraries. Without MPI, which shows that flowgrad builds and passes
# without it (the release build runs the mpirun tests); without the
# benchmarks, which nothing runs here.
configure_sanitized_build() {
  local dir=$1
  ensure_deps "${FLOWGRAD_FUZZ_PACKAGES[@]}"
  if [[ ! -f $dir/meson-private/coredata.dat ]]; then
    log "configuring $dir (clang, ASan + UBSan, libFuzzer targets)"
    CC=clang CXX=clang++ configure_build "$dir" -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
      -Db_lundef=false -Dcpp_args=-fno-sanitize-recover=all -Dmpi=disabled -Dbench=disabled -Dfuzzing=true
  fi
}

build() {
  local dir=$1
  log "building $dir"
  meson compile -C "$dir" -j "$(flowgrad_jobs)"
}
