-- flvedge demo: one FLV file played as an endless live stream, the player page, and the file itself.
-- Run it with examples/demo.sh (builds, makes media/demo.flv, installs the player), or by hand:
--   build/flvedge -c examples/demo.lua
-- Relative paths are relative to this file's directory (examples/).
--
--   http://127.0.0.1:8080/flv/demo.flv      live HTTP-FLV (any name under /flv/ plays the same file)
--   http://127.0.0.1:8080/index.html        the mpegts.js player page (examples/player/)
--   http://127.0.0.1:8080/media/demo.flv    the plain file (a static resource)
--   http://127.0.0.1:8080/vod/demo.flv      the same file through the VOD cache (ranges, ?t=SECONDS
--                                           seeks, X-Cache-Status), fetched from /media/ above
return {
  listen = { "127.0.0.1:8080" },
  log_level = "info",
  cors_origin = "*",                     -- lets a page on another origin play the live stream
  status_prefix = "/_flvedge/",          -- metrics on the public port: fine for a demo, not for
                                         -- production (docs/operations.md: the admin listener)

  resources = {
    {
      name = "live",
      prefix = "/flv/",
      type = "live",
      origin = "file:media/demo.flv",   -- made by demo.sh with ffmpeg
      linger = 10,
      stamp_time = true,                -- the edge's clock in the stream: the player shows the latency
    },
    {
      name = "vod",
      prefix = "/vod/",
      type = "vod",
      origin = "http://127.0.0.1:8080/media/", -- this edge's own /media/: a demo has no other origin
      cache_dir = "cache/vod",                 -- relative to the config's directory
      cache_max_size = "1G",
      slice_size = "1M",                       -- small slices, so a seek fetches little
    },
    { name = "media", prefix = "/media/", type = "static", root = "media" },
    { name = "player", prefix = "/", type = "static", root = "player" },
  },
}
