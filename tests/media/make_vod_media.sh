#!/usr/bin/env bash
# An H.264 + AAC FLV for the VOD tests and benchmark, with an onMetaData keyframe index
# (-flvflags add_keyframe_index: `keyframes.times` / `keyframes.filepositions`, what ?t= seeks by).
#
#   make_vod_media.sh OUT [SECONDS] [SIZE] [VIDEO_KBIT] [FPS] [GOP]
#   make_vod_media.sh --mb MB OUT          # about MB megabytes (the benchmark's 100 MB file)
#
# Defaults: 60 s, 640x360, 500 kbit/s CBR video (x264 pads to the rate, so the size is predictable),
# 25 fps, a keyframe every 50 frames (2 s), AAC 96 kbit/s. Written to OUT.tmp-PID and renamed, so a
# parallel caller sees the whole file or none. An existing OUT is kept (delete it to remake it).
set -euo pipefail

if [ "${1:-}" = "--mb" ]; then
  mb="$2"; out="$3"
  kbit=8000
  # bytes = seconds * (video + audio kbit/s) * 1000 / 8 (+ a little FLV framing)
  seconds=$(( mb * 1000 * 1000 * 8 / ((kbit + 96) * 1000) ))
  set -- "$out" "$seconds" 1280x720 "$kbit" 25 50
fi
out="${1:?usage: make_vod_media.sh OUT [SECONDS] [SIZE] [VIDEO_KBIT] [FPS] [GOP] | --mb MB OUT}"
seconds="${2:-60}"
size="${3:-640x360}"
kbit="${4:-500}"
fps="${5:-25}"
gop="${6:-50}"

[ -s "$out" ] && exit 0
mkdir -p "$(dirname "$out")"
tmp="$out.tmp-$$"
trap 'rm -f "$tmp"' EXIT
# -threads 1 and -bitexact: the same bytes on every run of the same ffmpeg.
ffmpeg -nostdin -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=$size:rate=$fps" \
  -f lavfi -i "sine=frequency=440:sample_rate=44100" \
  -t "$seconds" -threads 1 -pix_fmt yuv420p \
  -c:v libx264 -preset veryfast -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
  -b:v "${kbit}k" -minrate "${kbit}k" -maxrate "${kbit}k" -bufsize "${kbit}k" -x264-params nal-hrd=cbr \
  -c:a aac -b:a 96k \
  -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
  -flvflags add_keyframe_index -f flv "$tmp"
mv "$tmp" "$out"
trap - EXIT
