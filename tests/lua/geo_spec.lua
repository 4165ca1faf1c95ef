local geo = require "flvedge.geo"
local testing = require "flvedge.testing"

describe("flvedge.geo", function()
  it("country is the request's, nil when unknown", function()
    assert.equal("DE", geo.country(testing.request{ country = "DE" }))
    assert.is_nil(geo.country(testing.request{}))
  end)

  it("set compiles codes in any case and refuses others", function()
    assert.same({ DE = true, AT = true }, geo.set{ "de", "AT" })
    assert.error_matches(function() geo.set{ "DE", "Germany" } end,
      "geo.set: [2] is not an ISO 3166-1 alpha-2 code: Germany", nil, true)
    assert.error_matches(function() geo.set{ 49 } end, "geo.set: [1] is not an ISO 3166-1 alpha-2 code: 49", nil, true)
    assert.error_matches(function() geo.set("DE") end, "geo.set: expected a list of country codes, got string", nil, true)
    assert.has_error(function() geo.set({ "DE", "DEU" }, "acl.country: values") end,
      'acl.country: values[2] = "DEU" is not an ISO 3166-1 alpha-2 code')
  end)

  it("in_list with a compiled set or a plain list; unknown is in no list", function()
    local set = geo.set{ "de", "at" }
    assert.is_true(geo.in_list(testing.request{ country = "AT" }, set))
    assert.is_false(geo.in_list(testing.request{ country = "FR" }, set))
    assert.is_false(geo.in_list(testing.request{}, set))
    assert.is_true(geo.in_list(testing.request{ country = "DE" }, { "fr", "de" }))
    assert.is_false(geo.in_list(testing.request{ country = "DE" }, { "FR" }))
  end)
end)
