/*
 * What a board knows before it can talk to a gateway: the factory NVS image (gateway URL, the
 * device CA and its pin, the OTA public key, the board name; firmware/tools/factory_nvs.py), its
 * device id (from the Wi-Fi MAC) and a Wi-Fi connection (provisioned over BLE on first boot).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"

#define PROVISION_URL_MAX 201
#define PROVISION_PEM_MAX 4001
#define PROVISION_PIN_MAX 52
#define PROVISION_ID_MAX 41

typedef struct {
    char gateway_url[PROVISION_URL_MAX];
    char ca_pem[PROVISION_PEM_MAX];
    char ca_pin[PROVISION_PIN_MAX];
    uint8_t ota_pubkey[32];
    char board[41];
    char device_id[PROVISION_ID_MAX];
} factory_t;

/* nvs_flash_init for the default partition (erased and re-initialised when its layout is from an
 * older IDF) and the read-only factory partition `fctry`. */
esp_err_t provision_nvs_init(void);

/* Reads `fctry` into `out`; ESP_ERR_INVALID_STATE when the CA pin does not match the CA or a key is
 * missing (the board then shows "not provisioned" and does nothing else). */
esp_err_t provision_load_factory(factory_t *out);

/* Starts Wi-Fi: BLE provisioning on first boot (service name PROV_<device id>, proof of possession
 * from Kconfig), then station mode; blocks until an IP address or `timeout_ms` (0: no limit). */
esp_err_t provision_wifi(const char *device_id, uint32_t timeout_ms);

/* `sha256/<base64>` of the SubjectPublicKeyInfo of the first certificate in `pem`. */
esp_err_t provision_spki_pin(const char *pem, char *out, size_t out_len);
