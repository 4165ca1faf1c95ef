/*
 * Lua patterns (Lua 5.1 reference manual, section 5.4.1) for operator code. The matcher is the
 * classic backtracking one; what is ours is that it pays: one unit of the call's budget per match
 * step, per character a repetition or %b walks, per set element tried, per byte a plain find scans
 * or a replacement copies. A match that would take hours on a 4 KB subject (".-.-.-.-b") runs out
 * of budget in milliseconds instead, and then raises like the count hook does.
 *
 * Semantics follow LuaJIT's string library: patterns end at their first NUL, init is clamped into
 * the subject, %g is a class, gmatch does not anchor on '^'. Character classes are ASCII, whatever
 * the locale. Recursion is bounded (FE_PAT_MAXDEPTH) so that a long pattern fails cleanly rather
 * than overflowing the C stack.
 */
#include "lua/fe_lua_pattern.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#define FE_PAT_ESC '%'
#define FE_PAT_SPECIALS "^$*+?.([%-"
#define FE_PAT_MAXDEPTH 200
#define FE_PAT_CAP_OPEN (-1)
#define FE_PAT_CAP_POSITION (-2)

typedef struct fe_pat {
  const char *src, *end; /* the subject */
  lua_State *L;
  fe_lua_meter *meter;
  int depth;
  int ncap;
  struct {
    const char *at;
    ptrdiff_t len; /* or FE_PAT_CAP_OPEN / FE_PAT_CAP_POSITION */
  } cap[LUA_MAXCAPTURES];
} fe_pat;

int fe_lua_meter_fail(lua_State *L, fe_lua_meter *m, const char *what) {
  if (!m->tripped) {
    luaL_where(L, 1);
    snprintf(m->msg, sizeof(m->msg), "%sinstruction budget exceeded in %s (lua_budget)",
             lua_tostring(L, -1), what);
    lua_pop(L, 1);
    m->tripped = FE_LUA_TRIP_BUDGET;
  }
  lua_pushstring(L, m->msg);
  return lua_error(L);
}

static void fe_pat_pay(fe_pat *m, ptrdiff_t units) {
  fe_lua_meter *mt = m->meter;
  if (!mt->active)
    return;
  mt->left -= units;
  if (mt->left < 0 || mt->tripped)
    fe_lua_meter_fail(m->L, mt, "a pattern match");
}

/* ASCII classes, as LuaJIT's lj_char_* (no locale). */
static int fe_pat_class(int c, int cl) {
  int lower = cl >= 'a' && cl <= 'z';
  int alpha = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  int digit = c >= '0' && c <= '9';
  int res;
  switch (lower ? cl : cl | 0x20) {
  case 'a': res = alpha; break;
  case 'c': res = c < 32 || c == 127; break;
  case 'd': res = digit; break;
  case 'g': res = c > 32 && c < 127; break;
  case 'l': res = c >= 'a' && c <= 'z'; break;
  case 'p': res = c > 32 && c < 127 && !alpha && !digit; break;
  case 's': res = c == ' ' || (c >= '\t' && c <= '\r'); break;
  case 'u': res = c >= 'A' && c <= 'Z'; break;
  case 'w': res = alpha || digit; break;
  case 'x': res = digit || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); break;
  case 'z': res = c == 0; break;
  default: return cl == c;
  }
  return lower ? res : !res;
}

/* The end of the single-character class at p (after '%x', '[...]' or one character). */
static const char *fe_pat_class_end(fe_pat *m, const char *p) {
  char c = *p++;
  if (c == FE_PAT_ESC) {
    if (*p == '\0')
      luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (c == '[') {
    if (*p == '^')
      p++;
    do { /* the first character may be ']' */
      if (*p == '\0')
        luaL_error(m->L, "malformed pattern (missing ']')");
      if (*(p++) == FE_PAT_ESC && *p != '\0')
        p++;
    } while (*p != ']');
    return p + 1;
  }
  return p;
}

/* Whether c is in the set [ ... ] from p ('[') to ec (']'). */
static int fe_pat_set(fe_pat *m, int c, const char *p, const char *ec) {
  int in = 1;
  fe_pat_pay(m, ec - p);
  if (*(p + 1) == '^') {
    in = 0;
    p++;
  }
  while (++p < ec) {
    if (*p == FE_PAT_ESC) {
      p++;
      if (fe_pat_class(c, (unsigned char)*p))
        return in;
    } else if (*(p + 1) == '-' && p + 2 < ec) {
      if ((unsigned char)*p <= c && c <= (unsigned char)*(p + 2))
        return in;
      p += 2;
    } else if ((unsigned char)*p == c) {
      return in;
    }
  }
  return !in;
}

static int fe_pat_single(fe_pat *m, const char *s, const char *p, const char *ep) {
  if (s >= m->end)
    return 0;
  int c = (unsigned char)*s;
  switch (*p) {
  case '.': return 1;
  case FE_PAT_ESC: return fe_pat_class(c, (unsigned char)*(p + 1));
  case '[': return fe_pat_set(m, c, p, ep - 1);
  default: return (unsigned char)*p == c;
  }
}

static const char *fe_pat_match(fe_pat *m, const char *s, const char *p);

static const char *fe_pat_balance(fe_pat *m, const char *s, const char *p) {
  if (p[0] == '\0' || p[1] == '\0')
    luaL_error(m->L, "unbalanced pattern");
  if (s >= m->end || *s != p[0])
    return NULL;
  int open = 1;
  while (++s < m->end) {
    fe_pat_pay(m, 1);
    if (*s == p[1]) {
      if (--open == 0)
        return s + 1;
    } else if (*s == p[0]) {
      open++;
    }
  }
  return NULL;
}

/* x*: the longest run first, then shorter ones. */
static const char *fe_pat_max(fe_pat *m, const char *s, const char *p, const char *ep) {
  ptrdiff_t i = 0;
  while (fe_pat_single(m, s + i, p, ep)) {
    fe_pat_pay(m, 1);
    i++;
  }
  for (; i >= 0; i--) {
    const char *r = fe_pat_match(m, s + i, ep + 1);
    if (r)
      return r;
  }
  return NULL;
}

/* x-: the shortest run first, then longer ones. */
static const char *fe_pat_min(fe_pat *m, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = fe_pat_match(m, s, ep + 1);
    if (r)
      return r;
    if (!fe_pat_single(m, s, p, ep))
      return NULL;
    s++;
  }
}

static const char *fe_pat_open(fe_pat *m, const char *s, const char *p, ptrdiff_t what) {
  if (m->ncap >= LUA_MAXCAPTURES)
    luaL_error(m->L, "too many captures");
  m->cap[m->ncap].at = s;
  m->cap[m->ncap].len = what;
  m->ncap++;
  const char *r = fe_pat_match(m, s, p);
  if (!r)
    m->ncap--;
  return r;
}

static const char *fe_pat_close(fe_pat *m, const char *s, const char *p) {
  int l = m->ncap - 1;
  while (l >= 0 && m->cap[l].len != FE_PAT_CAP_OPEN)
    l--;
  if (l < 0)
    luaL_error(m->L, "invalid pattern capture");
  m->cap[l].len = s - m->cap[l].at;
  const char *r = fe_pat_match(m, s, p);
  if (!r)
    m->cap[l].len = FE_PAT_CAP_OPEN;
  return r;
}

/* %1-%9: the text of an earlier capture again. */
static const char *fe_pat_backref(fe_pat *m, const char *s, int digit) {
  int l = digit - '1';
  if (l < 0 || l >= m->ncap || m->cap[l].len == FE_PAT_CAP_OPEN)
    luaL_error(m->L, "invalid capture index");
  ptrdiff_t len = m->cap[l].len;
  if (len < 0 || m->end - s < len)
    return NULL;
  fe_pat_pay(m, len);
  return memcmp(m->cap[l].at, s, (size_t)len) == 0 ? s + len : NULL;
}

static const char *fe_pat_step(fe_pat *m, const char *s, const char *p) {
  for (;;) {
    fe_pat_pay(m, 1);
    switch (*p) {
    case '\0':
      return s;
    case '(':
      if (p[1] == ')')
        return fe_pat_open(m, s, p + 2, FE_PAT_CAP_POSITION);
      return fe_pat_open(m, s, p + 1, FE_PAT_CAP_OPEN);
    case ')':
      return fe_pat_close(m, s, p + 1);
    case '$':
      if (p[1] == '\0')
        return s == m->end ? s : NULL;
      break;
    case FE_PAT_ESC:
      if (p[1] == 'b') {
        if (!(s = fe_pat_balance(m, s, p + 2)))
          return NULL;
        p += 4;
        continue;
      }
      if (p[1] == 'f') {
        p += 2;
        if (*p != '[')
          luaL_error(m->L, "missing '[' after '%%f' in pattern");
        const char *ep = fe_pat_class_end(m, p);
        int prev = s == m->src ? 0 : (unsigned char)s[-1];
        int cur = s < m->end ? (unsigned char)*s : 0;
        if (fe_pat_set(m, prev, p, ep - 1) || !fe_pat_set(m, cur, p, ep - 1))
          return NULL;
        p = ep;
        continue;
      }
      if (p[1] >= '0' && p[1] <= '9') {
        if (!(s = fe_pat_backref(m, s, (unsigned char)p[1])))
          return NULL;
        p += 2;
        continue;
      }
      break;
    }
    /* One character class, maybe repeated. */
    const char *ep = fe_pat_class_end(m, p);
    int ok = fe_pat_single(m, s, p, ep);
    switch (*ep) {
    case '?':
      if (ok) {
        const char *r = fe_pat_match(m, s + 1, ep + 1);
        if (r)
          return r;
      }
      p = ep + 1;
      continue;
    case '*':
      return fe_pat_max(m, s, p, ep);
    case '+':
      return ok ? fe_pat_max(m, s + 1, p, ep) : NULL;
    case '-':
      return fe_pat_min(m, s, p, ep);
    default:
      if (!ok)
        return NULL;
      s++;
      p = ep;
      continue;
    }
  }
}

static const char *fe_pat_match(fe_pat *m, const char *s, const char *p) {
  if (++m->depth > FE_PAT_MAXDEPTH)
    luaL_error(m->L, "pattern too complex");
  const char *r = fe_pat_step(m, s, p);
  m->depth--;
  return r;
}

static void fe_pat_init(fe_pat *m, lua_State *L, fe_lua_meter *meter, const char *s, size_t len) {
  m->L = L;
  m->meter = meter;
  m->src = s;
  m->end = s + len;
  m->depth = 0;
  m->ncap = 0;
}

static void fe_pat_push_one(fe_pat *m, int i, const char *s, const char *e) {
  if (i >= m->ncap) {
    if (i != 0)
      luaL_error(m->L, "invalid capture index");
    lua_pushlstring(m->L, s, (size_t)(e - s)); /* no captures: the whole match */
    return;
  }
  ptrdiff_t len = m->cap[i].len;
  if (len == FE_PAT_CAP_OPEN)
    luaL_error(m->L, "unfinished capture");
  if (len == FE_PAT_CAP_POSITION)
    lua_pushinteger(m->L, m->cap[i].at - m->src + 1);
  else
    lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes the captures (or the whole match s..e when there are none and s is given). */
static int fe_pat_push_all(fe_pat *m, const char *s, const char *e) {
  int n = m->ncap == 0 && s ? 1 : m->ncap;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++)
    fe_pat_push_one(m, i, s, e);
  return n;
}

/* A plain search, paying for the bytes it skips and compares. */
static const char *fe_pat_plain(fe_pat *m, const char *s, size_t ls, const char *p, size_t lp) {
  if (lp == 0)
    return s;
  if (lp > ls)
    return NULL;
  const char *last = s + (ls - lp);
  while (s <= last) {
    const char *c = memchr(s, *p, (size_t)(last - s) + 1);
    if (!c) {
      fe_pat_pay(m, last - s + 1);
      return NULL;
    }
    fe_pat_pay(m, (c - s) + (ptrdiff_t)lp);
    if (memcmp(c + 1, p + 1, lp - 1) == 0)
      return c;
    s = c + 1;
  }
  return NULL;
}

/* Where a search starts: init (1-based, negative from the end) clamped into the subject. */
static size_t fe_pat_start(lua_State *L, int arg, size_t len) {
  ptrdiff_t pos = luaL_optinteger(L, arg, 1);
  if (pos < 0)
    pos += (ptrdiff_t)len + 1;
  if (pos < 1)
    return 0;
  return (size_t)pos - 1 > len ? len : (size_t)pos - 1;
}

static fe_lua_meter *fe_pat_meter(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int fe_pat_find_aux(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = fe_pat_start(L, 3, ls);
  fe_pat m;
  fe_pat_init(&m, L, fe_pat_meter(L), s, ls);
  if (find && (lua_toboolean(L, 4) || !strpbrk(p, FE_PAT_SPECIALS))) {
    const char *r = fe_pat_plain(&m, s + init, ls - init, p, lp);
    if (r) {
      lua_pushinteger(L, r - s + 1);
      lua_pushinteger(L, r - s + (ptrdiff_t)lp);
      return 2;
    }
  } else {
    int anchor = *p == '^';
    const char *s1 = s + init;
    if (anchor)
      p++;
    do {
      m.ncap = 0;
      m.depth = 0;
      const char *e = fe_pat_match(&m, s1, p);
      if (e) {
        if (!find)
          return fe_pat_push_all(&m, s1, e);
        lua_pushinteger(L, s1 - s + 1);
        lua_pushinteger(L, e - s);
        return fe_pat_push_all(&m, NULL, NULL) + 2;
      }
    } while (s1++ < m.end && !anchor);
  }
  lua_pushnil(L);
  return 1;
}

static int fe_pat_find(lua_State *L) {
  return fe_pat_find_aux(L, 1);
}

static int fe_pat_match_fn(lua_State *L) {
  return fe_pat_find_aux(L, 0);
}

/* gmatch's iterator: upvalues meter, subject, pattern, next position (0-based). */
static int fe_pat_gmatch_next(lua_State *L) {
  size_t ls;
  const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
  const char *p = lua_tostring(L, lua_upvalueindex(3));
  fe_pat m;
  fe_pat_init(&m, L, fe_pat_meter(L), s, ls);
  for (size_t i = (size_t)lua_tointeger(L, lua_upvalueindex(4)); i <= ls; i++) {
    const char *src = s + i;
    m.ncap = 0;
    m.depth = 0;
    const char *e = fe_pat_match(&m, src, p);
    if (e) {
      lua_pushinteger(L, (e - s) + (e == src)); /* an empty match moves on by one */
      lua_replace(L, lua_upvalueindex(4));
      return fe_pat_push_all(&m, src, e);
    }
  }
  return 0;
}

static int fe_pat_gmatch(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, fe_pat_gmatch_next, 4);
  return 1;
}

/* A string replacement: %0 is the match, %1-%9 captures, %x the character x. */
static void fe_pat_add_string(fe_pat *m, luaL_Buffer *b, const char *s, const char *e) {
  size_t len;
  const char *r = lua_tolstring(m->L, 3, &len);
  fe_pat_pay(m, (ptrdiff_t)len);
  for (size_t i = 0; i < len; i++) {
    if (r[i] != FE_PAT_ESC) {
      luaL_addchar(b, r[i]);
      continue;
    }
    i++;
    if (r[i] < '0' || r[i] > '9') {
      luaL_addchar(b, r[i]);
    } else if (r[i] == '0') {
      fe_pat_pay(m, e - s);
      luaL_addlstring(b, s, (size_t)(e - s));
    } else {
      fe_pat_push_one(m, r[i] - '1', s, e);
      luaL_addvalue(b);
    }
  }
}

static void fe_pat_add_value(fe_pat *m, luaL_Buffer *b, const char *s, const char *e, int type) {
  lua_State *L = m->L;
  if (type == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    lua_call(L, fe_pat_push_all(m, s, e), 1);
  } else if (type == LUA_TTABLE) {
    fe_pat_push_one(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    fe_pat_add_string(m, b, s, e);
    return;
  }
  if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
    lua_pop(L, 1);
    lua_pushlstring(L, s, (size_t)(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  fe_pat_pay(m, (ptrdiff_t)lua_objlen(L, -1));
  luaL_addvalue(b);
}

static int fe_pat_gsub(lua_State *L) {
  size_t ls;
  const char *src = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checkstring(L, 2);
  int type = lua_type(L, 3);
  int max = luaL_optint(L, 4, (int)(ls + 1));
  luaL_argcheck(L, type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
                       type == LUA_TTABLE, 3, "string/function/table expected");
  int anchor = *p == '^';
  if (anchor)
    p++;
  fe_pat m;
  fe_pat_init(&m, L, fe_pat_meter(L), src, ls);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int n = 0;
  while (n < max) {
    m.ncap = 0;
    m.depth = 0;
    const char *e = fe_pat_match(&m, src, p);
    if (e) {
      n++;
      fe_pat_add_value(&m, &b, src, e, type);
    }
    if (e && e > src)
      src = e;
    else if (src < m.end)
      luaL_addchar(&b, *src++);
    else
      break;
    if (anchor)
      break;
  }
  fe_pat_pay(&m, m.end - src);
  luaL_addlstring(&b, src, (size_t)(m.end - src));
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

void fe_lua_pattern_push(lua_State *L, fe_lua_meter *meter) {
  static const luaL_Reg fns[] = {
      {"find", fe_pat_find}, {"match", fe_pat_match_fn}, {"gmatch", fe_pat_gmatch},
      {"gsub", fe_pat_gsub}, {NULL, NULL}};
  lua_createtable(L, 0, 4);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushlightuserdata(L, meter);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
}
