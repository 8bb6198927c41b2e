/* Test-side glue compiled into the host build of microclaw_core (tests/integration/firmware):
 * sizes and read-only views of mc_device_t, so the Python driver never mirrors the core's
 * struct layouts (only mc_hal_t, whose size it checks against mcx_hal_size). Not firmware. */
#include <string.h>

#include "microclaw_core.h"

size_t mcx_device_size(void) { return sizeof(mc_device_t); }
size_t mcx_hal_size(void) { return sizeof(mc_hal_t); }

int mcx_init(mc_device_t *d, const mc_hal_t *hal, const char *device_id, const char *board, const char *fw_version,
             const char *model_version, const uint8_t pubkey[32], uint32_t ring_slots, uint32_t poll_ms,
             uint32_t fw_slot_size, uint32_t model_slot_size, uint32_t max_boot_tries)
{
    mc_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    strncpy(cfg.device_id, device_id, sizeof cfg.device_id - 1);
    strncpy(cfg.board, board, sizeof cfg.board - 1);
    strncpy(cfg.fw_version, fw_version, sizeof cfg.fw_version - 1);
    strncpy(cfg.model_version, model_version, sizeof cfg.model_version - 1);
    strncpy(cfg.capabilities, "text", sizeof cfg.capabilities - 1);
    memcpy(cfg.ota_pubkey, pubkey, 32);
    cfg.ring_slots = ring_slots;
    cfg.poll_interval_ms = poll_ms;
    cfg.fw_slot_size = fw_slot_size;
    cfg.model_slot_size = model_slot_size;
    cfg.max_boot_tries = max_boot_tries;
    return mc_device_init(d, hal, &cfg);
}

int mcx_state(const mc_device_t *d) { return d->state; }
int mcx_welcomed(const mc_device_t *d) { return d->welcomed; }
int mcx_connected(const mc_device_t *d) { return d->connected; }
int mcx_boot_fw(const mc_device_t *d) { return d->boot_fw; }
int mcx_boot_model(const mc_device_t *d) { return d->boot_model; }
uint32_t mcx_bad_frames(const mc_device_t *d) { return d->bad_frames; }
uint32_t mcx_events_shown(const mc_device_t *d) { return d->events_shown; }
int64_t mcx_last_seen(const mc_device_t *d) { return d->seq.last_seen; }
uint32_t mcx_duplicates(const mc_device_t *d) { return d->seq.duplicates; }
uint32_t mcx_gaps(const mc_device_t *d) { return d->seq.gaps; }
uint32_t mcx_ring_count(const mc_device_t *d) { return mc_ring_count(&d->ring); }
uint32_t mcx_ring_dropped(const mc_device_t *d) { return d->ring.dropped; }
uint32_t mcx_ring_slots(const mc_device_t *d) { return d->ring.slots; }
int mcx_pair_state(const mc_device_t *d) { return d->pairing.state; }
const char *mcx_pair_error(const mc_device_t *d) { return d->pairing.error; }
int mcx_offer_ready(const mc_device_t *d) { return d->offer_ready; }
const char *mcx_offer_url(const mc_device_t *d) { return d->offer.url; }
const char *mcx_offer_version(const mc_device_t *d) { return d->offer.version; }
int mcx_offer_kind(const mc_device_t *d) { return d->offer.kind; }
int mcx_ota_state(const mc_device_t *d) { return d->ota.state; }
int mcx_last_error(const mc_device_t *d) { return d->last_error; }
