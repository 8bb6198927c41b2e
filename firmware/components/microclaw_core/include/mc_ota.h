/* OTA: signed manifests and the download-verify-install-test cycle for firmware and model
 * bundles (microclaw/gateway/ota.py is the other side).
 *
 * A manifest is canonical JSON (keys sorted, no spaces, UTF-8) of {board, kind, min_version,
 * sha256, size, url, version} with a detached Ed25519 signature over exactly those bytes,
 * verified with Monocypher. mc_manifest_verify checks the signature first, then parses, then
 * re-encodes and requires the same bytes (so duplicate keys, spaces or reordering fail).
 * mc_ota_check decides whether to install: board equal, version newer than the running one,
 * the running one not below min_version, size within the slot.
 *
 * mc_ota_begin opens the inactive slot (mc_slots), mc_ota_write streams chunks into it and
 * into SHA-256 (refusing bytes past the manifest's size), mc_ota_finish checks size and hash
 * and stages the slot for the next boot; anything else aborts with nothing staged. */
#ifndef MC_OTA_H
#define MC_OTA_H

#include "mc_common.h"
#include "mc_hal.h"
#include "mc_sha256.h"
#include "mc_slots.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t kind; /* mc_kind_t */
    uint32_t size;
    char version[MC_VERSION_CAP];
    char min_version[MC_VERSION_CAP];
    char board[MC_BOARD_CAP];
    char url[MC_URL_CAP];
    char sha256_hex[65];
    uint8_t sha256[32];
} mc_manifest_t;

/* "1.2.3" -> {1,2,3}; MC_ERR_VERSION unless MAJOR.MINOR.PATCH with 1..5 digits each. */
int mc_version_parse(const char *s, uint32_t out[3]);
/* <0, 0, >0 like strcmp; MC_ERR_VERSION (-14) is never returned: invalid sorts lowest. */
int mc_version_cmp(const char *a, const char *b);
/* "firmware" / "model"; NULL for others. mc_kind_parse returns -1 for unknown names. */
const char *mc_kind_name(int kind);
int mc_kind_parse(const char *name);

/* Verify `sig` (64 bytes) by `pubkey` (32 bytes) over raw[0..len) and parse it into *out. */
int mc_manifest_verify(const char *raw, size_t len, const uint8_t sig[64], const uint8_t pubkey[32],
                       mc_manifest_t *out);
/* Whether to install: MC_OK, MC_ERR_BOARD, MC_ERR_VERSION (not newer / below min_version) or
 * MC_ERR_SIZE (over max_size). */
int mc_ota_check(const mc_manifest_t *m, const char *board, const char *running, uint32_t max_size);

typedef enum {
    MC_OTA_IDLE = 0,
    MC_OTA_WRITING = 1,
    MC_OTA_STAGED = 2, /* verified and set to boot; waiting for reboot (firmware) or load (model) */
    MC_OTA_FAILED = 3
} mc_ota_state_t;

typedef struct {
    int32_t state; /* mc_ota_state_t */
    int32_t slot;  /* the slot being written */
    int32_t last_error;
    uint32_t written;
    mc_manifest_t m;
    mc_sha256_t sha;
} mc_ota_t;

int mc_ota_begin(mc_ota_t *o, const mc_hal_t *hal, mc_slots_t *slots, const mc_manifest_t *m);
int mc_ota_write(mc_ota_t *o, const mc_hal_t *hal, const uint8_t *data, size_t len);
int mc_ota_finish(mc_ota_t *o, const mc_hal_t *hal, mc_slots_t *slots);
/* Percent written (0..100). */
int mc_ota_progress(const mc_ota_t *o);
void mc_ota_abort(mc_ota_t *o);

#ifdef __cplusplus
}
#endif
#endif
