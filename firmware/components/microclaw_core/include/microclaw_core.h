/* MicroClaw portable core: include this one header. */
#ifndef MICROCLAW_CORE_H
#define MICROCLAW_CORE_H
#include "mc_common.h"
#include "mc_hal.h"
#include "mc_json.h"
#include "mc_frame.h"
#include "mc_seq.h"
#include "mc_ring.h"
#include "mc_sha256.h"
#include "mc_pairing.h"
#include "mc_slots.h"
#include "mc_ota.h"
#include "mc_device.h"
#endif
