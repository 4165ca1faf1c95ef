#include "str/fe_json.h"

#include <string.h>

#include "fe_test.h"

#define MAXN 64

static fe_json_node nodes[MAXN];
static char arena[1024];
static char err[200];

static int parse(const char *text, fe_json_doc *doc, int depth) {
  err[0] = 0;
  return fe_json_parse(text, strlen(text), nodes, MAXN, depth, arena, doc, err, sizeof(err));
}

static int refused(const char *text, const char *why) {
  fe_json_doc doc;
  return parse(text, &doc, 8) == -1 && strstr(err, why) != NULL;
}

/* The body the admin API takes: an object with a list of paths and a pattern. */
static void test_admin_body(void) {
  fe_json_doc doc;
  FE_CHECK_EQ(parse(" {\"urls\": [\"/a.flv\", \"/b c\"], \"pattern\": \"/v/*\"} \n", &doc, 4), 0);
  FE_CHECK_EQ(doc.nodes[0].type, FE_JSON_OBJECT);
  FE_CHECK_EQ(doc.nodes[0].count, 2);
  int u = fe_json_get(&doc, 0, "urls");
  FE_CHECK(u > 0 && doc.nodes[u].type == FE_JSON_ARRAY && doc.nodes[u].count == 2);
  FE_CHECK(strcmp(doc.nodes[u + 1].s, "/a.flv") == 0);
  FE_CHECK(strcmp(doc.nodes[u + 2].s, "/b c") == 0);
  int p = fe_json_get(&doc, 0, "pattern");
  FE_CHECK(p > 0 && strcmp(doc.nodes[p].s, "/v/*") == 0);
  FE_CHECK_EQ(fe_json_get(&doc, 0, "missing"), -1);
  FE_CHECK_EQ(fe_json_get(&doc, (uint32_t)u, "urls"), -1); /* not an object */
}

/* Members are skipped whole: a nested value does not hide the key after it. */
static void test_get_skips_nested_values(void) {
  fe_json_doc doc;
  FE_CHECK_EQ(parse("{\"a\":{\"urls\":1},\"b\":[[1,2],{}],\"urls\":true}", &doc, 4), 0);
  int u = fe_json_get(&doc, 0, "urls");
  FE_CHECK(u > 0 && doc.nodes[u].type == FE_JSON_TRUE);
  FE_CHECK_EQ(doc.nodes[0].end, doc.n);
}

static void test_scalars(void) {
  fe_json_doc doc;
  FE_CHECK_EQ(parse("-12.5e1", &doc, 1), 0);
  FE_CHECK(doc.nodes[0].type == FE_JSON_NUMBER && doc.nodes[0].num == -125.0);
  FE_CHECK_EQ(parse("0", &doc, 1), 0);
  FE_CHECK_EQ(parse("null", &doc, 1), 0);
  FE_CHECK_EQ(doc.nodes[0].type, FE_JSON_NULL);
  FE_CHECK_EQ(parse("[true,false]", &doc, 1), 0);
  FE_CHECK_EQ(doc.nodes[1].type, FE_JSON_TRUE);
  FE_CHECK_EQ(doc.nodes[2].type, FE_JSON_FALSE);
}

static void test_string_escapes_decode(void) {
  fe_json_doc doc;
  FE_CHECK_EQ(parse("\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\"", &doc, 1), 0);
  FE_CHECK(strcmp(doc.nodes[0].s, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80") == 0);
  FE_CHECK_EQ(parse("\"x\\u0000y\"", &doc, 1), 0); /* a NUL is kept and counted */
  FE_CHECK_EQ(doc.nodes[0].len, 3);
  FE_CHECK_EQ(parse("\"h\xc3\xa9\"", &doc, 1), 0);
}

static void test_invalid_json_refused_with_reason(void) {
  FE_CHECK(refused("", "a value expected"));
  FE_CHECK(refused("   ", "a value expected"));
  FE_CHECK(refused("{\"urls\":[\"/a\",]}", "a value expected"));
  FE_CHECK(refused("{\"a\":1,}", "member name"));
  FE_CHECK(refused("{\"a\" 1}", "':' expected"));
  FE_CHECK(refused("{'a':1}", "member name"));
  FE_CHECK(refused("[1 2]", "',' or ']' expected"));
  FE_CHECK(refused("{\"a\":1", "'}' expected"));
  FE_CHECK(refused("{} {}", "text after the value"));
  FE_CHECK(refused("01", "text after the value"));
  FE_CHECK(refused("1.", "digit expected"));
  FE_CHECK(refused("-", "digit expected"));
  FE_CHECK(refused("NaN", "a value expected"));
  FE_CHECK(refused("tru", "a value expected"));
  FE_CHECK(refused("\"abc", "unterminated string"));
  FE_CHECK(refused("\"a\tb\"", "control byte"));
  FE_CHECK(refused("\"\\x\"", "unknown escape"));
  FE_CHECK(refused("\"\\u12\"", "4 hex digits"));
  FE_CHECK(refused("\"\\ud800\"", "high surrogate"));
  FE_CHECK(refused("\"\\udc00\"", "lone low surrogate"));
  FE_CHECK(refused("\"\xff\"", "invalid UTF-8"));
  FE_CHECK(refused("\"\xc0\xaf\"", "invalid UTF-8"));     /* overlong '/' */
  FE_CHECK(refused("\"\xed\xa0\x80\"", "invalid UTF-8")); /* a surrogate in UTF-8 */
  FE_CHECK(refused("{\"a\":1,\"a\":2}", "duplicate member \"a\""));
  /* the reason says where */
  FE_CHECK(refused("[1,?]", "at byte 3"));
}

static void test_bounds(void) {
  fe_json_doc doc;
  FE_CHECK_EQ(parse("[[[]]]", &doc, 3), 0);
  FE_CHECK_EQ(parse("[[[[]]]]", &doc, 3), -1);
  FE_CHECK(strstr(err, "nested deeper than 3") != NULL);
  char many[4 * MAXN + 8] = "[";
  for (int i = 0; i < MAXN; i++)
    strcat(many, i ? ",1" : "1");
  strcat(many, "]");
  FE_CHECK_EQ(parse(many, &doc, 2), -1); /* MAXN numbers and the array */
  FE_CHECK(strstr(err, "more than 64 values") != NULL);
  char longnum[80];
  memset(longnum, '1', 70);
  longnum[70] = 0;
  FE_CHECK_EQ(parse(longnum, &doc, 1), -1);
}

/* Whatever the input, the output is a JSON string that decodes back to it (valid UTF-8 kept,
 * anything else replaced). */
static void test_writer_escapes(void) {
  char out[256];
  fe_json_buf b;
  fe_json_init(&b, out, sizeof(out));
  fe_json_raw(&b, "{\"e\":");
  const char in[] = "q\"b\\n\n\x01\x7f\xc3\xa9\xff</";
  fe_json_str(&b, in, sizeof(in) - 1);
  fe_json_raw(&b, ",\"n\":");
  fe_json_u64(&b, 18446744073709551615ull);
  fe_json_raw(&b, "}");
  FE_CHECK(!b.overflow);
  FE_CHECK(strcmp(out, "{\"e\":\"q\\\"b\\\\n\\n\\u0001\\u007f\xc3\xa9\\ufffd</\","
                       "\"n\":18446744073709551615}") == 0);
  fe_json_doc doc;
  FE_CHECK_EQ(parse(out, &doc, 2), 0);
  FE_CHECK(strcmp(doc.nodes[2].s, "q\"b\\n\n\x01\x7f\xc3\xa9\xef\xbf\xbd</") == 0);
}

static void test_writer_overflow_is_sticky(void) {
  char out[8];
  fe_json_buf b;
  fe_json_init(&b, out, sizeof(out));
  fe_json_str(&b, "abcdefgh", 8);
  FE_CHECK(b.overflow);
  fe_json_raw(&b, "x");
  FE_CHECK(b.overflow && b.len < sizeof(out) && out[b.len] == 0);
}

int main(void) {
  FE_RUN(test_admin_body);
  FE_RUN(test_get_skips_nested_values);
  FE_RUN(test_scalars);
  FE_RUN(test_string_escapes_decode);
  FE_RUN(test_invalid_json_refused_with_reason);
  FE_RUN(test_bounds);
  FE_RUN(test_writer_escapes);
  FE_RUN(test_writer_overflow_is_sticky);
  return FE_DONE();
}
