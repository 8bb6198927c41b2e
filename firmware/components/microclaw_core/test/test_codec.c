/* Tests: JSON reader/writer, base64, frames (against the gateway's own frames), SHA-256. */
#include <string.h>

#include "microclaw_core.h"
#include "unity.h"
#include "vectors.h"

static mc_json_tok_t toks[MC_JSON_MAX_TOKENS];

static int parse(const char *s) {
    return mc_json_parse(s, strlen(s), toks, MC_JSON_MAX_TOKENS, 4096, MC_JSON_MAX_DEPTH);
}

void test_json_valid_documents(void) {
    TEST_ASSERT_EQUAL_INT(1, parse("{}"));
    TEST_ASSERT_EQUAL_INT(1, parse(" [ ] "));
    int n = parse("{\"a\":[1,-2.5e3,true,false,null],\"b\":{\"c\":\"d\"}}");
    TEST_ASSERT_EQUAL_INT(12, n);
    TEST_ASSERT_EQUAL_INT(MC_JSON_OBJECT, toks[0].type);
    TEST_ASSERT_EQUAL_INT(2, toks[0].count);
    const char *s = "{\"a\":[1,-2.5e3,true,false,null],\"b\":{\"c\":\"d\"}}";
    int b = mc_json_find(s, toks, n, 0, "b");
    TEST_ASSERT_EQUAL_INT(MC_JSON_OBJECT, toks[b].type);
    int c = mc_json_find(s, toks, n, b, "c");
    char out[8];
    TEST_ASSERT_EQUAL_INT(1, mc_json_str(s, toks, c, out, sizeof out));
    TEST_ASSERT_EQUAL_STRING("d", out);
    TEST_ASSERT_EQUAL_INT(-1, mc_json_find(s, toks, n, 0, "zz"));
}

void test_json_depth_limit_matches_gateway(void) {
    TEST_ASSERT_GREATER_THAN(0, parse("[[[[[[1]]]]]]"));              /* 6 containers */
    TEST_ASSERT_EQUAL_INT(MC_ERR_DEPTH, parse("[[[[[[[1]]]]]]]"));      /* 7 */
    TEST_ASSERT_EQUAL_INT(MC_ERR_DEPTH, parse("{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{}}}}}}}"));
}

void test_json_size_and_token_limits(void) {
    char big[200];
    memset(big, ' ', sizeof big);
    big[0] = '1';
    TEST_ASSERT_EQUAL_INT(MC_ERR_TOO_BIG, mc_json_parse(big, sizeof big, toks, 8, 100, 6));
    TEST_ASSERT_EQUAL_INT(MC_ERR_TOO_BIG, mc_json_parse("[1,2,3,4]", 9, toks, 3, 100, 6));
}

void test_json_rejects_malformed(void) {
    static const char *const bad[] = {
        "",          "{",          "{\"a\"}",      "{\"a\":}",      "[1,]",         "{\"a\":1,}",
        "[01]",      "[1.]",       "[.5]",         "[-]",           "[1e]",         "tru",
        "nul",       "[\"\\x\"]",  "[\"\\u12\"]",  "[\"\\ud800\"]", "[\"\\udc00x\"]", "{} {}",
        "{}x",       "[NaN]",      "[Infinity]",   "{'a':1}",       "[\"a\tb\"]",   "[\"\xff\"]",
        "[\"\xc0\xaf\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\xe2\x82\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = parse(bad[i]);
        if (r >= 0) TEST_FAIL_MESSAGE(bad[i]);
    }
}

void test_json_strings_unescape_to_utf8(void) {
    const char *s = "[\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\udca1\"]";
    TEST_ASSERT_EQUAL_INT(2, parse(s));
    char out[32];
    int n = mc_json_str(s, toks, 1, out, sizeof out);
    TEST_ASSERT_EQUAL_STRING("a\"b\\c/d\n\xc3\xa9\xf0\x9f\x92\xa1", out);
    TEST_ASSERT_EQUAL_INT((int)strlen(out), n);
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOSPACE, mc_json_str(s, toks, 1, out, 5));
    TEST_ASSERT_EQUAL_INT(2, parse("[\"\\u0000\"]"));
    TEST_ASSERT_EQUAL_INT(MC_ERR_FIELD, mc_json_str("[\"\\u0000\"]", toks, 1, out, sizeof out));
}

void test_json_integers_bounded(void) {
    int64_t v = 0;
    const char *s = "[9223372036854775807,-9223372036854775808,9223372036854775808,1.5,1e3]";
    TEST_ASSERT_EQUAL_INT(6, parse(s));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_json_int(s, toks, 1, &v));
    TEST_ASSERT_TRUE(v == INT64_MAX);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_json_int(s, toks, 2, &v));
    TEST_ASSERT_TRUE(v == INT64_MIN);
    TEST_ASSERT_EQUAL_INT(MC_ERR_FIELD, mc_json_int(s, toks, 3, &v));
    TEST_ASSERT_EQUAL_INT(MC_ERR_FIELD, mc_json_int(s, toks, 4, &v));
    TEST_ASSERT_EQUAL_INT(MC_ERR_FIELD, mc_json_int(s, toks, 5, &v));
}

void test_json_writer_matches_python_compact(void) {
    char buf[128];
    mc_jw_t w;
    mc_jw_init(&w, buf, sizeof buf);
    mc_jw_obj_open(&w);
    mc_jw_key(&w, "a");
    mc_jw_str(&w, "q\"\\\n\x01\xc3\xa9\x7f");
    mc_jw_key(&w, "b");
    mc_jw_arr_open(&w);
    mc_jw_int(&w, -12);
    mc_jw_bool(&w, 1);
    mc_jw_arr_close(&w);
    mc_jw_obj_close(&w);
    int n = mc_jw_finish(&w);
    /* json.dumps({"a": "q\"\\\n\x01é\x7f", "b": [-12, True]}, separators=(",",":"), ensure_ascii=False) */
    TEST_ASSERT_EQUAL_STRING("{\"a\":\"q\\\"\\\\\\n\\u0001\xc3\xa9\x7f\",\"b\":[-12,true]}", buf);
    TEST_ASSERT_EQUAL_INT((int)strlen(buf), n);
    mc_jw_init(&w, buf, 8);
    mc_jw_str(&w, "0123456789");
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOSPACE, mc_jw_finish(&w));
    mc_jw_init(&w, buf, sizeof buf);
    mc_jw_str(&w, "\xff");
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_jw_finish(&w));
}

void test_base64_roundtrip_and_strict(void) {
    uint8_t data[5] = {0, 1, 2, 253, 255}, back[8];
    char text[16];
    TEST_ASSERT_EQUAL_INT(8, mc_b64_encode(data, 5, text, sizeof text));
    TEST_ASSERT_EQUAL_STRING("AAEC/f8=", text);
    TEST_ASSERT_EQUAL_INT(5, mc_b64_decode(text, 8, back, sizeof back));
    TEST_ASSERT_EQUAL_MEMORY(data, back, 5);
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_b64_decode("AAE", 3, back, sizeof back));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_b64_decode("A=AA", 4, back, sizeof back));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_b64_decode("AA*A", 4, back, sizeof back));
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOSPACE, mc_b64_decode("AAECAw==", 8, back, 2));
}

static mc_frame_t frame;

void test_frames_from_the_gateway_decode(void) {
    for (size_t i = 0; i < V_FRAME_N; i++) {
        const v_frame_t *v = &V_FRAME[i];
        int r = mc_frame_decode(v->frame, v->len, &frame);
        TEST_ASSERT_EQUAL_INT_MESSAGE(MC_OK, r, v->name);
        TEST_ASSERT_EQUAL_INT_MESSAGE(v->type, frame.type, v->name);
        const char *got = "";
        switch (frame.type) {
        case MC_FRAME_PAIR_CODE: got = frame.code; TEST_ASSERT_TRUE(frame.expires_in_s == 300); break;
        case MC_FRAME_PAIR_TOKEN: got = frame.token; TEST_ASSERT_TRUE(frame.expires_in_s == 120); break;
        case MC_FRAME_WELCOME: got = frame.device_id; TEST_ASSERT_TRUE(frame.last_seq == 44); break;
        case MC_FRAME_EVENT: got = frame.text; TEST_ASSERT_TRUE(frame.seq == 42 && frame.has_ts); break;
        case MC_FRAME_ACK: got = frame.message_id; break;
        case MC_FRAME_ERROR: got = frame.error_code; break;
        case MC_FRAME_OTA_OFFER: got = frame.manifest; TEST_ASSERT_EQUAL_INT(MC_KIND_FIRMWARE, frame.kind); break;
        case MC_FRAME_OTA_ROLLBACK: got = frame.version; TEST_ASSERT_EQUAL_INT(MC_KIND_MODEL, frame.kind); break;
        default: break;
        }
        TEST_ASSERT_EQUAL_STRING_MESSAGE(v->field, got, v->name);
    }
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_frame_decode(V_FRAME[6].frame, V_FRAME[6].len, &frame));
    TEST_ASSERT_EQUAL_INT(MC_ACK_REJECTED, frame.ack);
    TEST_ASSERT_EQUAL_STRING("text: too long", frame.detail);
}

void test_frames_every_truncation_is_refused_cleanly(void) {
    /* every proper prefix of every gateway frame is invalid JSON: refused, never a crash */
    for (size_t i = 0; i < V_FRAME_N; i++) {
        for (size_t cut = 0; cut < V_FRAME[i].len; cut++) {
            int r = mc_frame_decode(V_FRAME[i].frame, cut, &frame);
            TEST_ASSERT_TRUE_MESSAGE(r < 0, V_FRAME[i].name);
        }
    }
}

void test_frames_refuse_bad_shapes(void) {
    static const char *const bad[] = {
        "[]", "{}", "{\"type\":1}", "{\"type\":\"event\",\"seq\":\"1\",\"kind\":\"message\",\"body\":{\"text\":\"x\"}}",
        "{\"type\":\"event\",\"seq\":0,\"kind\":\"message\",\"body\":{\"text\":\"x\"}}",
        "{\"type\":\"event\",\"seq\":1,\"kind\":\"message\"}", "{\"type\":\"welcome\",\"device_id\":\"a-b-c\"}",
        "{\"type\":\"welcome\",\"device_id\":\"a-b-c\",\"last_seq\":-1}", "{\"type\":\"ack\",\"status\":\"stored\"}",
        "{\"type\":\"pair.code\",\"code\":\"ABCD\"}", "{\"type\":\"ota.offer\",\"kind\":\"bios\",\"manifest\":\"{}\",\"signature\":\"\"}",
        "{\"type\":\"ota.offer\",\"kind\":\"model\",\"manifest\":\"{}\",\"signature\":\"AAAA\"}",
        "{\"type\":\"pair.code\",\"code\":\"ABCDEFGHIJKLMNOPQRSTUVWXYZ\",\"secret\":\"x\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = mc_frame_decode(bad[i], strlen(bad[i]), &frame);
        if (r >= 0) TEST_FAIL_MESSAGE(bad[i]);
    }
    static char huge[MC_FRAME_IN_MAX + 2];
    memset(huge, ' ', sizeof huge);
    memcpy(huge, "{}", 2);
    TEST_ASSERT_EQUAL_INT(MC_ERR_TOO_BIG, mc_frame_decode(huge, sizeof huge, &frame));
}

void test_encoders_write_what_the_gateway_accepts(void) {
    char out[512];
    int n = mc_enc_hello(out, sizeof out, "kitchen-1", 41, "1.2.0", "m-7", "", "text");
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"device.hello\",\"device_id\":\"kitchen-1\",\"last_seen_seq\":41,"
                             "\"fw_version\":\"1.2.0\",\"model_version\":\"m-7\",\"capabilities\":[\"text\"]}",
                             out);
    TEST_ASSERT_EQUAL_INT((int)strlen(out), n);
    n = mc_enc_hello(out, sizeof out, "kitchen-1", 0, "1.2.0", "", V_BOARD, "text,audio");
    TEST_ASSERT_GREATER_THAN(0, n);
    TEST_ASSERT_NOT_NULL(strstr(out, "\"capabilities\":[\"text\",\"audio\"],\"board\":\"" V_BOARD "\""));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_hello(out, sizeof out, "Kitchen", 0, "", "", "", "text"));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_hello(out, sizeof out, "ab", 0, "", "", "", "text"));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_hello(out, sizeof out, "-ab", 0, "", "", "", "text"));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_message(out, sizeof out, "m 1", "hi", -1));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_message(out, sizeof out, "m-1", "", -1));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_message(out, sizeof out, "m-1", "\xff", -1));
    n = mc_enc_message(out, sizeof out, "m-1", "turn on \"the\" lights", 5);
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"message\",\"message_id\":\"m-1\",\"text\":\"turn on \\\"the\\\" lights\","
                             "\"ts_ms\":5}", out);
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOSPACE, mc_enc_message(out, 20, "m-1", "hello", -1));
    n = mc_enc_ota_result(out, sizeof out, MC_KIND_MODEL, "2.0.1", 0, "self-test failed", 3);
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"ota.result\",\"kind\":\"model\",\"version\":\"2.0.1\",\"ok\":false,"
                             "\"reason\":\"self-test failed\",\"metrics\":{\"boot_failures\":3}}", out);
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_enc_pair_poll(out, sizeof out, "ABC", "s"));
    TEST_ASSERT_GREATER_THAN(0, mc_enc_pair_begin(out, sizeof out, "kitchen-1"));
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"pair.begin\",\"device_id\":\"kitchen-1\"}", out);
}

void test_sha256_matches_hashlib(void) {
    uint8_t d[32];
    for (size_t i = 0; i < V_SHA_N; i++) {
        mc_sha256(V_SHA[i].data, V_SHA[i].len, d);
        TEST_ASSERT_EQUAL_MEMORY(V_SHA[i].digest, d, 32);
        /* streamed in uneven chunks */
        static const size_t chunks[] = {1, 7, 64, 63, 65, 200};
        mc_sha256_t c;
        mc_sha256_init(&c);
        size_t off = 0, k = 0;
        while (off < V_SHA[i].len) {
            size_t take = chunks[k++ % 6];
            if (take > V_SHA[i].len - off) take = V_SHA[i].len - off;
            mc_sha256_update(&c, V_SHA[i].data + off, take);
            off += take;
        }
        mc_sha256_final(&c, d);
        TEST_ASSERT_EQUAL_MEMORY(V_SHA[i].digest, d, 32);
    }
}

/* Deterministic mutations of the gateway's frames (byte flips, inserted quotes, brackets and
 * backslashes, cuts, duplication): the decoder returns OK or an error, never reads or writes out
 * of bounds (ASan/UBSan on the host) and always NUL-terminates what it filled. */
void test_frames_random_mutations_never_crash(void) {
    static char buf[1024];
    static const char inserts[] = "\"\\{}[],:0-eu\xc3\xff\x00 ";
    uint32_t rnd = 12345;
    int accepted = 0;
    for (int iter = 0; iter < 3000; iter++) {
        const v_frame_t *v = &V_FRAME[(size_t)iter % V_FRAME_N];
        if (v->len >= sizeof buf / 2) continue;
        memcpy(buf, v->frame, v->len);
        size_t len = v->len;
        int edits = 1 + (int)(iter % 4);
        for (int e = 0; e < edits; e++) {
            rnd = rnd * 1103515245u + 12345u;
            size_t at = (rnd >> 8) % (len + 1);
            switch ((rnd >> 4) % 4) {
            case 0:
                if (at < len) buf[at] = (char)(buf[at] ^ (1 << ((rnd >> 20) % 8)));
                break;
            case 1:
                if (len + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = inserts[(rnd >> 12) % (sizeof inserts - 1)];
                    len++;
                }
                break;
            case 2:
                len = at;
                break;
            default:
                if (len * 2 < sizeof buf) {
                    memcpy(buf + len, buf, len);
                    len *= 2;
                }
            }
        }
        int r = mc_frame_decode(buf, len, &frame);
        if (r == MC_OK) {
            accepted++;
            TEST_ASSERT_NOT_NULL(memchr(frame.text, '\0', sizeof frame.text));
            TEST_ASSERT_NOT_NULL(memchr(frame.detail, '\0', sizeof frame.detail));
            TEST_ASSERT_NOT_NULL(memchr(frame.manifest, '\0', sizeof frame.manifest));
        } else {
            TEST_ASSERT_TRUE(r < 0 && r >= MC_ERR_REFUSED);
        }
    }
    TEST_ASSERT_TRUE(accepted > 0); /* some mutations stay valid (e.g. a flipped letter in a text) */
}
