/* Cost of the core's crypto on the emulated lx106 (QEMU sim, run with -icount shift=0).
 * CCOUNT is read around each operation and calibrated against a loop of known length
 * (2 instructions per iteration), so the figures are instruction counts. Output: key=value lines. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "microclaw_core.h"
#include "mc_sha256.h"
#include "monocypher-ed25519.h"
#include "vectors.h"

void sim_write(const char *s, size_t n);

static uint32_t ccount(void) {
    uint32_t c;
    __asm__ volatile("rsr.ccount %0" : "=r"(c));
    return c;
}

static void say(const char *key, uint32_t value) {
    char line[80];
    int n = snprintf(line, sizeof line, "%s=%lu\n", key, (unsigned long)value);
    sim_write(line, (size_t)n);
}

int main(void) {
    uint32_t iters = 1000000;
    uint32_t t0 = ccount();
    __asm__ volatile("1: addi %0, %0, -1\n bnez %0, 1b" : "+r"(iters));
    uint32_t loop = ccount() - t0;
    say("calibration_ccount_per_2M_insn", loop);

    t0 = ccount();
    int bad = crypto_ed25519_check(V_MANIFEST[0].sig, V_PUBKEY, (const uint8_t *)V_MANIFEST[0].data,
                                   V_MANIFEST[0].len);
    uint32_t verify = ccount() - t0;
    say("ed25519_verify_ok", bad == 0);
    say("ed25519_verify_kinsn", (uint32_t)((uint64_t)verify * 2000u / loop));

    mc_manifest_t m;
    t0 = ccount();
    int r = mc_manifest_verify(V_MANIFEST[0].data, V_MANIFEST[0].len, V_MANIFEST[0].sig, V_PUBKEY, &m);
    uint32_t full = ccount() - t0;
    say("manifest_verify_ok", r == 0);
    say("manifest_verify_kinsn", (uint32_t)((uint64_t)full * 2000u / loop));

    /* sizes on the 32-bit target: what a device keeps in RAM, and the queue's capacity */
    say("sizeof_mc_device_t", (uint32_t)sizeof(mc_device_t));
    say("sizeof_mc_frame_t", (uint32_t)sizeof(mc_frame_t));
    say("sizeof_mc_ring_t", (uint32_t)sizeof(mc_ring_t));
    say("sizeof_mc_ota_t", (uint32_t)sizeof(mc_ota_t));
    say("sizeof_mc_hal_t", (uint32_t)sizeof(mc_hal_t));
    say("ring_default_slots", MC_RING_DEFAULT_SLOTS);
    say("ring_max_slots", MC_RING_MAX_SLOTS);
    say("ring_slot_bytes_max", (uint32_t)mc_ring_slot_bytes());
    say("ring_text_bytes_max", MC_MSG_TEXT_CAP - 1);

    uint8_t d[32];
    t0 = ccount();
    mc_sha256(V_FW_IMAGE, V_FW_IMAGE_LEN, d);
    uint32_t sha = ccount() - t0;
    say("sha256_bytes", (uint32_t)V_FW_IMAGE_LEN);
    say("sha256_insn_per_byte_x100", (uint32_t)((uint64_t)sha * 2000000u * 100u / loop / V_FW_IMAGE_LEN));
    return 0;
}
