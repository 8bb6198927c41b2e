/* Streaming SHA-256 (FIPS 180-4), for OTA images written chunk by chunk. */
#ifndef MC_SHA256_H
#define MC_SHA256_H

#include "mc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t h[8];
    uint64_t total; /* bytes hashed */
    uint8_t block[64];
    uint32_t fill;
} mc_sha256_t;

void mc_sha256_init(mc_sha256_t *c);
void mc_sha256_update(mc_sha256_t *c, const uint8_t *data, size_t len);
void mc_sha256_final(mc_sha256_t *c, uint8_t out[32]);
void mc_sha256(const uint8_t *data, size_t len, uint8_t out[32]);

#ifdef __cplusplus
}
#endif
#endif
