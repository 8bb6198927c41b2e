/* The hardware abstraction the core calls: one struct of function pointers plus a context.
 *
 * The ESP-IDF app (firmware/main) fills it with NVS, esp_timer, esp_random, the websocket
 * client, LVGL, I2S, esp_ota_* and mbedTLS; host tests fill it with a file or RAM store and
 * capture buffers; the Python binding fills it with ctypes callbacks. Every function gets
 * `ctx` first. Unused entries may be NULL where noted. All return MC_OK or a negative
 * MC_ERR_* unless said. */
#ifndef MC_HAL_H
#define MC_HAL_H

#include "mc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Display fields the core updates (the app draws them; LVGL on the S3). */
typedef enum {
    MC_DISPLAY_STATE = 0,        /* text: the device state name ("idle", "pairing", ...) */
    MC_DISPLAY_PAIR_CODE = 1,    /* text: the code to claim ("ABCD-EFGH"), "" to clear */
    MC_DISPLAY_CONNECTION = 2,   /* text: "online" / "offline" */
    MC_DISPLAY_LAST_MESSAGE = 3, /* text: the last event text from the host */
    MC_DISPLAY_OTA_PROGRESS = 4, /* text: percent "0".."100", "" when none */
    MC_DISPLAY_ERROR = 5         /* text: an error code, "" to clear */
} mc_display_field_t;

/* Audio commands (push-to-talk capture and reply playback; I2S + esp_codec_dev on the S3). */
typedef enum {
    MC_AUDIO_CAPTURE_START = 0,
    MC_AUDIO_CAPTURE_STOP = 1,
    MC_AUDIO_PLAY_START = 2,
    MC_AUDIO_PLAY_STOP = 3
} mc_audio_cmd_t;

typedef enum { MC_LOG_ERROR = 0, MC_LOG_WARN = 1, MC_LOG_INFO = 2, MC_LOG_DEBUG = 3 } mc_log_level_t;

typedef struct mc_hal {
    void *ctx;

    /* Storage (NVS namespace "microclaw"; keys <= 15 characters, the NVS limit). get copies
     * the value into buf and sets *len; MC_ERR_NOT_FOUND when absent, MC_ERR_NOSPACE when
     * cap is too small. set replaces atomically (NVS commits per call). erase of an absent
     * key is MC_OK. */
    int (*storage_get)(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len);
    int (*storage_set)(void *ctx, const char *key, const uint8_t *data, size_t len);
    int (*storage_erase)(void *ctx, const char *key);

    /* Monotonic milliseconds since boot. */
    uint64_t (*now_ms)(void *ctx);
    /* Cryptographically strong random bytes (esp_fill_random). */
    int (*random)(void *ctx, uint8_t *buf, size_t len);

    /* Send one WebSocket text frame on the current connection; MC_ERR_IO when down. */
    int (*net_send)(void *ctx, const char *frame, size_t len);

    /* Show a field (may be NULL). */
    void (*display)(void *ctx, int field, const char *text);
    /* Audio control and playback data (may be NULL on a text-only board). */
    int (*audio_ctl)(void *ctx, int cmd);
    int (*audio_write)(void *ctx, const uint8_t *data, size_t len);

    /* Partitions. kind is mc_kind_t, slot 0 or 1 (ota_0/ota_1, model_0/model_1).
     * begin erases the slot for `size` bytes; write appends; finish closes it (on the S3
     * esp_ota_end checks the app image); set_boot selects the slot for the next boot (firmware)
     * or the next model load (model); reboot restarts the chip (never returns on a device). */
    int (*part_begin)(void *ctx, int kind, int slot, uint32_t size);
    int (*part_write)(void *ctx, int kind, int slot, const uint8_t *data, size_t len);
    int (*part_finish)(void *ctx, int kind, int slot);
    int (*part_set_boot)(void *ctx, int kind, int slot);
    void (*reboot)(void *ctx);

    /* Device key and CSR (mbedTLS on the S3): create the P-256 key if there is none (kept by
     * the HAL, never leaves the device), write a PEM CSR with subject CN=device_id into out
     * (NUL-terminated) and set *len. */
    int (*csr_make)(void *ctx, const char *device_id, char *out, size_t cap, size_t *len);

    /* A log line (may be NULL). */
    void (*log)(void *ctx, int level, const char *msg);
} mc_hal_t;

#ifdef __cplusplus
}
#endif
#endif
