/* The gateway's frames (docs/device-protocol.md, microclaw/gateway/protocol.py): decode what
 * the gateway sends into one plain struct, encode what the device sends.
 *
 * mc_frame_decode refuses input over MC_FRAME_IN_MAX bytes, invalid JSON or UTF-8, nesting
 * over MC_JSON_MAX_DEPTH, a missing or non-string "type", and known frames with missing or
 * mistyped fields; unknown types decode as MC_FRAME_UNKNOWN (forward compatible). Unknown
 * extra fields are ignored. Encoders check what the gateway checks (id patterns, lengths)
 * and return the frame length or a negative MC_ERR_*. */
#ifndef MC_FRAME_H
#define MC_FRAME_H

#include "mc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MC_FRAME_UNKNOWN = 0,
    MC_FRAME_PAIR_CODE = 1,    /* code, secret, expires_in_s */
    MC_FRAME_PAIR_PENDING = 2, /* - */
    MC_FRAME_PAIR_TOKEN = 3,   /* token, expires_in_s */
    MC_FRAME_PAIR_CERT = 4,    /* device_id, cert, ca */
    MC_FRAME_WELCOME = 5,      /* device_id, last_seq, protocol */
    MC_FRAME_EVENT = 6,        /* seq, event_kind, text (body.text), ts_ms */
    MC_FRAME_ACK = 7,          /* message_id, status, detail */
    MC_FRAME_ERROR = 8,        /* error_code, detail */
    MC_FRAME_OTA_OFFER = 9,    /* kind, manifest (the canonical bytes), signature (64 bytes) */
    MC_FRAME_OTA_ROLLBACK = 10,/* kind, version, detail (reason) */
    MC_FRAME_OTA_ACK = 11      /* kind, version, status */
} mc_frame_type_t;

/* Ack statuses (docs/device-protocol.md "Session"). */
typedef enum {
    MC_ACK_STORED = 0,
    MC_ACK_DUPLICATE = 1,
    MC_ACK_REJECTED = 2,
    MC_ACK_DROPPED = 3,
    MC_ACK_UNREGISTERED = 4,
    MC_ACK_OTHER = 5
} mc_ack_status_t;

/* One decoded frame. Fields a frame does not carry are zero / "". ~26 KiB: keep one. */
typedef struct {
    int32_t type;              /* mc_frame_type_t */
    int32_t ack;               /* mc_ack_status_t for MC_FRAME_ACK */
    int32_t kind;              /* mc_kind_t for OTA frames, -1 when absent/unknown */
    int32_t has_ts;
    int64_t seq;
    int64_t last_seq;
    int64_t protocol;
    int64_t expires_in_s;
    int64_t ts_ms;
    char type_name[32];
    char device_id[MC_DEVICE_ID_CAP];
    char code[MC_CODE_CAP];
    char secret[MC_SECRET_CAP];
    char token[MC_SECRET_CAP];
    char message_id[MC_MESSAGE_ID_CAP];
    char status[MC_STATUS_CAP];
    char event_kind[MC_KIND_CAP];
    char version[MC_VERSION_CAP];
    char error_code[MC_ERROR_CODE_CAP];
    char detail[MC_DETAIL_CAP];
    uint32_t manifest_len;
    char manifest[MC_MANIFEST_CAP];
    uint8_t signature[64];
    char text[MC_EVENT_TEXT_CAP];
    char cert[MC_PEM_CAP];
    char ca[MC_PEM_CAP];
} mc_frame_t;

/* Decode one text frame (len bytes, need not be NUL-terminated) into *out. */
int mc_frame_decode(const char *raw, size_t len, mc_frame_t *out);

/* Pattern checks (docs/device-protocol.md). 1 if valid, 0 if not. */
int mc_valid_device_id(const char *s);
int mc_valid_message_id(const char *s);

/* Encoders: write one frame into out (NUL-terminated); its length or MC_ERR_*. */
int mc_enc_pair_begin(char *out, size_t cap, const char *device_id);
int mc_enc_pair_poll(char *out, size_t cap, const char *code, const char *secret);
int mc_enc_pair_csr(char *out, size_t cap, const char *token, const char *csr);
/* capabilities: comma-separated ("text" or "text,audio"); board may be "" (then omitted). */
int mc_enc_hello(char *out, size_t cap, const char *device_id, int64_t last_seen_seq,
                 const char *fw_version, const char *model_version, const char *board,
                 const char *capabilities);
/* text: 1..16384 characters; ts_ms < 0 omits it. */
int mc_enc_message(char *out, size_t cap, const char *message_id, const char *text, int64_t ts_ms);
/* kind: mc_kind_t; boot_failures < 0 omits the metrics object. */
int mc_enc_ota_result(char *out, size_t cap, int kind, const char *version, int ok,
                      const char *reason, int32_t boot_failures);

#ifdef __cplusplus
}
#endif
#endif
