/* The device side of pairing (docs/device-protocol.md "Pairing"):
 *
 *   start          -> send pair.begin {device_id}
 *   pair.code      -> show the code, keep the secret, poll every poll_interval_ms
 *   pair.pending   -> poll again later (on a new connection too: pre-auth connections are short)
 *   pair.token     -> key + CSR from the HAL (mbedTLS), send pair.csr {token, csr}
 *   pair.cert      -> store the CA ("ca_gw"), then the certificate ("cert"): paired
 *   error          -> failed with the gateway's code (code_expired, token_used... start again)
 *
 * Each step writes at most one frame into the caller's buffer and returns its length (0 when
 * nothing is to be sent); the caller sends it. */
#ifndef MC_PAIRING_H
#define MC_PAIRING_H

#include "mc_common.h"
#include "mc_frame.h"
#include "mc_hal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MC_PAIR_IDLE = 0,
    MC_PAIR_BEGUN = 1,     /* pair.begin sent, waiting for the code */
    MC_PAIR_SHOW_CODE = 2, /* code shown, polling */
    MC_PAIR_CSR_SENT = 3,  /* waiting for the certificate */
    MC_PAIR_DONE = 4,
    MC_PAIR_FAILED = 5
} mc_pair_state_t;

typedef struct {
    int32_t state;            /* mc_pair_state_t */
    uint32_t poll_interval_ms;
    uint64_t next_poll_ms;
    uint64_t code_expires_ms;
    uint32_t polls;
    char device_id[MC_DEVICE_ID_CAP];
    char code[MC_CODE_CAP];
    char secret[MC_SECRET_CAP];
    char error[MC_ERROR_CODE_CAP]; /* the gateway's error code when FAILED */
} mc_pairing_t;

/* 1 if a certificate is stored (the device is paired), 0 if not. */
int mc_pairing_is_paired(const mc_hal_t *hal);
/* Begin: state BEGUN, pair.begin into out. */
int mc_pairing_start(mc_pairing_t *p, const mc_hal_t *hal, const char *device_id,
                     uint32_t poll_interval_ms, char *out, size_t cap);
/* Feed a decoded frame; returns the length of a frame to send, 0, or MC_ERR_* (MC_ERR_REFUSED
 * on an error frame: state FAILED, p->error holds the code). */
int mc_pairing_on_frame(mc_pairing_t *p, const mc_hal_t *hal, const mc_frame_t *f, char *out, size_t cap);
/* Time passes: a pair.poll when one is due, else 0. FAILED with "code_expired" once the code
 * expired locally. */
int mc_pairing_tick(mc_pairing_t *p, const mc_hal_t *hal, char *out, size_t cap);
/* A new pre-auth connection: pair.poll right away when a code is shown, pair.begin when none
 * was received yet, else 0. */
int mc_pairing_on_connect(mc_pairing_t *p, const mc_hal_t *hal, char *out, size_t cap);
/* Forget the pairing (certificate, CA, last_seq): the device pairs again. */
int mc_pairing_forget(const mc_hal_t *hal);

#ifdef __cplusplus
}
#endif
#endif
