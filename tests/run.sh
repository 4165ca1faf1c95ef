#!/usr/bin/env bash
# Builds flvedge four times (plain; AddressSanitizer + UndefinedBehaviorSanitizer; ThreadSanitizer;
# libFuzzer targets with ASan + UBSan) and runs every test of the first two, the multi-loop tests of
# the third and a short run of each fuzz target, under one ctest run. Installs whatever Debian
# packages are missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

# LuaJIT: Debian's luajit or OpenResty's luajit2 (the one nginx's lua module needs); either serves.
packages=(build-essential cmake pkg-config clang libclang-rt-14-dev libuv1-dev libluajit2-5.1-dev
          luajit2 node-llhttp libmbedtls-dev libnghttp2-dev nghttp2-client libmaxminddb-dev mmdb-bin lua-busted ffmpeg python3
          chromium curl procps openssl iproute2 logrotate)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  case "$p" in
    libluajit2-5.1-dev) dpkg -s libluajit-5.1-dev >/dev/null 2>&1 && continue ;;
    luajit2) command -v luajit >/dev/null && continue ;;
  esac
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
fi

# The browser test's node modules (playwright-core, mpegts.js) come from npm.
bash tests/browser/setup.sh

jobs=$(nproc)
cmake -S . -B build-asan -DFE_SANITIZE=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
cmake -S . -B build-tsan -DFE_TSAN=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFE_BUILD_TESTS=ON >/dev/null
cmake --build build-tsan -j"$jobs" --target flvedge fe_load
cmake -S . -B build-fuzz -DFE_FUZZ=ON -DFE_BUILD_TESTS=OFF -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$jobs"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFE_ASAN_BUILD="$PWD/build-asan" \
  -DFE_TSAN_BUILD="$PWD/build-tsan" -DFE_FUZZ_BUILD="$PWD/build-fuzz" >/dev/null
cmake --build build -j"$jobs"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1
ctest --test-dir build --output-on-failure -j2 "$@"
