-- The config fuzz_h2.c serves from: fuzz_conn.lua's (a live resource whose origin refuses, plain
-- files, the status endpoint, CORS, an access log to nowhere) and a live stream that plays (a
-- file: source), so that DATA frames of a live stream go out under the client's flow control.
return {
  listen = "127.0.0.1:0",
  access_log = "/dev/null",
  cors_origin = "*",
  limits = { max_header_size = 4096 },
  resources = {
    { name = "live", prefix = "/live/", type = "live", origin = "http://127.0.0.1:1/",
      linger = 0, origin_connect_timeout = 1 },
    { name = "file", prefix = "/file/", type = "live", origin = "file:../media/keyframes.flv",
      linger = 0 },
    { name = "files", prefix = "/", type = "static", root = "corpus/fuzz_conn" },
  },
}
