/* The device state machine and the glue between the core's modules (mc_device.h). */
#include "mc_device.h"

#include "mc_internal.h"

static const char *const STATE_NAMES[] = {"idle",     "connecting", "pairing", "listening",
                                          "speaking", "upgrading",  "error"};

const char *mc_state_name(int state) {
    return state >= 0 && state <= MC_ST_ERROR ? STATE_NAMES[state] : "unknown";
}

int mc_state_next(int state, int event, int flags) {
    int paired = (flags & MC_F_PAIRED) != 0;
    if (state < MC_ST_IDLE || state > MC_ST_ERROR) return MC_ERR_ARG;
    if (event == MC_EV_FAULT) return MC_ST_ERROR;
    if (state == MC_ST_ERROR) return event == MC_EV_RESET ? MC_ST_IDLE : MC_ERR_STATE;
    if (event == MC_EV_NET_DOWN) return state == MC_ST_UPGRADING ? MC_ST_UPGRADING : MC_ST_IDLE;
    switch (state) {
    case MC_ST_IDLE:
        return event == MC_EV_NET_UP ? MC_ST_CONNECTING : MC_ERR_STATE;
    case MC_ST_CONNECTING:
        if (event == MC_EV_CONNECTED) return paired ? MC_ST_CONNECTING : MC_ST_PAIRING;
        if (event == MC_EV_WELCOME && paired) return MC_ST_LISTENING;
        if (event == MC_EV_DISCONNECTED || event == MC_EV_NET_UP) return MC_ST_CONNECTING;
        return MC_ERR_STATE;
    case MC_ST_PAIRING:
        if (event == MC_EV_PAIRED) return MC_ST_CONNECTING;
        if (event == MC_EV_DISCONNECTED || event == MC_EV_CONNECTED) return MC_ST_PAIRING;
        return MC_ERR_STATE;
    case MC_ST_LISTENING:
    case MC_ST_SPEAKING:
        if (event == MC_EV_REPLY) return MC_ST_SPEAKING;
        if (event == MC_EV_PLAY_DONE || event == MC_EV_PTT_DOWN || event == MC_EV_PTT_UP) return MC_ST_LISTENING;
        if (event == MC_EV_DISCONNECTED) return MC_ST_CONNECTING;
        if (event == MC_EV_OTA_START) return MC_ST_UPGRADING;
        return MC_ERR_STATE;
    case MC_ST_UPGRADING:
        if (event == MC_EV_OTA_DONE || event == MC_EV_DISCONNECTED || event == MC_EV_REPLY) return MC_ST_UPGRADING;
        if (event == MC_EV_OTA_FAILED) return (flags & MC_F_CONNECTED) ? MC_ST_LISTENING : MC_ST_CONNECTING;
        return MC_ERR_STATE;
    default:
        return MC_ERR_STATE;
    }
}

static int flags_of(const mc_device_t *d) {
    return (mc_pairing_is_paired(d->hal) ? MC_F_PAIRED : 0) | (d->welcomed ? MC_F_CONNECTED : 0);
}

int mc_device_event(mc_device_t *d, int event) {
    int next = mc_state_next(d->state, event, flags_of(d));
    if (next < 0) return next;
    if (next != d->state) {
        if (event == MC_EV_PTT_DOWN && d->state == MC_ST_SPEAKING && d->hal->audio_ctl) {
            d->hal->audio_ctl(d->hal->ctx, MC_AUDIO_PLAY_STOP); /* barge-in */
        }
        d->state = next;
        mc_show(d->hal, MC_DISPLAY_STATE, mc_state_name(next));
    }
    if (d->hal->audio_ctl) {
        if (event == MC_EV_PTT_DOWN) d->hal->audio_ctl(d->hal->ctx, MC_AUDIO_CAPTURE_START);
        if (event == MC_EV_PTT_UP) d->hal->audio_ctl(d->hal->ctx, MC_AUDIO_CAPTURE_STOP);
    }
    return next;
}

static int send_out(mc_device_t *d, int n) {
    if (n <= 0) return n;
    if (d->hal->net_send(d->hal->ctx, d->out, (size_t)n) < 0) return MC_ERR_IO;
    return MC_OK;
}

/* The stored OTA report (sent after each welcome until ota.ack): kind u8, ok u8, tries u8, version, NUL, reason. */
#define REPORT_KEY "ota_report"

static int send_report(mc_device_t *d) {
    uint8_t b[4 + MC_VERSION_CAP + 257];
    size_t len = 0;
    int rc = d->hal->storage_get(d->hal->ctx, REPORT_KEY, b, sizeof b - 1, &len);
    if (rc < 0) return rc == MC_ERR_NOT_FOUND ? MC_OK : rc;
    b[len] = '\0'; /* the reason runs to the end of the record */
    const char *version = (const char *)b + 3;
    size_t vlen = len > 3 ? strlen(version) : 0;
    if (len < 4 || 3 + vlen >= len) {
        d->hal->storage_erase(d->hal->ctx, REPORT_KEY); /* unreadable: drop it, keep running */
        return MC_ERR_CORRUPT;
    }
    int n = mc_enc_ota_result(d->out, sizeof d->out, b[0], version, b[1], version + vlen + 1, b[2]);
    if (n < 0) return n;
    return send_out(d, n);
}

static int store_report(mc_device_t *d, int kind, int ok, uint32_t tries, const char *version, const char *reason) {
    uint8_t b[4 + MC_VERSION_CAP + 257];
    size_t vl = strlen(version), rl = reason ? strlen(reason) : 0;
    if (vl >= MC_VERSION_CAP || rl > 256) return MC_ERR_ARG;
    b[0] = (uint8_t)kind;
    b[1] = (uint8_t)(ok ? 1 : 0);
    b[2] = (uint8_t)(tries > 255 ? 255 : tries);
    memcpy(b + 3, version, vl + 1);
    if (rl) memcpy(b + 4 + vl, reason, rl);
    return d->hal->storage_set(d->hal->ctx, REPORT_KEY, b, 4 + vl + rl) < 0 ? MC_ERR_IO : MC_OK;
}

int mc_device_init(mc_device_t *d, const mc_hal_t *hal, const mc_config_t *cfg) {
    if (d == NULL || hal == NULL || cfg == NULL || !mc_valid_device_id(cfg->device_id)) return MC_ERR_ARG;
    memset(d, 0, offsetof(mc_device_t, frame));
    d->hal = hal;
    d->cfg = *cfg;
    if (d->cfg.capabilities[0] == '\0') mc_copy(d->cfg.capabilities, sizeof d->cfg.capabilities, "text");
    int rc = mc_seq_load(&d->seq, hal);
    if (rc == MC_ERR_CORRUPT) {
        mc_log(hal, MC_LOG_ERROR, "last_seq unreadable: replaying from 0 (duplicates are ignored)");
        rc = MC_OK;
    }
    if (rc < 0) return rc;
    rc = mc_ring_open(&d->ring, hal, cfg->ring_slots ? cfg->ring_slots : MC_RING_DEFAULT_SLOTS);
    if (rc < 0) return rc;
    rc = mc_slots_load(&d->fw, hal, MC_KIND_FIRMWARE, cfg->fw_version, cfg->max_boot_tries);
    if (rc < 0) return rc;
    rc = mc_slots_load(&d->model, hal, MC_KIND_MODEL, cfg->model_version, cfg->max_boot_tries);
    if (rc < 0) return rc;
    d->boot_fw = mc_slots_on_boot(&d->fw, hal);
    if (d->boot_fw < 0) return d->boot_fw;
    d->boot_model = mc_slots_on_boot(&d->model, hal);
    if (d->boot_model < 0) return d->boot_model;
    if (d->boot_fw == MC_BOOT_ROLLED_BACK) {
        store_report(d, MC_KIND_FIRMWARE, 0, d->fw.max_tries, d->fw.failed_version, "rolled back after bad boots");
    }
    if (d->boot_model == MC_BOOT_ROLLED_BACK) {
        store_report(d, MC_KIND_MODEL, 0, d->model.max_tries, d->model.failed_version,
                     "rolled back after bad loads");
    }
    d->state = MC_ST_IDLE;
    mc_show(hal, MC_DISPLAY_STATE, mc_state_name(d->state));
    mc_show(hal, MC_DISPLAY_CONNECTION, "offline");
    return MC_OK;
}

const char *mc_device_version(const mc_device_t *d, int kind) {
    const mc_slots_t *s = kind == MC_KIND_MODEL ? &d->model : &d->fw;
    return s->pending != MC_SLOT_NONE ? s->pending_version : s->active_version;
}

int mc_device_connected(mc_device_t *d) {
    d->connected = 1;
    d->welcomed = 0;
    d->sent_upto = d->ring.first;
    if (d->state == MC_ST_IDLE) mc_device_event(d, MC_EV_NET_UP);
    mc_device_event(d, MC_EV_CONNECTED);
    if (mc_pairing_is_paired(d->hal)) {
        int n = mc_enc_hello(d->out, sizeof d->out, d->cfg.device_id, d->seq.last_seen,
                             mc_device_version(d, MC_KIND_FIRMWARE), mc_device_version(d, MC_KIND_MODEL),
                             d->cfg.board, d->cfg.capabilities);
        return send_out(d, n);
    }
    int n = d->pairing.state == MC_PAIR_IDLE || d->pairing.state == MC_PAIR_FAILED || d->pairing.state == MC_PAIR_DONE
                ? mc_pairing_start(&d->pairing, d->hal, d->cfg.device_id, d->cfg.poll_interval_ms, d->out,
                                   sizeof d->out)
                : mc_pairing_on_connect(&d->pairing, d->hal, d->out, sizeof d->out);
    return send_out(d, n);
}

int mc_device_disconnected(mc_device_t *d) {
    d->connected = 0;
    d->welcomed = 0;
    mc_show(d->hal, MC_DISPLAY_CONNECTION, "offline");
    int r = mc_device_event(d, MC_EV_DISCONNECTED);
    return r < 0 ? r : MC_OK;
}

/* Send queued messages not yet sent on this connection, oldest first. */
static int flush_queue(mc_device_t *d) {
    if (!d->welcomed) return MC_OK;
    static const size_t text_cap = MC_MSG_TEXT_CAP;
    char id[32];
    char text[MC_MSG_TEXT_CAP];
    uint32_t i = 0;
    for (uint32_t n = d->ring.first; n != d->ring.next; n++) {
        uint32_t s = n % d->ring.slots;
        if (!((d->ring.live[s / 32] >> (s % 32)) & 1u)) continue;
        uint32_t index = i++;
        if (n - d->ring.first < d->sent_upto - d->ring.first && d->sent_upto - d->ring.first <= d->ring.slots) {
            continue;
        }
        int rc = mc_ring_get(&d->ring, d->hal, index, id, sizeof id, text, text_cap);
        if (rc < 0) return rc;
        int len = mc_enc_message(d->out, sizeof d->out, id, text, -1);
        if (len < 0) return len;
        rc = send_out(d, len);
        if (rc < 0) return rc;
        d->sent_upto = n + 1;
    }
    return MC_OK;
}

int mc_device_say(mc_device_t *d, const char *text, char *id_out, size_t id_cap) {
    int rc = mc_ring_push(&d->ring, d->hal, text, id_out, id_cap);
    if (rc < 0) return rc;
    rc = flush_queue(d);
    return rc == MC_ERR_IO ? MC_OK : rc; /* queued; sent after the next welcome */
}

static int on_offer(mc_device_t *d, const mc_frame_t *f) {
    mc_manifest_t m;
    int rc = mc_manifest_verify(f->manifest, f->manifest_len, f->signature, d->cfg.ota_pubkey, &m);
    if (rc < 0) {
        mc_log(d->hal, MC_LOG_ERROR, "OTA offer refused: the manifest does not verify");
        d->last_error = rc;
        /* report a forged or broken manifest so the host can halt the release */
        return rc;
    }
    if (m.kind != f->kind) return MC_ERR_FIELD;
    const mc_slots_t *slots = m.kind == MC_KIND_MODEL ? &d->model : &d->fw;
    uint32_t max = m.kind == MC_KIND_MODEL ? d->cfg.model_slot_size : d->cfg.fw_slot_size;
    rc = mc_ota_check(&m, d->cfg.board, mc_device_version(d, m.kind), max);
    if (rc < 0) {
        d->last_error = rc;
        return rc;
    }
    if (slots->pending != MC_SLOT_NONE || d->ota.state == MC_OTA_WRITING) return MC_ERR_STATE;
    d->offer = m;
    d->offer_ready = 1;
    return MC_FRAME_OTA_OFFER;
}

int mc_device_on_text(mc_device_t *d, const char *raw, size_t len) {
    mc_frame_t *f = &d->frame;
    int rc = mc_frame_decode(raw, len, f);
    if (rc < 0) {
        d->bad_frames++;
        d->last_error = rc;
        mc_log(d->hal, MC_LOG_WARN, "frame refused");
        return rc;
    }
    switch (f->type) {
    case MC_FRAME_PAIR_CODE:
    case MC_FRAME_PAIR_PENDING:
    case MC_FRAME_PAIR_TOKEN:
    case MC_FRAME_PAIR_CERT: {
        int n = mc_pairing_on_frame(&d->pairing, d->hal, f, d->out, sizeof d->out);
        if (n < 0) return n;
        rc = send_out(d, n);
        if (rc < 0) return rc;
        if (d->pairing.state == MC_PAIR_DONE) {
            mc_seq_on_welcome(&d->seq, d->hal, 0); /* a new identity starts from seq 0 */
            mc_device_event(d, MC_EV_PAIRED);
        }
        return f->type;
    }
    case MC_FRAME_ERROR:
        if (d->pairing.state != MC_PAIR_IDLE && d->pairing.state != MC_PAIR_DONE && !d->welcomed) {
            mc_pairing_on_frame(&d->pairing, d->hal, f, d->out, sizeof d->out);
        } else {
            mc_show(d->hal, MC_DISPLAY_ERROR, f->error_code);
        }
        return f->type;
    case MC_FRAME_WELCOME:
        if (strcmp(f->device_id, d->cfg.device_id) != 0) return MC_ERR_FIELD;
        mc_seq_on_welcome(&d->seq, d->hal, f->last_seq);
        d->welcomed = 1;
        d->sent_upto = d->ring.first;
        mc_device_event(d, MC_EV_WELCOME);
        mc_show(d->hal, MC_DISPLAY_CONNECTION, "online");
        send_report(d);
        rc = flush_queue(d);
        return rc < 0 ? rc : f->type;
    case MC_FRAME_EVENT: {
        if (!d->welcomed) return MC_ERR_STATE;
        int c = mc_seq_check(&d->seq, f->seq);
        if (c == MC_SEQ_DUPLICATE) return f->type;
        if (f->text[0]) {
            mc_show(d->hal, MC_DISPLAY_LAST_MESSAGE, f->text);
            d->events_shown++;
            if (d->state == MC_ST_LISTENING || d->state == MC_ST_SPEAKING) mc_device_event(d, MC_EV_REPLY);
        }
        rc = mc_seq_commit(&d->seq, d->hal, f->seq);
        return rc < 0 ? rc : f->type;
    }
    case MC_FRAME_ACK:
        rc = mc_ring_ack(&d->ring, d->hal, f->message_id);
        if (rc < 0 && rc != MC_ERR_NOT_FOUND) return rc;
        return f->type;
    case MC_FRAME_OTA_OFFER:
        return on_offer(d, f);
    case MC_FRAME_OTA_ROLLBACK: {
        mc_slots_t *s = f->kind == MC_KIND_MODEL ? &d->model : &d->fw;
        if (strcmp(mc_device_version(d, f->kind), f->version) != 0) return f->type;
        rc = mc_slots_revert(s, d->hal);
        if (rc < 0) return rc;
        if (f->kind == MC_KIND_FIRMWARE && d->hal->reboot) d->hal->reboot(d->hal->ctx);
        return f->type;
    }
    case MC_FRAME_OTA_ACK:
        d->hal->storage_erase(d->hal->ctx, REPORT_KEY);
        return f->type;
    default:
        return f->type;
    }
}

int mc_device_tick(mc_device_t *d) {
    int n = mc_pairing_tick(&d->pairing, d->hal, d->out, sizeof d->out);
    if (n < 0) return n;
    return d->connected ? send_out(d, n) : MC_OK;
}

int mc_device_ota_begin(mc_device_t *d) {
    if (!d->offer_ready) return MC_ERR_STATE;
    mc_slots_t *s = d->offer.kind == MC_KIND_MODEL ? &d->model : &d->fw;
    int rc = mc_ota_begin(&d->ota, d->hal, s, &d->offer);
    if (rc < 0) return rc;
    mc_device_event(d, MC_EV_OTA_START);
    mc_show(d->hal, MC_DISPLAY_OTA_PROGRESS, "0");
    return MC_OK;
}

static void show_progress(mc_device_t *d) {
    char pct[4];
    int p = mc_ota_progress(&d->ota);
    int i = 0;
    if (p >= 100) pct[i++] = '1';
    if (p >= 10) pct[i++] = (char)('0' + (p / 10) % 10);
    pct[i++] = (char)('0' + p % 10);
    pct[i] = '\0';
    mc_show(d->hal, MC_DISPLAY_OTA_PROGRESS, pct);
}

static int ota_failed(mc_device_t *d, int rc) {
    d->offer_ready = 0;
    store_report(d, d->ota.m.kind, 0, 0, d->ota.m.version, mc_strerror(rc));
    if (d->welcomed) send_report(d);
    mc_device_event(d, MC_EV_OTA_FAILED);
    mc_show(d->hal, MC_DISPLAY_OTA_PROGRESS, "");
    return rc;
}

int mc_device_ota_write(mc_device_t *d, const uint8_t *data, size_t len) {
    int rc = mc_ota_write(&d->ota, d->hal, data, len);
    if (rc < 0) return rc == MC_ERR_STATE ? rc : ota_failed(d, rc);
    show_progress(d);
    return MC_OK;
}

int mc_device_ota_finish(mc_device_t *d) {
    mc_slots_t *s = d->ota.m.kind == MC_KIND_MODEL ? &d->model : &d->fw;
    int rc = mc_ota_finish(&d->ota, d->hal, s);
    if (rc < 0) return rc == MC_ERR_STATE ? rc : ota_failed(d, rc);
    d->offer_ready = 0;
    mc_device_event(d, MC_EV_OTA_DONE);
    return MC_OK;
}

int mc_device_self_test(mc_device_t *d, int kind, int passed, const char *reason) {
    mc_slots_t *s = kind == MC_KIND_MODEL ? &d->model : &d->fw;
    if (s->pending == MC_SLOT_NONE) return MC_ERR_STATE;
    char version[MC_VERSION_CAP];
    memcpy(version, s->pending_version, sizeof version);
    uint32_t tries = s->tries;
    int rc = passed ? mc_slots_mark_valid(s, d->hal) : mc_slots_mark_bad(s, d->hal);
    if (rc < 0) return rc;
    /* boot_failures: the boots before this one that did not pass (this one passed or failed) */
    rc = store_report(d, kind, passed, tries > 0 ? tries - 1u : 0u, version,
                      passed ? "" : (reason ? reason : "self-test failed"));
    if (rc < 0) return rc;
    if (d->welcomed) send_report(d);
    if (d->state == MC_ST_UPGRADING) { /* a model is tested without a reboot: back to work */
        d->state = d->welcomed ? MC_ST_LISTENING : MC_ST_CONNECTING;
        mc_show(d->hal, MC_DISPLAY_STATE, mc_state_name(d->state));
    }
    mc_show(d->hal, MC_DISPLAY_OTA_PROGRESS, "");
    return MC_OK;
}
