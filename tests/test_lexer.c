/* The lexer: tokens, values, locations, statement ends, and bad input. */
#include <stdlib.h>
#include <string.h>

#include "lang_internal.h"
#include "testutil.h"

typedef struct lexed {
    const char *tokens;
    int n_errors;
    char *diag_text;    /* what the lexer printed */
} lexed;

static gim_arena *arena;

static lexed lex_n(const char *text, size_t len, bool with_loc) {
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    gim_diag d;
    gim_diag_init(&d, out);
    const gim_source *src = gim_diag_add_source(&d, "t.gim", text, len);
    const char *toks = lang_lex_dump(&d, arena, src, with_loc);
    lexed r = {gim_arena_strdup(arena, toks ? toks : "<null>"), d.n_errors, NULL};
    gim_diag_release(&d);
    fclose(out);
    r.diag_text = gim_arena_strdup(arena, buf);
    free(buf);
    return r;
}

static lexed lex(const char *text) { return lex_n(text, strlen(text), false); }

#define CHECK_TOKENS(text, expected)                                              \
    do {                                                                          \
        lexed r_ = lex(text);                                                     \
        if (strcmp(r_.tokens, expected) != 0)                                     \
            fprintf(stderr, "\nlexing %s\n got: %s\nwant: %s\n", #text, r_.tokens, expected); \
        CU_ASSERT_STRING_EQUAL(r_.tokens, expected);                              \
        CU_ASSERT_EQUAL(r_.n_errors, 0);                                          \
    } while (0)

static void test_names_and_keywords(void) {
    CHECK_TOKENS("model m { input x: [batch, 1] }",
                 "model name:m { input name:x : [ name:batch , int:1 ] }");
    CHECK_TOKENS("import def return output train true false labels _a1 batch",
                 "import def return output train true false name:labels name:_a1 name:batch");
    CHECK_TOKENS("a+b-c*d/e=f", "name:a + name:b - name:c * name:d / name:e = name:f");
}

static void test_numbers(void) {
    CHECK_TOKENS("1 2e-4 0.5 1e3 .5 3. 007 2E+2",
                 "int:1 float:0.00020000000000000001 float:0.5 float:1000 float:0.5 float:3 int:7 float:200");
    CHECK_TOKENS("9223372036854775807", "int:9223372036854775807");
    CHECK_TOKENS("-1", "- int:1");   /* the minus is an operator */
}

static void test_strings(void) {
    CHECK_TOKENS("\"fashion-mnist\"", "string:\"fashion-mnist\"");
    CHECK_TOKENS("\"a\\\"b\\\\c\\nd\\te\"", "string:\"a\\\"b\\\\c\\nd\\te\"");
    CHECK_TOKENS("\"\"", "string:\"\"");
    CHECK_TOKENS("\"# not a comment\"", "string:\"# not a comment\"");
}

static void test_comments_and_separators(void) {
    CHECK_TOKENS("x # a comment ( [\ny", "name:x SEP name:y");
    CHECK_TOKENS("\n\n# top\n\nx\n\n\ny\n\n", "name:x SEP name:y SEP");
    CHECK_TOKENS("x; y;; z;\n", "name:x SEP name:y SEP name:z SEP");
    CHECK_TOKENS("m {\n\n  x\n}", "name:m { name:x SEP }");
    CHECK_TOKENS("x\r\ny\r\n", "name:x SEP name:y SEP");
}

static void test_newlines_in_brackets(void) {
    /* Continuation lines inside ( ) and [ ] are one statement. */
    CHECK_TOKENS("f(a,\n  b\n)\n", "name:f ( name:a , name:b ) SEP");
    CHECK_TOKENS("[1,\n\n 2\n , 3]", "[ int:1 , int:2 , int:3 ]");
    CHECK_TOKENS("f(a\n  + b)", "name:f ( name:a + name:b )");
    CHECK_TOKENS("f(a, # why\n  b)", "name:f ( name:a , name:b )");
    /* A complete operand followed by a line that starts a statement: the
     * ')' is missing and the newline ends the statement. */
    CHECK_TOKENS("f(a\ny = 1\n", "name:f ( name:a SEP name:y = int:1 SEP");
    /* ...and the bracket stack is back in step: later newlines count. */
    CHECK_TOKENS("f(a\ny = g(1,\n2)\nz", "name:f ( name:a SEP name:y = name:g ( int:1 , int:2 ) SEP name:z");
}

static void test_locations(void) {
    lexed r = lex_n("ab\n  cd\n\tx = 1.5", strlen("ab\n  cd\n\tx = 1.5"), true);
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:ab@1:1 SEP@1:3 name:cd@2:3 SEP@2:5 name:x@3:2 =@3:4 float:1.5@3:6");
}

static void test_bad_characters(void) {
    lexed r = lex("x = 3 $ 4");
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:x = int:3 ERR int:4");
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:7: error: unexpected character '$'"));

    /* A run of bad bytes is one error; a NUL byte is a located error. */
    r = lex_n("a\0\0b @@ c", 9, false);
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:a ERR name:b ERR name:c");
    CU_ASSERT_EQUAL(r.n_errors, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:2: error: unexpected byte 0x00"));

    r = lex("caf\xc3\xa9");
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:caf ERR");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:4: error: unexpected byte 0xc3"));

    r = lex("a . b");
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:a ERR name:b");
    CU_ASSERT_EQUAL(r.n_errors, 1);
}

static void test_bad_literals(void) {
    lexed r = lex("99999999999999999999 9223372036854775808");
    CU_ASSERT_STRING_EQUAL(r.tokens, "int:0 int:0");
    CU_ASSERT_EQUAL(r.n_errors, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:22: error: integer literal 9223372036854775808 is too large"));

    r = lex("1e999");
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "number 1e999 is too large"));

    r = lex("3x 1e 2.5.1");
    CU_ASSERT_STRING_EQUAL(r.tokens, "ERR ERR ERR");
    CU_ASSERT_EQUAL(r.n_errors, 3);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "invalid number '3x'"));

    r = lex("x = \"abc\ny");
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:x = ERR SEP name:y");
    CU_ASSERT_EQUAL(r.n_errors, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:5: error: unterminated string"));

    r = lex("\"abc\\");     /* a backslash at the end of the file */
    CU_ASSERT_STRING_EQUAL(r.tokens, "ERR");
    CU_ASSERT_EQUAL(r.n_errors, 1);

    r = lex("\"a\\qb\"");
    CU_ASSERT_STRING_EQUAL(r.tokens, "ERR");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.diag_text, "t.gim:1:3: error: unknown escape sequence '\\q'"));
}

static void test_byte_order_mark(void) {
    lexed r = lex_n("\xEF\xBB\xBFx = 1", 8, true);
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:x@1:1 =@1:3 int:1@1:5");
    CU_ASSERT_EQUAL(r.n_errors, 0);
    r = lex("x \xEF\xBB\xBF");     /* not at the start: a bad byte */
    CU_ASSERT_STRING_EQUAL(r.tokens, "name:x ERR");
    CU_ASSERT_EQUAL(r.n_errors, 1);
}

static void test_empty(void) {
    CHECK_TOKENS("", "");
    CHECK_TOKENS("\n\n  \n# only a comment", "");
}

int main(void) {
    arena = gim_arena_new();
    static const gim_test tests[] = {
        {"names and keywords", test_names_and_keywords},
        {"numbers", test_numbers},
        {"strings", test_strings},
        {"comments and separators", test_comments_and_separators},
        {"newlines in brackets", test_newlines_in_brackets},
        {"locations", test_locations},
        {"bad characters", test_bad_characters},
        {"bad literals", test_bad_literals},
        {"byte order mark", test_byte_order_mark},
        {"empty input", test_empty},
        {NULL, NULL},
    };
    int rc = gim_run_suite("lexer", tests);
    gim_arena_free(arena);
    return rc;
}
