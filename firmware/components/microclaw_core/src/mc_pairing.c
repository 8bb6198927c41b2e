/* The device side of pairing (mc_pairing.h). */
#include "mc_pairing.h"

#include "mc_internal.h"

int mc_pairing_is_paired(const mc_hal_t *hal) {
    uint8_t b[1];
    size_t n = 0;
    int rc = hal->storage_get(hal->ctx, "cert", b, sizeof b, &n);
    return rc == MC_OK || rc == MC_ERR_NOSPACE;
}

int mc_pairing_start(mc_pairing_t *p, const mc_hal_t *hal, const char *device_id, uint32_t poll_interval_ms,
                     char *out, size_t cap) {
    if (p == NULL || hal == NULL || !mc_valid_device_id(device_id)) return MC_ERR_ARG;
    memset(p, 0, sizeof *p);
    mc_copy(p->device_id, sizeof p->device_id, device_id);
    p->poll_interval_ms = poll_interval_ms ? poll_interval_ms : 2000;
    int n = mc_enc_pair_begin(out, cap, device_id);
    if (n < 0) return n;
    p->state = MC_PAIR_BEGUN;
    mc_show(hal, MC_DISPLAY_PAIR_CODE, "");
    return n;
}

static int failed(mc_pairing_t *p, const mc_hal_t *hal, const char *code) {
    p->state = MC_PAIR_FAILED;
    mc_copy(p->error, sizeof p->error, code);
    p->code[0] = p->secret[0] = '\0';
    mc_show(hal, MC_DISPLAY_PAIR_CODE, "");
    mc_show(hal, MC_DISPLAY_ERROR, p->error);
    return MC_ERR_REFUSED;
}

int mc_pairing_on_frame(mc_pairing_t *p, const mc_hal_t *hal, const mc_frame_t *f, char *out, size_t cap) {
    if (p == NULL || hal == NULL || f == NULL) return MC_ERR_ARG;
    uint64_t now = hal->now_ms(hal->ctx);
    switch (f->type) {
    case MC_FRAME_PAIR_CODE:
        if (p->state != MC_PAIR_BEGUN) return MC_ERR_STATE;
        if (mc_copy(p->code, sizeof p->code, f->code) < 0 || mc_copy(p->secret, sizeof p->secret, f->secret) < 0) {
            return MC_ERR_FIELD;
        }
        p->state = MC_PAIR_SHOW_CODE;
        p->code_expires_ms = now + (uint64_t)(f->expires_in_s > 0 ? f->expires_in_s : 300) * 1000u;
        p->next_poll_ms = now + p->poll_interval_ms;
        mc_show(hal, MC_DISPLAY_PAIR_CODE, p->code);
        return 0;
    case MC_FRAME_PAIR_PENDING:
        if (p->state != MC_PAIR_SHOW_CODE) return MC_ERR_STATE;
        p->next_poll_ms = now + p->poll_interval_ms;
        return 0;
    case MC_FRAME_PAIR_TOKEN: {
        if (p->state != MC_PAIR_SHOW_CODE) return MC_ERR_STATE;
        if (hal->csr_make == NULL) return failed(p, hal, "no_csr");
        static const size_t csr_cap = MC_CSR_CAP;
        char csr[MC_CSR_CAP];
        size_t len = 0;
        if (hal->csr_make(hal->ctx, p->device_id, csr, csr_cap, &len) < 0 || len == 0 || len >= csr_cap) {
            return failed(p, hal, "csr_failed");
        }
        csr[len] = '\0';
        int n = mc_enc_pair_csr(out, cap, f->token, csr);
        if (n < 0) return n;
        p->state = MC_PAIR_CSR_SENT;
        return n;
    }
    case MC_FRAME_PAIR_CERT: {
        if (p->state != MC_PAIR_CSR_SENT) return MC_ERR_STATE;
        if (strcmp(f->device_id, p->device_id) != 0) return failed(p, hal, "wrong_device");
        if (strncmp(f->cert, "-----BEGIN CERTIFICATE-----", 27) != 0) return failed(p, hal, "bad_cert");
        if (f->ca[0] && hal->storage_set(hal->ctx, "ca_gw", (const uint8_t *)f->ca, strlen(f->ca)) < 0) {
            return MC_ERR_IO;
        }
        /* the certificate last: its presence is what "paired" means */
        if (hal->storage_set(hal->ctx, "cert", (const uint8_t *)f->cert, strlen(f->cert)) < 0) return MC_ERR_IO;
        p->state = MC_PAIR_DONE;
        p->code[0] = p->secret[0] = '\0';
        mc_show(hal, MC_DISPLAY_PAIR_CODE, "");
        return 0;
    }
    case MC_FRAME_ERROR:
        if (p->state == MC_PAIR_IDLE || p->state == MC_PAIR_DONE) return MC_ERR_STATE;
        return failed(p, hal, f->error_code);
    default:
        return MC_ERR_STATE;
    }
}

int mc_pairing_tick(mc_pairing_t *p, const mc_hal_t *hal, char *out, size_t cap) {
    if (p->state != MC_PAIR_SHOW_CODE) return 0;
    uint64_t now = hal->now_ms(hal->ctx);
    if (now >= p->code_expires_ms) {
        failed(p, hal, "code_expired");
        return 0;
    }
    if (now < p->next_poll_ms) return 0;
    p->next_poll_ms = now + p->poll_interval_ms;
    p->polls++;
    return mc_enc_pair_poll(out, cap, p->code, p->secret);
}

int mc_pairing_on_connect(mc_pairing_t *p, const mc_hal_t *hal, char *out, size_t cap) {
    if (p->state == MC_PAIR_SHOW_CODE) {
        p->next_poll_ms = hal->now_ms(hal->ctx) + p->poll_interval_ms;
        p->polls++;
        return mc_enc_pair_poll(out, cap, p->code, p->secret);
    }
    if (p->state == MC_PAIR_BEGUN || p->state == MC_PAIR_CSR_SENT) {
        /* the answer was lost with the connection: a token is spent once, so begin again */
        return mc_pairing_start(p, hal, p->device_id, p->poll_interval_ms, out, cap);
    }
    return 0;
}

int mc_pairing_forget(const mc_hal_t *hal) {
    static const char *const keys[] = {"cert", "ca_gw", "last_seq"};
    for (size_t i = 0; i < 3; i++) {
        if (hal->storage_erase(hal->ctx, keys[i]) < 0) return MC_ERR_IO;
    }
    return MC_OK;
}
