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

/* ---- voice ------------------------------------------------------------------------------- */

static void voice_session(void) {
    t_hal_init(&T2, &H2);
    boot();
    pair();
    session(0);
}

/* The listen_id of the last listen.* frame sent. */
static const char *sent_listen_id(void) {
    static char id[MC_LISTEN_ID_CAP];
    const char *p = strstr(t_last_frame(&T2), "\"listen_id\":\"");
    TEST_ASSERT_NOT_NULL(p);
    p += 13;
    size_t n = (size_t)(strchr(p, '"') - p);
    memcpy(id, p, n);
    id[n] = '\0';
    return id;
}

static int transcript(const char *id, const char *status) {
    char t[256];
    snprintf(t, sizeof t, "{\"type\":\"transcript\",\"listen_id\":\"%s\",\"message_id\":\"voice:%s\","
             "\"text\":\"what time is it\",\"status\":\"%s\"}", id, id, status);
    return text_in(t);
}

void test_device_voice_turn_frames_audio_and_caps_the_listen(void) {
    voice_session();
    TEST_ASSERT_NOT_NULL(strstr(T2.frames[0], "\"capabilities\":[\"text\",\"speaker\"]")); /* HAL plays */
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_device_audio_chunk(&D, 320)); /* no listen open */
    T2.nframes = 0;
    mc_device_event(&D, MC_EV_PTT_DOWN);
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, D.state);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CAPTURE_START, T2.audio_last);
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "{\"type\":\"listen.start\",\"listen_id\":\"l-"));
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "\"format\":\"pcm16\",\"sample_rate\":16000,\"channels\":1}"));
    char id[MC_LISTEN_ID_CAP];
    strcpy(id, sent_listen_id());
    TEST_ASSERT_EQUAL_INT(1, D.voice.pending);
    /* framing: at most MC_AUDIO_CHUNK_MAX per binary frame, whole samples */
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CHUNK_MAX, mc_device_audio_chunk(&D, 10000));
    TEST_ASSERT_EQUAL_INT(600, mc_device_audio_chunk(&D, 601));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_device_audio_chunk(&D, 1));
    mc_device_event(&D, MC_EV_PTT_UP);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CAPTURE_STOP, T2.audio_last);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_listen_stop(&D));
    char want[128];
    snprintf(want, sizeof want, "{\"type\":\"listen.stop\",\"listen_id\":\"%s\"}", id);
    TEST_ASSERT_EQUAL_STRING(want, t_last_frame(&T2));
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_device_audio_chunk(&D, 320)); /* closed */
    TEST_ASSERT_EQUAL_INT(MC_FRAME_TRANSCRIPT, transcript("l-other", "stored")); /* not ours: ignored */
    TEST_ASSERT_EQUAL_INT(1, D.voice.pending);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_TRANSCRIPT, transcript(id, "stored"));
    TEST_ASSERT_EQUAL_INT(0, D.voice.pending);
    TEST_ASSERT_EQUAL_INT(MC_ACK_STORED, D.voice.last_status);
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_device_listen_start(&D, 1)); /* answered: nothing to retry */
    /* a new turn gets a new id; the cap is max_listen_s (30 s at 16 kHz) of PCM16 */
    mc_device_event(&D, MC_EV_PTT_DOWN);
    TEST_ASSERT_TRUE(strcmp(id, sent_listen_id()) != 0);
    uint32_t sent = 0;
    int n;
    while ((n = mc_device_audio_chunk(&D, MC_AUDIO_CHUNK_MAX)) > 0) sent += (uint32_t)n;
    TEST_ASSERT_EQUAL_INT(0, n);
    TEST_ASSERT_EQUAL_UINT32(30u * 16000u * 2u, sent);
    TEST_ASSERT_NOT_NULL(strstr(t_last_frame(&T2), "\"type\":\"listen.stop\"")); /* the cap ended the turn */
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CAPTURE_STOP, T2.audio_last);
    int stops = t_count_frames(&T2, "listen.stop");
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_listen_stop(&D)); /* the release after the cap: nothing more */
    TEST_ASSERT_EQUAL_INT(stops, t_count_frames(&T2, "listen.stop"));
    /* cancel: listen.cancel with the id, nothing pending */
    mc_device_event(&D, MC_EV_PTT_DOWN);
    strcpy(id, sent_listen_id());
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_listen_cancel(&D));
    snprintf(want, sizeof want, "{\"type\":\"listen.cancel\",\"listen_id\":\"%s\"}", id);
    TEST_ASSERT_EQUAL_STRING(want, t_last_frame(&T2));
    TEST_ASSERT_EQUAL_INT(0, D.voice.pending);
    TEST_ASSERT_EQUAL_INT(0, (int)D.bad_frames);
}

void test_device_voice_retry_reuses_the_listen_id_after_reboot(void) {
    voice_session();
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_device_listen_start(&D, 1));
    mc_device_event(&D, MC_EV_PTT_DOWN);
    char id[MC_LISTEN_ID_CAP];
    strcpy(id, sent_listen_id());
    TEST_ASSERT_EQUAL_INT(4000, mc_device_audio_chunk(&D, 4000));
    mc_device_event(&D, MC_EV_PTT_UP);
    mc_device_listen_stop(&D);
    /* the link drops before the transcript, then the board reboots */
    mc_device_disconnected(&D);
    boot();
    TEST_ASSERT_EQUAL_INT(1, D.voice.pending);
    TEST_ASSERT_EQUAL_STRING(id, D.voice.listen_id);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_device_listen_start(&D, 1)); /* no session yet */
    mc_device_event(&D, MC_EV_NET_UP);
    session(0);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_listen_start(&D, 1));
    TEST_ASSERT_EQUAL_STRING(id, sent_listen_id());
    TEST_ASSERT_EQUAL_INT(4000, mc_device_audio_chunk(&D, 4000));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_listen_stop(&D));
    TEST_ASSERT_EQUAL_INT(MC_FRAME_TRANSCRIPT, transcript(id, "duplicate"));
    TEST_ASSERT_EQUAL_INT(MC_ACK_DUPLICATE, D.voice.last_status);
    boot(); /* answered: forgotten for good */
    TEST_ASSERT_EQUAL_INT(0, D.voice.pending);
}

static int voice_error(const char *code, const char *id, int transient) {
    char t[256];
    snprintf(t, sizeof t, "{\"type\":\"error\",\"code\":\"%s\",\"detail\":\"x\",\"listen_id\":\"%s\",\"transient\":%s}",
             code, id, transient ? "true" : "false");
    return text_in(t);
}

void test_device_voice_errors(void) {
    static const struct {
        const char *code;
        int transient;
        int keeps; /* the turn may be sent again under its id */
    } cases[] = {{"no_listen", 0, 1},      {"busy", 1, 1},       {"stt_failed", 1, 1},
                 {"stt_failed", 0, 0},     {"audio_too_long", 0, 0}, {"voice_off", 0, 0}};
    voice_session();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mc_device_event(&D, MC_EV_PTT_DOWN);
        char id[MC_LISTEN_ID_CAP];
        strcpy(id, sent_listen_id());
        TEST_ASSERT_EQUAL_INT(MC_FRAME_ERROR, voice_error(cases[i].code, "l-someone-else", cases[i].transient));
        TEST_ASSERT_EQUAL_INT_MESSAGE(1, D.voice.recording, cases[i].code); /* another turn's answer */
        TEST_ASSERT_EQUAL_INT(MC_FRAME_ERROR, voice_error(cases[i].code, id, cases[i].transient));
        TEST_ASSERT_EQUAL_INT_MESSAGE(0, D.voice.recording, cases[i].code);
        TEST_ASSERT_EQUAL_INT_MESSAGE(cases[i].keeps, D.voice.pending, cases[i].code);
        TEST_ASSERT_EQUAL_INT(mc_voice_error(cases[i].code), D.voice.last_error);
        TEST_ASSERT_EQUAL_STRING(cases[i].code, T2.display[MC_DISPLAY_ERROR]);
        TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_device_audio_chunk(&D, 320));
        TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, D.state);
    }
    TEST_ASSERT_EQUAL_INT(0, (int)D.bad_frames);
}

static void speak_start(int seq, int bytes) {
    char t[200];
    snprintf(t, sizeof t, "{\"type\":\"speak.start\",\"seq\":%d,\"format\":\"pcm16\",\"sample_rate\":16000,"
             "\"channels\":1,\"bytes\":%d}", seq, bytes);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_SPEAK_START, text_in(t));
}

static int speak_end(int seq) {
    char t[64];
    snprintf(t, sizeof t, "{\"type\":\"speak.end\",\"seq\":%d}", seq);
    return text_in(t);
}

void test_device_speech_plays_through_the_audio_hal(void) {
    static uint8_t pcm[4096];
    for (size_t i = 0; i < sizeof pcm; i++) pcm[i] = (uint8_t)(i * 7);
    voice_session();
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_device_on_binary(&D, pcm, 100)); /* no speech open */
    TEST_ASSERT_EQUAL_INT(1, (int)D.bad_frames);
    event(1, "It is 10:04.");
    speak_start(1, 5000);
    TEST_ASSERT_EQUAL_INT(MC_ST_SPEAKING, D.state);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_PLAY_START, T2.audio_last);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_on_binary(&D, pcm, 4096));
    TEST_ASSERT_EQUAL_INT(MC_ERR_TOO_BIG, mc_device_on_binary(&D, pcm, 4096)); /* past `bytes` */
    TEST_ASSERT_EQUAL_UINT32(4096, T2.audio_written);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_on_binary(&D, pcm, 904));
    TEST_ASSERT_EQUAL_UINT32(5000, T2.audio_written);
    TEST_ASSERT_EQUAL_MEMORY(pcm, T2.audio_first, 4);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, speak_end(2)); /* another seq */
    TEST_ASSERT_EQUAL_INT(MC_FRAME_SPEAK_END, speak_end(1));
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_PLAY_END, T2.audio_last);
    TEST_ASSERT_EQUAL_INT(MC_ST_LISTENING, D.state);
    TEST_ASSERT_EQUAL_INT(1, (int)D.voice.speeches);
    /* barge-in: push-to-talk during speech stops playback; the rest of it is not played */
    event(2, "A long answer.");
    speak_start(2, 8000);
    mc_device_on_binary(&D, pcm, 4096);
    mc_device_event(&D, MC_EV_PTT_DOWN);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_CAPTURE_START, T2.audio_last);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_device_on_binary(&D, pcm, 3904)); /* accepted, not played */
    TEST_ASSERT_EQUAL_UINT32(5000 + 4096, T2.audio_written);
    TEST_ASSERT_EQUAL_INT(MC_FRAME_SPEAK_END, speak_end(2));
    TEST_ASSERT_EQUAL_INT(2, (int)D.bad_frames); /* the frame outside a speech and the one past `bytes` */
    /* a speech cut by a lost link is over; tts_failed leaves the text shown */
    mc_device_listen_cancel(&D);
    event(3, "Third.");
    speak_start(3, 100);
    mc_device_disconnected(&D);
    TEST_ASSERT_EQUAL_INT(MC_AUDIO_PLAY_STOP, T2.audio_last);
    TEST_ASSERT_EQUAL_INT(0, D.voice.speaking);
    session(3);
    event(4, "Fourth.");
    TEST_ASSERT_EQUAL_INT(MC_FRAME_ERROR,
                          text_in("{\"type\":\"error\",\"code\":\"tts_failed\",\"detail\":\"x\",\"seq\":4,"
                                  "\"transient\":true}"));
    TEST_ASSERT_EQUAL_STRING("Fourth.", T2.display[MC_DISPLAY_LAST_MESSAGE]);
    TEST_ASSERT_EQUAL_INT(MC_VERR_TTS_FAILED, D.voice.last_error);
}
