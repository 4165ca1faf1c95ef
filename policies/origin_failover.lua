-- origin_failover: picks the origin of a live stream from a list, and moves on to another one
-- when the pull fails, before the stream started or in the middle of it (viewers stay on).
-- settings:
--   { origins = { "http://10.0.0.5:8080/live/", "http://10.0.0.6:8080/live/" },
--     mode = "ordered" | "weighted" | "hash",        -- default "ordered"
--     on = { "unreachable", "timeout", "5xx", "stall", "broken", "down" }, -- the default; also
--                                                     -- "ended", "4xx", "404", ...
--     replicas = 160 }                                  -- hash mode: virtual nodes per origin
-- mode = "hash" over a list of flvedge shields makes a tier: every edge asks the same shield for a
-- stream (the next one clockwise when it fails), so the origin sees one pull per stream.
-- An origin is a base URL like the resource's own (the stream is pulled from
-- {origin}/{stream}.flv), or a URL with {stream} in it. Weighted mode takes { url =, weight = }
-- entries (or strings, weight 1). A failure that is not in `on` gives up (the viewer gets the
-- error), and so does running out of origins.
local origin = require "flvedge.origin"
local util = require "flvedge.util"

local type, error, pcall, ipairs, tostring, format = type, error, pcall, ipairs, tostring,
  string.format
local failover_on = origin.failover_on

local KEYS = { origins = true, mode = true, on = true, replicas = true }
local MODES = { ordered = true, weighted = true, hash = true }

return function(settings)
  if type(settings) ~= "table" then error("origin_failover: settings must be a table", 0) end
  util.check_keys(settings, KEYS, "origin_failover", "setting")
  local mode = settings.mode or "ordered"
  if not MODES[mode] then
    error(format('origin_failover: mode must be "ordered", "weighted" or "hash", got %s', tostring(mode)), 0)
  end
  local list = settings.origins
  if type(list) ~= "table" or #list == 0 then
    error("origin_failover: origins must be a non-empty list of URLs", 0)
  end
  if settings.replicas ~= nil and mode ~= "hash" then
    error("origin_failover: replicas is only for mode = \"hash\"", 0)
  end
  local urls = {}
  for i, o in ipairs(list) do
    local url = type(o) == "table" and mode == "weighted" and o.url or o
    if type(url) ~= "string" or url == "" then
      error(format("origin_failover: origins[%d] must be a URL string%s, got %s", i,
        mode == "weighted" and " or { url =, weight = }" or "", type(url)), 0)
    end
    url = origin.stream_template(url)
    urls[i] = type(o) == "table" and { url = url, weight = o.weight } or url
  end
  local on = settings.on or { "unreachable", "timeout", "5xx", "stall", "broken", "down" }
  local ok, set = pcall(origin.errors, on)
  if not ok then error("origin_failover: on: " .. tostring(set), 0) end
  local pick
  ok, pick = pcall(origin[mode], { urls = urls, replicas = settings.replicas })
  if not ok then error("origin_failover: " .. tostring(pick), 0) end
  return {
    origin = function(req, attempt, last_error)
      if attempt > 1 and not failover_on(last_error, set) then return nil end
      return pick(req, attempt)
    end,
  }
end
