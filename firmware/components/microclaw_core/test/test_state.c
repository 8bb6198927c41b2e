/* Tests: seq, the persisted queue, slots, manifests and OTA, pairing (RAM HAL: see test_hal.h). */
#include <stdio.h>
#include <string.h>

#include "microclaw_core.h"
#include "test_hal.h"
#include "unity.h"
#include "vectors.h"

static t_hal T;
static mc_hal_t H;

void setUp(void) { t_hal_init(&T, &H); }
void tearDown(void) {}

void test_seq_classify_and_persist(void) {
    TEST_ASSERT_EQUAL_INT(MC_SEQ_NEW, mc_seq_classify(0, 1));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_DUPLICATE, mc_seq_classify(5, 5));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_DUPLICATE, mc_seq_classify(5, 2));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_DUPLICATE, mc_seq_classify(0, 0));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_GAP, mc_seq_classify(5, 7));
    mc_seq_t s;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_seq_load(&s, &H));
    TEST_ASSERT_TRUE(s.last_seen == 0);
    TEST_ASSERT_EQUAL_INT(MC_SEQ_NEW, mc_seq_check(&s, 1));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_seq_commit(&s, &H, 1));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_GAP, mc_seq_check(&s, 3));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_seq_commit(&s, &H, 3));
    TEST_ASSERT_EQUAL_INT(MC_SEQ_DUPLICATE, mc_seq_check(&s, 2));
    TEST_ASSERT_EQUAL_INT(1, (int)s.gaps);
    TEST_ASSERT_EQUAL_INT(1, (int)s.duplicates);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_seq_commit(&s, &H, 3));
    mc_seq_t again; /* reboot */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_seq_load(&again, &H));
    TEST_ASSERT_TRUE(again.last_seen == 3);
    TEST_ASSERT_EQUAL_INT(0, mc_seq_on_welcome(&again, &H, 3));
    TEST_ASSERT_EQUAL_INT(1, mc_seq_on_welcome(&again, &H, 2)); /* host log reset */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_seq_load(&again, &H));
    TEST_ASSERT_TRUE(again.last_seen == 0);
    /* a failed write keeps the old value */
    T.sets_until_fail = 0;
    TEST_ASSERT_EQUAL_INT(MC_ERR_IO, mc_seq_commit(&again, &H, 1));
    TEST_ASSERT_TRUE(again.last_seen == 0);
}

static mc_ring_t R;

static void text_of(uint32_t i, char *id, char *text) {
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_get(&R, &H, i, id, 32, text, MC_MSG_TEXT_CAP));
}

void test_ring_order_ack_and_reboot(void) {
    char id[4][32], gid[32], text[MC_MSG_TEXT_CAP];
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 4));
    TEST_ASSERT_EQUAL_INT(0, (int)mc_ring_count(&R));
    for (int i = 0; i < 3; i++) {
        char t[8];
        snprintf(t, sizeof t, "msg %d", i);
        TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_push(&R, &H, t, id[i], sizeof id[i]));
        TEST_ASSERT_TRUE(mc_valid_message_id(id[i]));
    }
    TEST_ASSERT_TRUE(strcmp(id[0], id[1]) != 0);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_ack(&R, &H, id[1])); /* out of order */
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_ring_ack(&R, &H, id[1]));
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_ring_ack(&R, &H, "nope-1"));
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_ring_ack(&R, &H, "zzzzzzzzzzzz-0"));
    TEST_ASSERT_EQUAL_INT(2, (int)mc_ring_count(&R));
    /* reboot: same storage, a new ring */
    mc_ring_t before = R;
    memset(&R, 0, sizeof R);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 9));
    TEST_ASSERT_EQUAL_INT(4, (int)R.slots); /* the stored capacity wins */
    TEST_ASSERT_EQUAL_INT(2, (int)mc_ring_count(&R));
    TEST_ASSERT_EQUAL_INT(before.first, R.first);
    text_of(0, gid, text);
    TEST_ASSERT_EQUAL_STRING(id[0], gid);
    TEST_ASSERT_EQUAL_STRING("msg 0", text);
    text_of(1, gid, text);
    TEST_ASSERT_EQUAL_STRING(id[2], gid);
    TEST_ASSERT_EQUAL_STRING("msg 2", text);
    TEST_ASSERT_EQUAL_INT(MC_ERR_NOT_FOUND, mc_ring_get(&R, &H, 2, gid, 32, text, sizeof text));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_ack(&R, &H, id[0]));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_ack(&R, &H, id[2]));
    TEST_ASSERT_EQUAL_INT(0, (int)mc_ring_count(&R));
    TEST_ASSERT_EQUAL_INT(R.next, R.first);
}

void test_ring_full_drops_oldest_and_counts(void) {
    char id[32], gid[32], text[MC_MSG_TEXT_CAP];
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 3));
    for (int i = 0; i < 7; i++) {
        char t[8];
        snprintf(t, sizeof t, "m%d", i);
        TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_push(&R, &H, t, id, sizeof id));
    }
    TEST_ASSERT_EQUAL_INT(3, (int)mc_ring_count(&R));
    TEST_ASSERT_EQUAL_INT(4, (int)R.dropped);
    text_of(0, gid, text);
    TEST_ASSERT_EQUAL_STRING("m4", text);
    text_of(2, gid, text);
    TEST_ASSERT_EQUAL_STRING("m6", text);
    memset(&R, 0, sizeof R);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 3));
    TEST_ASSERT_EQUAL_INT(4, (int)R.dropped); /* the drop counter survives a reboot */
    /* a too-long or invalid text is refused and changes nothing */
    static char longtext[MC_MSG_TEXT_CAP + 1];
    memset(longtext, 'a', MC_MSG_TEXT_CAP);
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_ring_push(&R, &H, longtext, id, sizeof id));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_ring_push(&R, &H, "", id, sizeof id));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_ring_push(&R, &H, "\xc3", id, sizeof id));
    TEST_ASSERT_EQUAL_INT(3, (int)mc_ring_count(&R));
    /* the largest text fits and round-trips */
    longtext[MC_MSG_TEXT_CAP - 1] = '\0';
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_push(&R, &H, longtext, id, sizeof id));
    text_of(2, gid, text);
    TEST_ASSERT_EQUAL_STRING(longtext, text);
}

void test_ring_power_loss_between_slot_and_header(void) {
    char id[32], gid[32], text[MC_MSG_TEXT_CAP];
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 2));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_push(&R, &H, "a", id, sizeof id));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_push(&R, &H, "b", id, sizeof id));
    /* the third push overwrites a's slot, then power is lost before its header write */
    T.sets_until_fail = 1;
    TEST_ASSERT_EQUAL_INT(MC_ERR_IO, mc_ring_push(&R, &H, "c", id, sizeof id));
    T.sets_until_fail = -1;
    memset(&R, 0, sizeof R);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 2));
    /* a was overwritten: counted as dropped; b is intact; c was never accepted */
    TEST_ASSERT_EQUAL_INT(1, (int)mc_ring_count(&R));
    TEST_ASSERT_EQUAL_INT(1, (int)R.dropped);
    text_of(0, gid, text);
    TEST_ASSERT_EQUAL_STRING("b", text);
    /* the header itself unreadable: an empty queue, the device keeps running */
    uint8_t junk[3] = {1, 2, 3};
    H.storage_set(H.ctx, "rq_hdr", junk, 3);
    memset(&R, 0, sizeof R);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ring_open(&R, &H, 2));
    TEST_ASSERT_EQUAL_INT(0, (int)mc_ring_count(&R));
}

static mc_slots_t S;

void test_slots_stage_test_and_mark_valid(void) {
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_FIRMWARE, "1.0.0", 3));
    TEST_ASSERT_EQUAL_INT(0, S.active);
    TEST_ASSERT_EQUAL_INT(1, mc_slots_inactive(&S));
    TEST_ASSERT_EQUAL_INT(MC_BOOT_ACTIVE, mc_slots_on_boot(&S, &H));
    TEST_ASSERT_EQUAL_INT(MC_ERR_ARG, mc_slots_stage(&S, &H, 0, "1.1.0")); /* never the running slot */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_stage(&S, &H, 1, "1.1.0"));
    TEST_ASSERT_EQUAL_INT(1, T.boot[MC_KIND_FIRMWARE]);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_FIRMWARE, "1.0.0", 3)); /* reboot */
    TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, mc_slots_on_boot(&S, &H));
    TEST_ASSERT_EQUAL_INT(1, mc_slots_current(&S));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_mark_valid(&S, &H));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_FIRMWARE, "1.0.0", 3));
    TEST_ASSERT_EQUAL_INT(1, S.active);
    TEST_ASSERT_EQUAL_STRING("1.1.0", S.active_version);
    TEST_ASSERT_EQUAL_STRING("1.0.0", S.other_version);
    TEST_ASSERT_EQUAL_INT(MC_BOOT_ACTIVE, mc_slots_on_boot(&S, &H));
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_slots_mark_valid(&S, &H));
    /* the host halts 1.1.0: revert to the other slot, and never back to the halted one */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_revert(&S, &H));
    TEST_ASSERT_EQUAL_INT(0, S.active);
    TEST_ASSERT_EQUAL_INT(0, T.boot[MC_KIND_FIRMWARE]);
    TEST_ASSERT_EQUAL_STRING("1.0.0", S.active_version);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_slots_revert(&S, &H));
}

void test_slots_roll_back_after_n_bad_boots(void) {
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_MODEL, "1.0.0", 2));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_stage(&S, &H, 1, "2.0.0"));
    for (int boot = 0; boot < 2; boot++) { /* boots that never reach mark_valid */
        TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_MODEL, "1.0.0", 2));
        TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, mc_slots_on_boot(&S, &H));
    }
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_MODEL, "1.0.0", 2));
    TEST_ASSERT_EQUAL_INT(MC_BOOT_ROLLED_BACK, mc_slots_on_boot(&S, &H));
    TEST_ASSERT_EQUAL_INT(0, T.boot[MC_KIND_MODEL]);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_MODEL, "1.0.0", 2));
    TEST_ASSERT_EQUAL_INT(MC_SLOT_NONE, S.pending);
    TEST_ASSERT_EQUAL_STRING("2.0.0", S.failed_version);
    TEST_ASSERT_EQUAL_INT(1, (int)S.rollbacks);
    TEST_ASSERT_EQUAL_INT(MC_BOOT_ACTIVE, mc_slots_on_boot(&S, &H));
    /* self-test failure rolls back at once */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_stage(&S, &H, 1, "2.0.1"));
    TEST_ASSERT_EQUAL_INT(MC_BOOT_TESTING, mc_slots_on_boot(&S, &H));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_mark_bad(&S, &H));
    TEST_ASSERT_EQUAL_INT(0, T.boot[MC_KIND_MODEL]);
    TEST_ASSERT_EQUAL_STRING("1.0.0", S.active_version);
    /* a corrupt record is reported, not guessed */
    uint8_t junk[4] = {0};
    H.storage_set(H.ctx, "slot_model", junk, 4);
    TEST_ASSERT_EQUAL_INT(MC_ERR_CORRUPT, mc_slots_load(&S, &H, MC_KIND_MODEL, "1.0.0", 2));
}

void test_manifests_signed_by_python_verify_in_c(void) {
    mc_manifest_t m;
    int checked = 0;
    for (size_t i = 0; i < V_MANIFEST_N; i++) {
        const v_manifest_t *v = &V_MANIFEST[i];
        int r = mc_manifest_verify(v->data, v->len, v->sig, V_PUBKEY, &m);
        TEST_ASSERT_EQUAL_INT_MESSAGE(v->expect, r, v->name);
        checked++;
    }
    TEST_ASSERT_EQUAL_INT((int)V_MANIFEST_N, checked);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len, V_MANIFEST[0].sig,
                                                   V_PUBKEY, &m));
    TEST_ASSERT_EQUAL_INT(MC_KIND_FIRMWARE, m.kind);
    TEST_ASSERT_EQUAL_STRING("1.2.0", m.version);
    TEST_ASSERT_EQUAL_STRING(V_BOARD, m.board);
    TEST_ASSERT_EQUAL_UINT32(V_FW_IMAGE_LEN, m.size);
    uint8_t wrong_key[32];
    memcpy(wrong_key, V_PUBKEY, 32);
    wrong_key[0] ^= 1;
    TEST_ASSERT_EQUAL_INT(MC_ERR_SIGNATURE, mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len,
                                                              V_MANIFEST[0].sig, wrong_key, &m));
}

void test_ota_check_board_versions_size(void) {
    mc_manifest_t m;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len, V_MANIFEST[0].sig,
                                                   V_PUBKEY, &m));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_check(&m, V_BOARD, "1.1.9", 0));
    TEST_ASSERT_EQUAL_INT(MC_ERR_BOARD, mc_ota_check(&m, "esp32-s3-devkit", "1.1.9", 0));
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_ota_check(&m, V_BOARD, "1.2.0", 0));  /* not newer */
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_ota_check(&m, V_BOARD, "1.10.0", 0)); /* numeric, not text */
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_ota_check(&m, V_BOARD, "0.9.9", 0));  /* below min_version */
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_ota_check(&m, V_BOARD, "sim-1", 0));
    TEST_ASSERT_EQUAL_INT(MC_ERR_SIZE, mc_ota_check(&m, V_BOARD, "1.1.9", 4096));
    uint32_t v[3];
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_version_parse("1.2", v));
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_version_parse("1.2.3.4", v));
    TEST_ASSERT_EQUAL_INT(MC_ERR_VERSION, mc_version_parse("123456.0.0", v));
    TEST_ASSERT_TRUE(mc_version_cmp("1.10.0", "1.9.9") > 0);
}

static mc_ota_t O;

static void write_chunks(const uint8_t *img, size_t len, size_t chunk, int expect_last) {
    int r = MC_OK;
    for (size_t off = 0; off < len; off += chunk) {
        size_t take = len - off < chunk ? len - off : chunk;
        r = mc_ota_write(&O, &H, img + off, take);
        if (r < 0) break;
    }
    TEST_ASSERT_EQUAL_INT(expect_last, r);
}

void test_ota_streams_verifies_and_stages(void) {
    mc_manifest_t m;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len, V_MANIFEST[0].sig,
                                                   V_PUBKEY, &m));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_FIRMWARE, "1.1.0", 3));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_begin(&O, &H, &S, &m));
    TEST_ASSERT_EQUAL_INT(1, O.slot);
    write_chunks(V_FW_IMAGE, V_FW_IMAGE_LEN, 333, MC_OK);
    TEST_ASSERT_EQUAL_INT(100, mc_ota_progress(&O));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_finish(&O, &H, &S));
    TEST_ASSERT_EQUAL_INT(MC_OTA_STAGED, O.state);
    TEST_ASSERT_EQUAL_INT(1, S.pending);
    TEST_ASSERT_EQUAL_INT(1, T.boot[MC_KIND_FIRMWARE]);
    TEST_ASSERT_EQUAL_MEMORY(V_FW_IMAGE, T.part[MC_KIND_FIRMWARE][1], V_FW_IMAGE_LEN);
    /* a second OTA while one waits for its self-test is refused */
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_ota_begin(&O, &H, &S, &m));
}

void test_ota_refuses_corrupt_short_and_long_images(void) {
    mc_manifest_t m;
    static uint8_t img[8192];
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len, V_MANIFEST[0].sig,
                                                   V_PUBKEY, &m));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_slots_load(&S, &H, MC_KIND_FIRMWARE, "1.1.0", 3));
    /* one flipped byte: hash mismatch, nothing staged */
    memcpy(img, V_FW_IMAGE, V_FW_IMAGE_LEN);
    img[1234] ^= 0x40;
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_begin(&O, &H, &S, &m));
    write_chunks(img, V_FW_IMAGE_LEN, 512, MC_OK);
    TEST_ASSERT_EQUAL_INT(MC_ERR_HASH, mc_ota_finish(&O, &H, &S));
    TEST_ASSERT_EQUAL_INT(MC_SLOT_NONE, S.pending);
    TEST_ASSERT_EQUAL_INT(0, T.boot[MC_KIND_FIRMWARE]);
    /* short */
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_begin(&O, &H, &S, &m));
    write_chunks(V_FW_IMAGE, V_FW_IMAGE_LEN - 1, 512, MC_OK);
    TEST_ASSERT_EQUAL_INT(MC_ERR_SIZE, mc_ota_finish(&O, &H, &S));
    /* long: the byte past the manifest's size is refused before it is written */
    memcpy(img, V_FW_IMAGE, V_FW_IMAGE_LEN);
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_ota_begin(&O, &H, &S, &m));
    write_chunks(img, V_FW_IMAGE_LEN + 1, 1000, MC_ERR_SIZE);
    TEST_ASSERT_EQUAL_INT(MC_OTA_FAILED, O.state);
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_ota_write(&O, &H, img, 1));
    TEST_ASSERT_EQUAL_INT(MC_SLOT_NONE, S.pending);
}

static mc_pairing_t P;
static mc_frame_t F;
static char OUT[MC_FRAME_OUT_CAP];

static void feed(const char *json) { TEST_ASSERT_EQUAL_INT_MESSAGE(MC_OK, mc_frame_decode(json, strlen(json), &F), json); }

void test_pairing_steps(void) {
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_is_paired(&H));
    int n = mc_pairing_start(&P, &H, "kitchen-1", 1000, OUT, sizeof OUT);
    TEST_ASSERT_GREATER_THAN(0, n);
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"pair.begin\",\"device_id\":\"kitchen-1\"}", OUT);
    feed("{\"type\":\"pair.code\",\"code\":\"ABCD-EFGH\",\"secret\":\"ssssssssssssssssssss\",\"expires_in_s\":300.0}");
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_STRING("ABCD-EFGH", T.display[MC_DISPLAY_PAIR_CODE]);
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_tick(&P, &H, OUT, sizeof OUT)); /* not due yet */
    T.now += 1000;
    n = mc_pairing_tick(&P, &H, OUT, sizeof OUT);
    TEST_ASSERT_GREATER_THAN(0, n);
    TEST_ASSERT_EQUAL_STRING("{\"type\":\"pair.poll\",\"code\":\"ABCD-EFGH\",\"secret\":\"ssssssssssssssssssss\"}", OUT);
    feed("{\"type\":\"pair.pending\"}");
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    /* a new pre-auth connection polls at once */
    TEST_ASSERT_GREATER_THAN(0, mc_pairing_on_connect(&P, &H, OUT, sizeof OUT));
    TEST_ASSERT_NOT_NULL(strstr(OUT, "pair.poll"));
    feed("{\"type\":\"pair.token\",\"token\":\"tttttttttttttttttttttttt\",\"expires_in_s\":120.0}");
    n = mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT);
    TEST_ASSERT_GREATER_THAN(0, n);
    TEST_ASSERT_NOT_NULL(strstr(OUT, "\"type\":\"pair.csr\",\"token\":\"tttttttttttttttttttttttt\""));
    TEST_ASSERT_NOT_NULL(strstr(OUT, "BEGIN CERTIFICATE REQUEST"));
    /* a certificate for another device is refused */
    mc_pairing_t copy = P;
    feed("{\"type\":\"pair.cert\",\"device_id\":\"hall-2\",\"cert\":\"-----BEGIN CERTIFICATE-----\\nX\",\"ca\":\"\"}");
    TEST_ASSERT_EQUAL_INT(MC_ERR_REFUSED, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_is_paired(&H));
    P = copy;
    feed("{\"type\":\"pair.cert\",\"device_id\":\"kitchen-1\",\"cert\":\"-----BEGIN CERTIFICATE-----\\nX\","
         "\"ca\":\"-----BEGIN CERTIFICATE-----\\nCA\"}");
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_INT(MC_PAIR_DONE, P.state);
    TEST_ASSERT_EQUAL_INT(1, mc_pairing_is_paired(&H));
    TEST_ASSERT_EQUAL_INT(MC_OK, mc_pairing_forget(&H));
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_is_paired(&H));
}

void test_pairing_errors_and_expiry(void) {
    mc_pairing_start(&P, &H, "kitchen-1", 1000, OUT, sizeof OUT);
    feed("{\"type\":\"pair.token\",\"token\":\"tttttttttttttttttttttttt\"}");
    TEST_ASSERT_EQUAL_INT(MC_ERR_STATE, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT)); /* out of order */
    feed("{\"type\":\"error\",\"code\":\"rate_limited\",\"detail\":\"wait\"}");
    TEST_ASSERT_EQUAL_INT(MC_ERR_REFUSED, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_STRING("rate_limited", P.error);
    TEST_ASSERT_EQUAL_STRING("rate_limited", T.display[MC_DISPLAY_ERROR]);
    mc_pairing_start(&P, &H, "kitchen-1", 1000, OUT, sizeof OUT);
    feed("{\"type\":\"pair.code\",\"code\":\"ABCD-EFGH\",\"secret\":\"ssssssssssssssssssss\",\"expires_in_s\":5}");
    mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT);
    T.now += 5000;
    TEST_ASSERT_EQUAL_INT(0, mc_pairing_tick(&P, &H, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_INT(MC_PAIR_FAILED, P.state);
    TEST_ASSERT_EQUAL_STRING("code_expired", P.error);
    /* the HAL cannot make a CSR: failed, nothing sent */
    mc_pairing_start(&P, &H, "kitchen-1", 1000, OUT, sizeof OUT);
    feed("{\"type\":\"pair.code\",\"code\":\"ABCD-EFGH\",\"secret\":\"ssssssssssssssssssss\"}");
    mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT);
    T.csr_fail = 1;
    feed("{\"type\":\"pair.token\",\"token\":\"tttttttttttttttttttttttt\"}");
    TEST_ASSERT_EQUAL_INT(MC_ERR_REFUSED, mc_pairing_on_frame(&P, &H, &F, OUT, sizeof OUT));
    TEST_ASSERT_EQUAL_STRING("csr_failed", P.error);
}
