-- The config fuzz_h2.c serves from: fuzz_conn.lua's (a live resource whose origin refuses, plain
-- files, CORS, an access log to nowhere) and a live stream that plays (a
-- file: source), so that DATA frames of a live stream go out under the client's flow control.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local cfg = dofile(here .. "fuzz_conn.lua")
table.insert(cfg.resources, { name = "file", prefix = "/file/", type = "live",
                              origin = "file:../media/keyframes.flv", linger = 0 })
return cfg
