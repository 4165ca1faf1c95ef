#!/usr/bin/env bash
# flvedge demo, one command on a fresh Debian 12 machine:
#   examples/demo.sh            (PORT=9090 examples/demo.sh for another port)
# It installs what is missing (apt), builds flvedge into build/, makes examples/media/demo.flv with
# ffmpeg, installs the player's mpegts.js with npm, then runs flvedge in the foreground with
# examples/demo.lua. Ctrl-C stops it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="$ROOT/examples"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
PORT="${PORT:-8080}"
MEDIA="$EXAMPLES/media/demo.flv"
PLAYER="$EXAMPLES/player"

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
  die "PORT must be a number from 1 to 65535, not '$PORT'"
fi
case "$EXAMPLES" in
  *[\"\\\|\&]*) die "the checkout's path must not contain \", \\, | or &: $EXAMPLES" ;;
esac

# 1. Packages: install only what is missing.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: install the packages as root first"
  SUDO="sudo"
fi
# LuaJIT: Debian's luajit or OpenResty's luajit2 (the one nginx's lua module needs); either serves.
PACKAGES=(build-essential cmake pkg-config libuv1-dev libluajit2-5.1-dev luajit2 node-llhttp
  libmbedtls-dev libnghttp2-dev libmaxminddb-dev python3 ffmpeg nodejs npm)
missing=()
for pkg in "${PACKAGES[@]}"; do
  # A Node.js from elsewhere (e.g. NodeSource, which bundles npm) conflicts with Debian's npm.
  case "$pkg" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    libluajit2-5.1-dev) dpkg -s libluajit-5.1-dev >/dev/null 2>&1 && continue ;;
    luajit2) command -v luajit >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing missing packages: ${missing[*]}"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "${missing[@]}"
else
  say "packages: all present"
fi

# 2. Build (configure once; later runs only rebuild what changed).
cd "$ROOT"
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  say "configuring a Release build in $BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
fi
say "building flvedge"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target flvedge
BIN="$BUILD_DIR/flvedge"
[ -x "$BIN" ] || die "the build did not produce $BIN"

# 3. Demo media: 30 s of 1280x720 30 fps H.264 (CBR 1.5 Mbit/s, a keyframe every 2 s) + 440 Hz AAC.
if [ ! -s "$MEDIA" ]; then
  say "making $MEDIA with ffmpeg"
  mkdir -p "$(dirname "$MEDIA")"
  FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
  VF="null"
  if [ -f "$FONT" ] && ffmpeg -hide_banner -filters 2>/dev/null | grep -q ' drawtext '; then
    BOX="fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=14:fontfile=$FONT"
    VF="drawtext=$BOX:fontsize=44:x=40:y=40:text='flvedge demo  1280x720  30 fps  1.5 Mbit/s'"
    VF="$VF,drawtext=$BOX:fontsize=64:x=40:y=h-th-60:text='%{pts\\:hms}   frame %{n}'"
  fi
  ffmpeg -nostdin -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=44100 \
    -t 30 -vf "$VF" -pix_fmt yuv420p \
    -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 \
    -b:v 1500k -maxrate 1500k -bufsize 1500k -x264-params nal-hrd=cbr \
    -c:a aac -b:a 128k -flvflags add_keyframe_index -f flv "$MEDIA.tmp"
  mv "$MEDIA.tmp" "$MEDIA"
fi

# 4. The player page's mpegts.js.
if [ ! -f "$PLAYER/node_modules/mpegts.js/dist/mpegts.js" ]; then
  say "installing mpegts.js in $PLAYER"
  (cd "$PLAYER" && npm install --no-audit --no-fund)
fi

# 5. The config: examples/demo.lua with the port substituted and absolute paths, so that it works
#    from build/.
CONFIG="$BUILD_DIR/demo.lua"
sed -e "s|\"127\.0\.0\.1:8080\"|\"127.0.0.1:$PORT\"|" \
    -e "s|http://127\.0\.0\.1:8080/|http://127.0.0.1:$PORT/|" \
    -e "s|\"file:media/|\"file:$EXAMPLES/media/|" \
    -e "s|root = \"\([A-Za-z0-9_./-]*\)\"|root = \"$EXAMPLES/\1\"|" \
    "$EXAMPLES/demo.lua" > "$CONFIG"
grep -q "\"127.0.0.1:$PORT\"" "$CONFIG" || die "could not set the port in $CONFIG (listen changed in examples/demo.lua?)"
"$BIN" -t -c "$CONFIG" || die "the config $CONFIG does not check out"

BASE="http://127.0.0.1:$PORT"
cat <<EOF

flvedge demo ($CONFIG, made from examples/demo.lua)
  live stream (HTTP-FLV):  $BASE/flv/demo.flv
  player page:             $BASE/index.html
  the file (static):       $BASE/media/demo.flv
  the file via VOD cache:  $BASE/vod/demo.flv   (ranges, ?t=SECONDS, X-Cache-Status)
  VOD in the player:       $BASE/index.html?vod=1&src=$BASE/vod/demo.flv
  metrics:                 $BASE/_flvedge/metrics (status_prefix in demo.lua)
Try:
  ffplay -fflags nobuffer $BASE/flv/demo.flv
  curl -sN --max-time 5 -o live.flv $BASE/flv/demo.flv   # 5 s of the live stream
  curl -sI $BASE/vod/demo.flv                            # MISS, then HIT
  curl -s -r 0-99 -o /dev/null -w '%{http_code}\n' $BASE/vod/demo.flv
Ctrl-C stops it.

EOF
exec "$BIN" -c "$CONFIG"
