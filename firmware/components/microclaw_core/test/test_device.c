/* Tests: the device state machine and the whole core driven through mc_device (RAM HAL). */
#include <stdio.h>
#include <string.h>

#include "microclaw_core.h"
#include "test_hal.h"
#include "unity.h"
#include "vectors.h"

static t_hal T2;
static mc_hal_t H2;
static mc_device_t D;
static mc_config_t C;

static void boot(void) {
    memset(&C, 0, sizeof C);
    strcpy(C.device_id, "kitchen-1");
    strcpy(C.board, V_BOARD);
    strcpy(C.fw_version, "1.1.0");
    strcpy(C.model_version, "2.0.0");
    memcpy(C.ota_pubkey, V_PUBKEY, 32);
    C.ring_slots = 4;
    C.poll_interval_ms = 500;
    C.max_boot_tries = 2;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_init(&D, &H2, &C));
}

static int text_in(const char *json) { return mc_device_on_text(&D, json, strlen(json)); }

static void pair(void) {
    T2.nframes = 0;
    mc_device_event(&D, MC_EV_NET_UP);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_connected(&D));
    TEST_ASSERT_EQUAL_INT(MC_ST_PAIRING, D.state);
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "pair.begin"));
    TEST_ASSERT_EQUAL_INT(MC_FRAME_PAIR_CODE, text_in("{\"type\":\"pair.code\",\"code\":\"ABCD-EFGH\","
                                                       "\"secret\":\"ssssssssssssssssssss\",\"expires_in_s\":300.0}"));
    T2.now += 500;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_tick(&D));
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "pair.poll"));
    TEST_ASSERT_EQUAL_INT(MC_FRAME_PAIR_TOKEN,
                          text_in("{\"type\":\"pair.token\",\"token\":\"tttttttttttttttttttttttt\"}"));
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "pair.csr"));
    TEST_ASSERT_EQUAL_INT(MC_FRAME_PAIR_CERT, text_in("{\"type\":\"pair.cert\",\"device_id\":\"kitchen-1\","
                                                       "\"cert\":\"-----BEGIN CERTIFICATE-----\\nX\",\"ca\":\"\"}"));
    TEST_ASSERT_EQUAL_INT(MC_ST_CONNECTING, D.state);
    mc_device_disconnected(&D);
}

static void session(int64_t host_last_seq) {
    T2.nframes = 0;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_connected(&D));
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[0], "\"type\":\"device.hello\""));
    char w[128];
    snprintf(w, sizeof w, "{\"type\":\"welcome\",\"device_id\":\"kitchen-1\",\"last_seq\":%d,\"protocol\":1}",
             (int)host_last_seq);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_WELCOME, text_in(w));
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, D.state);
}

static void event(int seq, const char *text) {
    char e[256];
    snprintf(e, sizeof e, "{\"type\":\"event\",\"seq\":%d,\"kind\":\"message\",\"body\":{\"text\":\"%s\"},\"ts_ms\":1}",
             seq, text);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_EVENT, text_in(e));
}

void test_state_machine_table(void) {
    TEST_ASSERT_EQUAL_INT(MC_ST_CONNECTING, mc_state_next(MC_ST_IDLE, MC_EV_NET_UP, 0));
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_state_next(MC_ST_IDLE, MC_EV_WELCOME, MC_F_PAIRED));
    TEST_ASSERT_EQUAL_INT(MC_ST_PAIRING, mc_state_next(MC_ST_CONNECTING, MC_EV_CONNECTED, 0));
    TEST_ASSERT_EQUAL_INT(MC_ST_CONNECTING, mc_state_next(MC_ST_CONNECTING, MC_EV_CONNECTED, MC_F_PAIRED));
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_state_next(MC_ST_CONNECTING, MC_EV_WELCOME, 0));
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, mc_state_next(MC_ST_CONNECTING, MC_EV_WELCOME, MC_F_PAIRED));
    TEST_ASSERT_EQUAL_INT(MC_ST_CONNECTING, mc_state_next(MC_ST_PAIRING, MC_EV_PAIRED, 0));
    TEST_ASSERT_EQUAL_INT(MC_ST_SPEAKING, mc_state_next(MC_ST_LISTENING, MC_EV_REPLY, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, mc_state_next(MC_ST_SPEAKING, MC_EV_PTT_DOWN, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, mc_state_next(MC_ST_SPEAKING, MC_EV_PLAY_DONE, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_UPGRADING, mc_state_next(MC_ST_LISTENING, MC_EV_OTA_START, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_UPGRADING, mc_state_next(MC_ST_UPGRADING, MC_EV_NET_DOWN, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, mc_state_next(MC_ST_UPGRADING, MC_EV_OTA_FAILED, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_CONNECTING, mc_state_next(MC_ST_UPGRADING, MC_EV_OTA_FAILED, MC_F_PAIRED));
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_state_next(MC_ST_UPGRADING, MC_EV_PTT_DOWN, 3));
    TEST_ASSERT_EQUAL_INT(MC_ST_IDLE, mc_state_next(MC_ST_LISTENING, MC_EV_NET_DOWN, 3));
    for (int s = MC_ST_IDLE; s <= MC_ST_ERROR; s++) {
        TEST_ASSERT_EQUAL_INT(MC_ST_ERROR, mc_state_next(s, MC_EV_FAULT, 0));
    }
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_state_next(MC_ST_ERROR, MC_EV_NET_UP, 0));
    TEST_ASSERT_EQUAL_INT(MC_ST_IDLE, mc_state_next(MC_ST_ERROR, MC_EV_RESET, 0));
    TEST_ASSERT_EQUAL_STRING("upgrading", mc_state_name(MC_ST_UPGRADING));
}

void test_device_pairs_then_sessions_events_once_in_order(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    session(0);
    event(1, "one");
    event(2, "two");
    TEST_ASSERT_EQUAL_STRING("two", T2.display[MC_DISPLAY_LAST_MESSAGE]);
    TEST_ASSERT_EQUAL_INT(MC_ST_SPEAKING, D.state);
    event(2, "two again"); /* duplicate: ignored */
    TEST_ASSERT_EQUAL_STRING("two", T2.display[MC_DISPLAY_LAST_MESSAGE]);
    TEST_ASSERT_EQUAL_INT(1, (int)D.seq.duplicates);
    event(4, "four"); /* a gap is processed and counted */
    TEST_ASSERT_EQUAL_INT(1, (int)D.seq.gaps);
    TEST_ASSERT_EQUAL_INT(3, (int)D.events_shown);
    mc_device_event(&D, MC_EV_PTT_DOWN); /* barge-in */
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, D.state);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CAPTURE_START, T2.audio_last);
    /* reboot: last_seen survives; the hello says so */
    mc_device_disconnected(&D);
    boot();
    mc_device_event(&D, MC_EV_NET_UP);
    session(4);
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[0], "\"last_seen_seq\":4"));
    event(4, "four again");
    TEST_ASSERT_EQUAL_INT(0, (int)D.events_shown);
    /* the host's log was reset: start from 0 */
    mc_device_disconnected(&D);
    session(1);
    TEST_ASSERT_TRUE(D.seq.last_seen == 0);
    event(1, "fresh");
    TEST_ASSERT_EQUAL_STRING("fresh", T2.display[MC_DISPLAY_LAST_MESSAGE]);
}

void test_device_offline_queue_flushes_after_reconnect_and_reboot(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    char id1[32], id2[32], id3[32];
    /* offline: queued, nothing sent */
    T2.nframes = 0;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_say(&D, "first", id1, sizeof id1));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_say(&D, "second", id2, sizeof id2));
    TEST_ASSERT_EQUAL_INT(0, T2.nframes);
    /* reboot before any connection: the queue is in storage */
    boot();
    TEST_ASSERT_EQUAL_INT(2, (int)mc_ring_count(&D.ring));
    mc_device_event(&D, MC_EV_NET_UP);
    session(0);
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, id1));
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, id2));
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[1], "\"text\":\"first\""));
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[2], "\"text\":\"second\""));
    /* online: sent at once, once */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_say(&D, "third", id3, sizeof id3));
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, id3));
    char ack[96];
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"message_id\":\"%s\",\"status\":\"stored\"}", id1);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_ACK, text_in(ack));
    TEST_ASSERT_EQUAL_INT(2, (int)mc_ring_count(&D.ring));
    /* the link drops before the other acks: both are resent on the next session, not the acked one */
    mc_device_disconnected(&D);
    session(0);
    TEST_ASSERT_EQUAL_INT(0, t_count_frames(&T2, id1));
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, id2));
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, id3));
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"message_id\":\"%s\",\"status\":\"duplicate\"}", id2);
    text_in(ack);
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"message_id\":\"%s\",\"status\":\"rejected\",\"detail\":\"x\"}", id3);
    text_in(ack);
    TEST_ASSERT_EQUAL_INT(0, (int)mc_ring_count(&D.ring));
}

void test_device_bad_frames_change_nothing(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    session(0);
    event(1, "one");
    mc_device_t before = D;
    static const char *const bad[] = {"not json", "{\"type\":\"event\",\"seq\":2}", "[[[[[[[[1]]]]]]]]", "{}",
                                      "{\"type\":\"event\",\"seq\":2,\"kind\":\"message\",\"body\":{\"text\":\"\xff\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_ASSERT_TRUE(text_in(bad[i]) < 0);
    }
    TEST_ASSERT_EQUAL_INT(5, (int)D.bad_frames);
    TEST_ASSERT_TRUE(D.seq.last_seen == before.seq.last_seen);
    TEST_ASSERT_EQUAL_INT(before.state, D.state);
    event(2, "two"); /* and it keeps working */
    TEST_ASSERT_EQUAL_STRING("two", T2.display[MC_DISPLAY_LAST_MESSAGE]);
    /* an event before the welcome is refused */
    mc_device_disconnected(&D);
    T2.nframes = 0;
    mc_device_connected(&D);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, text_in("{\"type\":\"event\",\"seq\":3,\"kind\":\"message\",\"body\":{\"text\":\"x\"}}"));
}

static char offer_frame[2048];

static const char *offer(size_t idx, const uint8_t *sig) {
    char b64[100];
    mc_b64_encode(sig, 64, b64, sizeof b64);
    char esc[1200];
    mc_jw_t w;
    mc_jw_init(&w, esc, sizeof esc);
    mc_jw_strn(&w, V_MANIFEST[idx].data, V_MANIFEST[idx].len);
    TEST_ASSERT_GREATER_THAN(0, mc_jw_finish(&w));
    snprintf(offer_frame, sizeof offer_frame,
             "{\"type\":\"ota.offer\",\"kind\":\"%s\",\"manifest\":%s,\"signature\":\"%s\"}",
             idx == 1 ? "model" : "firmware", esc, b64);
    return offer_frame;
}

void test_device_ota_install_self_test_and_rollback(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    session(0);
    /* a forged offer: refused, nothing to download */
    uint8_t sig[64];
    memcpy(sig, V_MANIFEST[0].sig, 64);
    sig[0] ^= 1;
    TEST_ASSERT_EQUAL_INT(MC_ERR_SIGNATURE, text_in(offer(0, sig)));
    TEST_ASSERT_EQUAL_INT(0, D.offer_ready);
    /* the real one: 1.1.0 -> 1.2.0 */
    TEST_ASSERT_EQUAL_INT(MC_FRAME_OTA_OFFER, text_in(offer(0, V_MANIFEST[0].sig)));
    TEST_ASSERT_EQUAL_INT(1, D.offer_ready);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_begin(&D));
    TEST_ASSERT_EQUAL_INT(MC_ST_UPGRADING, D.state);
    for (size_t off = 0; off < V_FW_IMAGE_LEN; off += 1024) {
        size_t n = V_FW_IMAGE_LEN - off < 1024 ? V_FW_IMAGE_LEN - off : 1024;
        TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_write(&D, V_FW_IMAGE + off, n));
    }
    TEST_ASSERT_EQUAL_STRING("100", T2.display[MC_DISPLAY_OTA_PROGRESS]);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_finish(&D));
    TEST_ASSERT_EQUAL_INT(1, T2.boot[MC_KIND_FIRMWARE]);
    /* reboot into 1.2.0, which fails its self-test twice (max_boot_tries 2), then rolls back */
    boot();
    TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, D.boot_fw);
    TEST_ASSERT_EQUAL_STRING("1.2.0", mc_device_version(&D, MC_KIND_FIRMWARE));
    boot();
    TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, D.boot_fw);
    boot();
    TEST_ASSERT_EQUAL_INT(MC_BOOT_ROLLED_BACK, D.boot_fw);
    TEST_ASSERT_EQUAL_INT(0, T2.boot[MC_KIND_FIRMWARE]);
    TEST_ASSERT_EQUAL_STRING("1.1.0", mc_device_version(&D, MC_KIND_FIRMWARE));
    /* the failure is reported after the next welcome, until the gateway acks it */
    mc_device_event(&D, MC_EV_NET_UP);
    session(0);
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, "\"type\":\"ota.result\",\"kind\":\"firmware\",\"version\":\"1.2.0\",\"ok\":false"));
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[0], "\"fw_version\":\"1.1.0\""));
    TEST_ASSERT_EQUAL_INT(MC_FRAME_OTA_ACK, text_in("{\"type\":\"ota.ack\",\"kind\":\"firmware\",\"version\":\"1.2.0\",\"status\":\"stored\"}"));
    mc_device_disconnected(&D);
    session(0);
    TEST_ASSERT_EQUAL_INT(0, t_count_frames(&T2, "ota.result"));
}

void test_device_model_ota_self_test_passes(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    session(0);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_OTA_OFFER, text_in(offer(1, V_MANIFEST[1].sig)));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_begin(&D));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_write(&D, V_MODEL_IMAGE, V_MODEL_IMAGE_LEN));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_ota_finish(&D));
    TEST_ASSERT_EQUAL_INT(1, T2.boot[MC_KIND_MODEL]);
    boot(); /* the model is loaded at boot; its golden vector answers: valid */
    TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, D.boot_model);
    mc_device_event(&D, MC_EV_NET_UP);
    session(0);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_self_test(&D, MC_KIND_MODEL, 1, NULL));
    TEST_ASSERT_EQUAL_STRING("2.0.1", mc_device_version(&D, MC_KIND_MODEL));
    TEST_ASSERT_EQUAL_INT(1, t_count_frames(&T2, "\"type\":\"ota.result\",\"kind\":\"model\",\"version\":\"2.0.1\",\"ok\":true"));
    /* an offer not newer than what runs is refused */
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, text_in(offer(1, V_MANIFEST[1].sig)));
    /* the host halts 2.0.1: back to 2.0.0 */
    TEST_ASSERT_EQUAL_INT(MC_FRAME_OTA_ROLLBACK, text_in("{\"type\":\"ota.rollback\",\"kind\":\"model\",\"version\":\"2.0.1\",\"reason\":\"halted\"}"));
    TEST_ASSERT_EQUAL_STRING("2.0.0", mc_device_version(&D, MC_KIND_MODEL));
    TEST_ASSERT_EQUAL_INT(0, T2.boot[MC_KIND_MODEL]);
}
