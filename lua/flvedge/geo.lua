-- flvedge.geo: the client's country. In the server, req.country is looked up lazily with
-- libmaxminddb from the config's geoip_db on first read (and remembered for the request): a
-- policy that never reads it costs nothing. Without geoip_db, or for an address the database does
-- not know, it is nil. In busted specs, flvedge.testing.request{country = "DE"} supplies it.
local charge = require("flvedge.budget").charge

local type, tostring, ipairs, error = type, tostring, ipairs, error
local upper, find, format = string.upper, string.find, string.format

local _M = {}

-- The client's ISO 3166-1 alpha-2 code (uppercase), or nil when unknown.
function _M.country(req)
  return req.country
end

-- { "de", "AT" } -> { DE = true, AT = true }. Raises on anything that is not a two-letter code;
-- what, when given, names the list in that error ("<what>[2] = "DEU" is not ...").
function _M.set(list, what)
  if type(list) ~= "table" then error("geo.set: expected a list of country codes, got " .. type(list), 2) end
  local set = {}
  for i, c in ipairs(list) do
    if type(c) ~= "string" or not find(c, "^%a%a$") then
      if what then
        error(format("%s[%d] = %q is not an ISO 3166-1 alpha-2 code", what, i, tostring(c)), 0)
      end
      error(format("geo.set: [%d] is not an ISO 3166-1 alpha-2 code: %s", i, tostring(c)), 2)
    end
    set[upper(c)] = true
  end
  return set
end

-- Whether the client's country is in set (from geo.set; a plain list works too, more slowly).
-- An unknown country is in no set.
function _M.in_list(req, set)
  local c = req.country
  if c == nil then return false end
  if set[c] == true then return true end
  charge(#set)
  for i = 1, #set do
    if upper(set[i]) == c then return true end
  end
  return false
end

return _M
