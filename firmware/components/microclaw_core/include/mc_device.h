/* The device: its state machine and the glue that runs every core module from a few entry
 * points the app calls (connection up/down, a text frame in, push-to-talk, a tick, OTA chunks).
 *
 * States: idle (no network), connecting (WebSocket/TLS being opened, or waiting for welcome),
 * pairing (pre-auth connection, code shown), listening (session up, ready), speaking (a reply
 * is shown/played), upgrading (an OTA image is being written), error (a fault; reset leaves).
 * mc_state_next is the transition table as a pure function; the device applies it and shows
 * the state on the display.
 *
 * Frames go out through hal->net_send. Messages the user says are queued in the persisted
 * ring first and sent when a session is up; the gateway's ack removes them. Events are shown
 * once, in seq order, their seq committed after processing. A verified OTA offer waits in
 * `offer` for the app to download `offer.url` and stream it through mc_device_ota_write. */
#ifndef MC_DEVICE_H
#define MC_DEVICE_H

#include "mc_common.h"
#include "mc_frame.h"
#include "mc_hal.h"
#include "mc_ota.h"
#include "mc_pairing.h"
#include "mc_ring.h"
#include "mc_seq.h"
#include "mc_slots.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MC_ST_IDLE = 0,
    MC_ST_CONNECTING = 1,
    MC_ST_PAIRING = 2,
    MC_ST_LISTENING = 3,
    MC_ST_SPEAKING = 4,
    MC_ST_UPGRADING = 5,
    MC_ST_ERROR = 6
} mc_state_t;

typedef enum {
    MC_EV_NET_UP = 0,       /* Wi-Fi up: start connecting */
    MC_EV_NET_DOWN = 1,     /* Wi-Fi lost */
    MC_EV_CONNECTED = 2,    /* WebSocket open */
    MC_EV_DISCONNECTED = 3, /* WebSocket closed */
    MC_EV_WELCOME = 4,      /* session accepted */
    MC_EV_PAIRED = 5,       /* certificate stored */
    MC_EV_REPLY = 6,        /* a new event to show/play */
    MC_EV_PLAY_DONE = 7,
    MC_EV_PTT_DOWN = 8,     /* push-to-talk pressed (barge-in stops playback) */
    MC_EV_PTT_UP = 9,
    MC_EV_OTA_START = 10,
    MC_EV_OTA_DONE = 11,    /* staged; a firmware reboot follows */
    MC_EV_OTA_FAILED = 12,
    MC_EV_FAULT = 13,
    MC_EV_RESET = 14
} mc_event_t;

/* Flags for mc_state_next. */
#define MC_F_PAIRED 1
#define MC_F_CONNECTED 2

/* The next state, or MC_ERR_STATE when `event` is not allowed in `state`. */
int mc_state_next(int state, int event, int flags);
const char *mc_state_name(int state);

typedef struct {
    char device_id[MC_DEVICE_ID_CAP];
    char board[MC_BOARD_CAP];
    char fw_version[MC_VERSION_CAP];    /* the factory version (slot records may say newer) */
    char model_version[MC_VERSION_CAP];
    char capabilities[64];              /* comma-separated, e.g. "text" */
    uint8_t ota_pubkey[32];             /* Ed25519 key manifests must be signed with */
    uint32_t ring_slots;                /* 0: MC_RING_DEFAULT_SLOTS */
    uint32_t poll_interval_ms;          /* 0: 2000 */
    uint32_t max_boot_tries;            /* 0: MC_SLOTS_DEFAULT_MAX_TRIES */
    uint32_t fw_slot_size;              /* bytes per app slot (0: no limit) */
    uint32_t model_slot_size;
} mc_config_t;

typedef struct {
    const mc_hal_t *hal;
    mc_config_t cfg;
    int32_t state;        /* mc_state_t */
    int32_t connected;    /* WebSocket open */
    int32_t welcomed;     /* session up (welcome received) */
    int32_t boot_fw;      /* mc_boot_t from init */
    int32_t boot_model;
    int32_t offer_ready;  /* `offer` holds a verified manifest to download */
    int32_t last_error;
    uint32_t bad_frames;  /* frames refused by the codec (the device kept running) */
    uint32_t events_shown;
    uint32_t sent_upto;   /* ring item number below which items were sent on this connection */
    mc_seq_t seq;
    mc_ring_t ring;
    mc_pairing_t pairing;
    mc_slots_t fw;
    mc_slots_t model;
    mc_ota_t ota;
    mc_manifest_t offer;
    mc_frame_t frame;     /* the last decoded frame (text of the last event in frame.text) */
    char out[MC_FRAME_OUT_CAP];
} mc_device_t;

/* Load storage (seq, queue, slot records), count this boot for pending slots (mc_slots_on_boot;
 * boot_fw / boot_model say whether a self-test is due or a rollback happened), show idle. */
int mc_device_init(mc_device_t *d, const mc_hal_t *hal, const mc_config_t *cfg);
/* Apply a state-machine event from the app (net up/down, PTT, playback done, fault, reset). */
int mc_device_event(mc_device_t *d, int event);
/* The WebSocket is open: device.hello when paired, else the pairing step (begin or poll). */
int mc_device_connected(mc_device_t *d);
int mc_device_disconnected(mc_device_t *d);
/* One text frame from the gateway. Returns the mc_frame_type_t handled, or MC_ERR_* for a frame
 * refused (counted in bad_frames; nothing else changes). */
int mc_device_on_text(mc_device_t *d, const char *raw, size_t len);
/* The user said `text`: queued (persisted), sent now when a session is up. */
int mc_device_say(mc_device_t *d, const char *text, char *id_out, size_t id_cap);
/* Time passes (pairing polls). */
int mc_device_tick(mc_device_t *d);
/* The running version of a kind (slot record). */
const char *mc_device_version(const mc_device_t *d, int kind);
/* Install the verified offer: begin, chunks, finish (staged; firmware: the app reboots). */
int mc_device_ota_begin(mc_device_t *d);
int mc_device_ota_write(mc_device_t *d, const uint8_t *data, size_t len);
int mc_device_ota_finish(mc_device_t *d);
/* After booting a pending slot: the app's self-test result. Passed: mark valid; failed: roll
 * back (the app reboots / reloads). Either way an ota.result is stored and sent once a session
 * is up (until the gateway's ota.ack). */
int mc_device_self_test(mc_device_t *d, int kind, int passed, const char *reason);

#ifdef __cplusplus
}
#endif
#endif
