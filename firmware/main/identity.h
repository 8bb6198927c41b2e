/*
 * The device's own key pair (ECDSA P-256, generated on the device, never leaves it) and the CSR
 * the pairing flow sends, with mbedTLS (ESP-IDF's TLS library).
 */
#pragma once

#include <stddef.h>

#include "esp_err.h"

/* A fresh P-256 key as PKCS#8/SEC1 PEM into `key_pem`, and a CSR with subject CN=`device_id`
 * signed by it into `csr_pem`. */
esp_err_t identity_make_key_and_csr(const char *device_id, char *key_pem, size_t key_cap, char *csr_pem,
                                    size_t csr_cap);
