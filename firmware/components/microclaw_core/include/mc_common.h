/* MicroClaw portable core: error codes, limits and kinds shared by every module.
 *
 * The core is C11 with no ESP-IDF includes. Every buffer is provided by the caller; no module
 * allocates memory or keeps global state, so several devices can live in one process (tests,
 * the Python ctypes binding). Functions return MC_OK (0) or a negative MC_ERR_*; encoders
 * return the number of bytes written (> 0) or a negative MC_ERR_*. */
#ifndef MC_COMMON_H
#define MC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_CORE_VERSION "0.1.0"
#define MC_PROTOCOL_VERSION 1

enum {
    MC_OK = 0,
    MC_ERR_ARG = -1,        /* a bad argument (NULL, out of range, wrong pattern) */
    MC_ERR_NOSPACE = -2,    /* the caller's buffer is too small */
    MC_ERR_JSON = -3,       /* not valid JSON (or not UTF-8) */
    MC_ERR_DEPTH = -4,      /* JSON nested deeper than allowed */
    MC_ERR_TOO_BIG = -5,    /* input over its size limit (frame, token count, field) */
    MC_ERR_FIELD = -6,      /* a required field is missing or has the wrong type/shape */
    MC_ERR_NOT_FOUND = -7,  /* storage key absent */
    MC_ERR_IO = -8,         /* a HAL call failed */
    MC_ERR_STATE = -9,      /* not allowed in the current state */
    MC_ERR_SIGNATURE = -10, /* ed25519 signature does not verify */
    MC_ERR_HASH = -11,      /* image sha256 differs from the manifest */
    MC_ERR_SIZE = -12,      /* image size differs from the manifest / over the slot */
    MC_ERR_BOARD = -13,     /* manifest built for another board */
    MC_ERR_VERSION = -14,   /* not newer, below min_version, or not MAJOR.MINOR.PATCH */
    MC_ERR_CANONICAL = -15, /* manifest bytes are not canonical JSON */
    MC_ERR_CORRUPT = -16,   /* stored record unreadable */
    MC_ERR_REFUSED = -17    /* the gateway answered with an error frame */
};

/* A short constant name for an MC_OK / MC_ERR_* value ("ok", "json", ...). */
const char *mc_strerror(int err);

/* Limits (bytes unless said). Device ids and message ids follow docs/device-protocol.md. */
#define MC_DEVICE_ID_CAP 41      /* ^[a-z0-9][a-z0-9-]{2,39}$ + NUL */
#define MC_MESSAGE_ID_CAP 129    /* ^[A-Za-z0-9._:-]{1,128}$ + NUL */
#define MC_CODE_CAP 17           /* pairing code, 4..16 */
#define MC_SECRET_CAP 129        /* poll secret / token, 16..128 */
#define MC_VERSION_CAP 65        /* fw/model version strings (hello allows 64) */
#define MC_BOARD_CAP 65
#define MC_KIND_CAP 16
#define MC_STATUS_CAP 16
#define MC_ERROR_CODE_CAP 32
#define MC_DETAIL_CAP 256
#define MC_EVENT_TEXT_CAP 16385  /* an event's body.text: <= 4096 characters, <= 16384 UTF-8 bytes */
#define MC_PEM_CAP 4096          /* certificate / CA PEM */
#define MC_CSR_CAP 3001          /* the gateway takes a CSR of <= 3000 characters */
#define MC_MANIFEST_CAP 1024     /* canonical manifest JSON */
#define MC_URL_CAP 257
#define MC_MSG_TEXT_CAP 2049     /* a device -> host message queued offline: <= 2048 UTF-8 bytes */
#define MC_FRAME_IN_MAX 65536    /* an incoming frame larger than this is refused before parsing */
#define MC_FRAME_OUT_CAP 8192    /* enough for every frame the device sends */
#define MC_JSON_MAX_DEPTH 6      /* same as the gateway (protocol.py _MAX_DEPTH) */
#define MC_JSON_MAX_TOKENS 96

/* What an OTA or slot record is about. */
typedef enum { MC_KIND_FIRMWARE = 0, MC_KIND_MODEL = 1 } mc_kind_t;

#ifdef __cplusplus
}
#endif
#endif
