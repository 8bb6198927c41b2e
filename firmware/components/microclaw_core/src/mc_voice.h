/* Internal: the voice side of mc_device (mc_voice.c), called by mc_device.c. */
#ifndef MC_VOICE_INTERNAL_H
#define MC_VOICE_INTERNAL_H

#include "mc_device.h"

/* Init: the persisted pending listen, the speaker capability when the HAL can play. */
void mc_voice_init(mc_device_t *d);
/* A decoded transcript, speak.start/end or voice error; returns f->type or MC_ERR_*. */
int mc_voice_on_frame(mc_device_t *d, const mc_frame_t *f);
void mc_voice_on_disconnect(mc_device_t *d);
/* Push-to-talk: down starts a listen in a session; up stops capture. */
void mc_voice_on_ptt(mc_device_t *d, int down);

#endif
