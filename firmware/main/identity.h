/*
 * The device's own key pair (ECDSA P-256, generated on the device, never leaves it) and the CSR
 * the pairing flow sends, with mbedTLS (ESP-IDF's TLS library).
 */
#pragma once

#include <stddef.h>

#include "esp_err.h"

/* A CSR with subject CN=`device_id` into `csr_pem`, signed by the key in `key_pem_in` (PEM), or
 * by a fresh P-256 key when it is NULL; the key used is written as PEM to `key_pem_out`. */
esp_err_t identity_make_csr(const char *device_id, const char *key_pem_in, char *key_pem_out, size_t key_cap,
                            char *csr_pem, size_t csr_cap);
