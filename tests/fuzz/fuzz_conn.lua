-- The config fuzz_conn.c serves from (fe_config_load; no policy): a live resource whose origin
-- refuses connections (every stream ends in a 502 error answer), plain files from this
-- directory's corpus, CORS headers and an access log that goes nowhere but is written. The public
-- metrics are off, as by default (status_prefix): their only input is an exact path match.
return {
  listen = "127.0.0.1:0",
  access_log = "/dev/null",
  cors_origin = "*",
  limits = { max_header_size = 4096 },
  resources = {
    { name = "live", prefix = "/live/", type = "live", origin = "http://127.0.0.1:1/",
      linger = 0, origin_connect_timeout = 1 },
    { name = "files", prefix = "/", type = "static", root = "corpus/fuzz_conn" },
  },
}
