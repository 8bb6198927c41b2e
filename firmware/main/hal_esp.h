/*
 * The core's HAL (mc_hal_t) on ESP-IDF: NVS namespace "microclaw", esp_timer, esp_fill_random,
 * the WebSocket link, the LVGL screen, esp_codec_dev audio, app/model slots, and the device key
 * and CSR with mbedTLS (the key is kept in NVS as "dev_key" and never leaves the device).
 */
#pragma once

#include "esp_err.h"
#include "mc_hal.h"

esp_err_t hal_esp_init(mc_hal_t *hal);

/* The client certificate and key for mTLS, from NVS (ESP_ERR_NOT_FOUND until paired). The
 * buffers are the caller's, NUL-terminated. */
esp_err_t hal_esp_tls_identity(char *cert, size_t cert_cap, char *key, size_t key_cap);
