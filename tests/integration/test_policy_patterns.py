"""
The pattern functions policies get (core/lua/fe_lua_pattern.c: string.find, match, gmatch, gsub
that pay from the budget) give what LuaJIT's own give. One corpus of calls runs twice: in a policy
in the server, and in plain luajit with the built-in string library; the answers must be equal,
errors included (by message, without the position).
"""

import shutil
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from fe_harness import EdgeTestCase, free_port

# Lua expressions; each one's results (or its error) become one line of text.
CASES = [
    '("hello world"):find("o")', '("hello world"):find("o", 6)', '("hello world"):find("o", -3)',
    '("hello"):find("l+")', '("hello"):find("")', '("hello"):find("", 10)', '("hello"):find("", 6)',
    '("hello"):find("x")', '("a.b"):find(".", 1, true)', '("a.b"):find("%.")', '("abc"):find("b", -1)',
    '("abc"):find("b", -100)', '("a+b"):find("+", 1, true)', '("a+b"):find("a+b")',
    '("key=val"):find("(%w+)=(%w+)")', '("key=val"):match("(%w+)=(%w+)")',
    '("  x  "):match("^%s*(.-)%s*$")', '("[[x]]"):match("%[(.*)%]")',
    '("THE (quick) fox"):find("%f[%a]%a+", 5)', '("f(a(b)c)d"):match("%b()")',
    '("abcabc"):match("(a)(b)(c)%1%2%3")', '("hello"):match("()ll()")', '("x"):match("()")',
    '("abc"):match("^(a)")', '("abc"):match("^b")', '("abc"):match("c$")', '("a$c"):match("$c")',
    '("aaa"):match("a-b")', '("aaab"):match("a-b")', '("aaab"):match("a*")', '("b"):match("a?b")',
    '("ab"):match("a?b")', '("x=1, y=2"):gsub("(%w+)=(%w+)", "%2=%1")', '("abc"):gsub("", "-")',
    '("abc"):gsub("%w", "%0%0")', '("hello world"):gsub("o", { o = "0" })',
    '("hello"):gsub("l", function(c) return nil end)', '("hello"):gsub("l", function(c) return c:upper() end)',
    '("abc"):gsub("b", "%%")', '("abc"):gsub(".", "x", 2)', '("abc"):gsub("^.", "x")',
    '("a,b,,c"):gsub(",", ";")', '("one two  three"):gsub("%s+", " ")', '("%d"):gsub("%%d", "N")',
    '("AbC1_ z"):gsub("%u", "U")', '("AbC1_ z"):gsub("%L", ".")', '("a1 b2\\t\\n"):gsub("%s", "S")',
    '("a1!b2"):gsub("%p", "P")', '("a1!b2"):gsub("%W", "_")', '("\\0a\\1"):gsub("%c", "C")',
    '("\\0a"):gsub("%z", "Z")', '("deadBEEF xyz"):gsub("%x+", "H")', '("a b"):find("%g")',
    '("]"):find("[]]")', '("a-z"):find("[a%-]+")', '("m"):find("[^a-l]")', '("^"):find("[%^]")',
    '("a]b"):match("[^]]+")', '("2024-01-02"):match("(%d+)-(%d+)-(%d+)")',
    '("caf\\195\\169"):find("[\\128-\\255]+")', '("abc"):find("[a")', '("abc"):find("%")',
    '("abc"):find("(a")', '("abc"):find("a)")', '("abc"):find("%1")', '("abc"):find("%f")',
    '("abc"):find("%b")', '("abc"):gsub("b", "%2")', '("abc"):gsub("b", true)',
    '("abc"):gsub("b", function() return {} end)', '("abc"):find(("a?"):rep(10) .. "bc")',
    '("abc"):find("b", 2.5)', '("abc"):match(".-$")', '(""):match(".*")', '(""):find("")',
    '(""):find("x")', '("a\\0b"):find("\\0", 1, true)', '("a.b"):find("a.b", 1, 1)',
    'string.find("abc", "c")', 'string.match("a=b", "(.)=(.)")', 'string.gsub("aaa", "a", "b", 1)',
]

# And a fixed pseudo-random corpus: short subjects, patterns made of pieces (malformed ones too).
PIECES = ["a", "b", ".", "%a", "%d", "%s", "[ab]", "[^a]", "[a-c]", "(", ")", "()", "*", "+", "-", "?",
          "^", "$", "%1", "%b()", "%f[%w]", "%", "[", "]", "%.", "x"]
SUBJECTS = ["", "a", "ab", "abc", "aab", "b(a)b", "a1 b2", "x.y", "aaaa", "ba$", "((a))"]


def _random_cases(n=400, seed=7):
    import random
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        pat = "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 6)))
        subj = rnd.choice(SUBJECTS)
        fn = rnd.choice(["find", "match", "gsub"])
        extra = ', "<%0>"' if fn == "gsub" else (", %d" % rnd.randint(-3, 4) if rnd.random() < 0.3 else "")
        out.append("(%s):%s(%s%s)" % (lua_quote(subj), fn, lua_quote(pat), extra))
    return out


def lua_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


CASES += _random_cases()

GMATCH = [("hello world from lua", "%a+"), ("k=v, a=b", "(%w+)=(%w+)"), ("abc", ""),
          ("one;two;;three", "([^;]*)"), ("^a^b", "^%a"), ("aaa", "a-"), ("a1b22c333", "%d+")]

# Runs every case; `out` is the list of lines. The same text runs in luajit and in the policy.
RUNNER = r"""
local function show(ok, ...)
  if not ok then return "error: " .. (tostring((...)):gsub("^[^:]*:%d+: ", "")) end
  local t = {}
  for i = 1, select("#", ...) do t[#t + 1] = type((select(i, ...))) .. ":" .. tostring((select(i, ...))) end
  return table.concat(t, " ")
end
local function gm(s, p)
  local t = {}
  for a, b in s:gmatch(p) do t[#t + 1] = tostring(a) .. "/" .. tostring(b) end
  return table.concat(t, ",")
end
local out = {}
for i, f in ipairs(cases) do out[i] = show(pcall(f)) end
for _, g in ipairs(gmatches) do out[#out + 1] = show(pcall(gm, g[1], g[2])) end
"""


def lua_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def program():
    cases = "local cases = {\n" + "".join("  function() return %s end,\n" % c for c in CASES) + "}\n"
    gms = "local gmatches = {\n" + "".join("  { %s, %s },\n" % (lua_string(a), lua_string(b))
                                           for a, b in GMATCH) + "}\n"
    return cases + gms + RUNNER


class PatternsTest(EdgeTestCase):
    def test_same_answers_as_luajit(self):
        luajit = shutil.which("luajit")
        if not luajit:
            self.skipTest("luajit not found")
        ref = subprocess.run([luajit, "-e", program() + "io.write(table.concat(out, '\\n'))"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(ref.returncode, 0, ref.stderr)
        expected = ref.stdout.split("\n")
        policy = program() + "return { access = function() return 200, table.concat(out, '\\n') end }\n"
        edge = self.start_edge({"resources": [{
            "name": "live", "prefix": "/flv/", "type": "live",
            "origin": "http://127.0.0.1:%d/" % free_port(), "policy": "p.lua"}]}, files={"p.lua": policy})
        r = self.get(edge, "/flv/s.flv")
        self.assertStatus(r, 200)
        got = r.body.decode("latin-1").split("\n")
        self.assertEqual(len(got), len(CASES) + len(GMATCH))
        wrong = []
        for i, (g, e) in enumerate(zip(got, expected)):
            what = CASES[i] if i < len(CASES) else "gmatch%r" % (GMATCH[i - len(CASES)],)
            if g != e:
                wrong.append("%s:\n  flvedge %s\n  luajit  %s" % (what, g, e))
        self.assertEqual(wrong, [], "\n".join(wrong))


if __name__ == "__main__":
    unittest.main()
