#!/usr/bin/env bash
# Prerequisites of tests/browser/player_test.js: Debian's chromium and ffmpeg, node and npm, and the
# npm packages (playwright-core here, mpegts.js in examples/player). Installs only what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v node >/dev/null || missing+=(nodejs)
# A Node.js from elsewhere (e.g. NodeSource) brings its own npm, which Debian's npm conflicts with.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "${missing[@]}"
fi

install_npm() { # dir, a file that exists once installed
  if [ ! -e "$1/$2" ]; then
    echo "setup.sh: npm install in $1"
    (cd "$1" && npm install --no-audit --no-fund)
  fi
}
install_npm "$ROOT/tests/browser" node_modules/playwright-core/package.json
install_npm "$ROOT/examples/player" node_modules/mpegts.js/dist/mpegts.js
