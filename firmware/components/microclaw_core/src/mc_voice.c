/* Voice turns on the device (mc_device.h "Voice"): listen ids, the device-side cap on a listen,
 * framing captured PCM16 as binary frames, transcripts and voice errors, and speech from the
 * gateway (speak.start, binary PCM16 checked against its advertised size, speak.end) handed
 * to the audio HAL. */
#include <string.h>

#include "mc_internal.h"
#include "mc_voice.h"

#define LISTEN_KEY "listen"

static int has_cap(const char *caps, const char *name) {
    size_t n = strlen(name);
    for (const char *p = caps; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0) return 1;
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

void mc_voice_init(mc_device_t *d) {
    mc_voice_t *v = &d->voice;
    v->last_status = -1;
    char *caps = d->cfg.capabilities;
    if (d->hal->audio_ctl && d->hal->audio_write && !has_cap(caps, "speaker") &&
        strlen(caps) + sizeof ",speaker" <= sizeof d->cfg.capabilities) {
        strcat(caps, ",speaker"); /* the board plays audio: replies come spoken too */
    }
    size_t len = 0;
    uint8_t buf[MC_LISTEN_ID_CAP];
    if (d->hal->storage_get(d->hal->ctx, LISTEN_KEY, buf, sizeof buf - 1, &len) == MC_OK) {
        buf[len] = '\0';
        if (mc_valid_listen_id((const char *)buf)) {
            memcpy(v->listen_id, buf, len + 1);
            v->pending = 1; /* a turn whose answer never came: the app may send it again */
        } else {
            d->hal->storage_erase(d->hal->ctx, LISTEN_KEY);
        }
    }
}

static void capture(mc_device_t *d, int on) {
    if (d->hal->audio_ctl) d->hal->audio_ctl(d->hal->ctx, on ? MC_AUDIO_CAPTURE_START : MC_AUDIO_CAPTURE_STOP);
}

static int send_frame(mc_device_t *d, int n) {
    if (n < 0) return n;
    return d->hal->net_send(d->hal->ctx, d->out, (size_t)n) < 0 ? MC_ERR_IO : MC_OK;
}

/* The turn is over (answered, or refused for good): forget its id. */
static void forget(mc_device_t *d) {
    d->voice.pending = 0;
    d->voice.recording = 0;
    d->hal->storage_erase(d->hal->ctx, LISTEN_KEY);
}

int mc_device_listen_start(mc_device_t *d, int retry) {
    mc_voice_t *v = &d->voice;
    if (!d->welcomed) return MC_ERR_STATE;
    if (retry) {
        if (!v->pending || v->listen_id[0] == '\0') return MC_ERR_NOT_FOUND;
    } else {
        static const char hex[] = "0123456789abcdef";
        uint8_t r[8];
        if (d->hal->random(d->hal->ctx, r, sizeof r) < 0) return MC_ERR_IO;
        char id[2 + 2 * sizeof r + 1] = "l-";
        for (size_t i = 0; i < sizeof r; i++) {
            id[2 + 2 * i] = hex[r[i] >> 4];
            id[3 + 2 * i] = hex[r[i] & 15];
        }
        id[sizeof id - 1] = '\0';
        /* persisted before it goes out: a reboot before the transcript still knows the turn */
        if (d->hal->storage_set(d->hal->ctx, LISTEN_KEY, (const uint8_t *)id, strlen(id)) < 0) return MC_ERR_IO;
        memcpy(v->listen_id, id, sizeof id);
        v->pending = 1;
    }
    uint32_t rate = d->cfg.mic_sample_rate ? d->cfg.mic_sample_rate : MC_VOICE_DEFAULT_RATE;
    uint32_t secs = d->cfg.max_listen_s ? d->cfg.max_listen_s : MC_VOICE_MAX_LISTEN_S;
    if (secs > MC_VOICE_MAX_LISTEN_S) secs = MC_VOICE_MAX_LISTEN_S;
    int rc = send_frame(d, mc_enc_listen_start(d->out, sizeof d->out, v->listen_id, rate));
    if (rc < 0) return rc;
    v->recording = 1;
    v->sample_rate = rate;
    v->sent_bytes = 0;
    v->max_bytes = secs * rate * 2u;
    return MC_OK;
}

int mc_device_audio_chunk(mc_device_t *d, size_t len) {
    mc_voice_t *v = &d->voice;
    if (!v->recording) return MC_ERR_STATE;
    if (len < 2) return MC_ERR_ARG;
    uint32_t room = v->max_bytes - v->sent_bytes;
    if (room == 0) { /* the cap: the turn ends here, as the gateway would cut it */
        capture(d, 0);
        int rc = mc_device_listen_stop(d);
        return rc < 0 ? rc : 0;
    }
    size_t n = len < MC_AUDIO_CHUNK_MAX ? len : MC_AUDIO_CHUNK_MAX;
    if (n > room) n = room;
    n &= ~(size_t)1; /* whole samples */
    v->sent_bytes += (uint32_t)n;
    return (int)n;
}

int mc_device_listen_stop(mc_device_t *d) {
    mc_voice_t *v = &d->voice;
    if (!v->recording) return v->pending ? MC_OK : MC_ERR_STATE;
    v->recording = 0;
    return send_frame(d, mc_enc_listen_stop(d->out, sizeof d->out, v->listen_id));
}

int mc_device_listen_cancel(mc_device_t *d) {
    mc_voice_t *v = &d->voice;
    if (!v->pending) return MC_ERR_STATE;
    capture(d, 0);
    int rc = d->connected && v->listen_id[0] ? send_frame(d, mc_enc_listen_cancel(d->out, sizeof d->out, v->listen_id))
                                             : MC_OK;
    forget(d);
    return rc == MC_ERR_IO ? MC_OK : rc; /* a closed link dropped the gateway's side already */
}

int mc_device_on_binary(mc_device_t *d, const uint8_t *data, size_t len) {
    mc_voice_t *v = &d->voice;
    int rc = MC_OK;
    if (data == NULL && len > 0) {
        rc = MC_ERR_ARG;
    } else if (!v->speaking) {
        rc = MC_ERR_STATE;
    } else if (len > v->speak_bytes - v->speak_got) {
        rc = MC_ERR_TOO_BIG;
    }
    if (rc < 0) {
        d->bad_frames++;
        d->last_error = rc;
        mc_log(d->hal, MC_LOG_WARN, "binary frame refused (no speech open, or past its size)");
        return rc;
    }
    v->speak_got += (uint32_t)len;
    if (v->play && len > 0 && d->hal->audio_write(d->hal->ctx, data, len) < 0) {
        v->play = 0; /* the speaker failed: the text stands, the rest of this speech is dropped */
        mc_log(d->hal, MC_LOG_ERROR, "audio_write failed");
    }
    return MC_OK;
}

static void speech_over(mc_device_t *d, int cut) {
    mc_voice_t *v = &d->voice;
    if (v->play && d->hal->audio_ctl) d->hal->audio_ctl(d->hal->ctx, cut ? MC_AUDIO_PLAY_STOP : MC_AUDIO_PLAY_END);
    v->speaking = 0;
    v->play = 0;
}

void mc_voice_on_disconnect(mc_device_t *d) {
    mc_voice_t *v = &d->voice;
    if (v->recording) {
        capture(d, 0);
        v->recording = 0; /* the gateway dropped the listen with the session; pending stays */
    }
    if (v->speaking) speech_over(d, 1); /* audio cut by a lost link is not sent again */
}

void mc_voice_on_ptt(mc_device_t *d, int down) {
    if (!down) {
        capture(d, 0);
        return;
    }
    mc_voice_t *v = &d->voice;
    if (v->speaking && v->play) { /* barge-in: playback stops; the rest of this speech is not played */
        d->hal->audio_ctl(d->hal->ctx, MC_AUDIO_PLAY_STOP);
        v->play = 0;
    }
    if (mc_device_listen_start(d, 0) == MC_OK) capture(d, 1);
}

static int on_error(mc_device_t *d, const mc_frame_t *f) {
    mc_voice_t *v = &d->voice;
    v->last_error = f->voice_error;
    if (f->voice_error == MC_VERR_TTS_FAILED) {
        if (v->speaking && v->speak_seq == f->seq) speech_over(d, 1);
        return f->type;
    }
    int ours = f->listen_id[0] == '\0' || strcmp(f->listen_id, v->listen_id) == 0;
    if (!ours || !v->pending) return f->type; /* an answer to a turn already over */
    if (v->recording) capture(d, 0);
    v->recording = 0;
    switch (f->voice_error) {
    case MC_VERR_AUDIO_TOO_LONG: /* the audio was discarded: sending it again changes nothing */
    case MC_VERR_VOICE_OFF:
        forget(d);
        break;
    case MC_VERR_STT_FAILED:
        if (!f->transient) forget(d);
        break;
    default: /* no_listen, busy: the turn can be sent again under its id */
        break;
    }
    return f->type;
}

int mc_voice_on_frame(mc_device_t *d, const mc_frame_t *f) {
    mc_voice_t *v = &d->voice;
    switch (f->type) {
    case MC_FRAME_ERROR:
        return on_error(d, f);
    case MC_FRAME_TRANSCRIPT:
        if (!v->pending || strcmp(f->listen_id, v->listen_id) != 0) return f->type; /* stale */
        v->last_status = f->ack;
        v->transcripts++;
        forget(d);
        mc_log(d->hal, MC_LOG_INFO, f->text[0] ? f->text : "(nothing recognised)");
        return f->type;
    case MC_FRAME_SPEAK_START:
        if (v->speaking) speech_over(d, 1); /* a new speech replaces an unfinished one */
        if (strcmp(f->format, "pcm16") != 0 || f->channels != 1) {
            mc_log(d->hal, MC_LOG_WARN, "speech in an unknown format: shown, not played");
        }
        v->speaking = 1;
        v->speak_seq = f->seq;
        v->speak_bytes = (uint32_t)f->audio_bytes;
        v->speak_got = 0;
        v->play = d->hal->audio_write != NULL && d->hal->audio_ctl != NULL && !v->recording &&
                  strcmp(f->format, "pcm16") == 0 && f->channels == 1;
        if (v->play && d->hal->audio_ctl(d->hal->ctx, MC_AUDIO_PLAY_START) < 0) v->play = 0;
        if (d->state == MC_ST_LISTENING) {
            d->state = MC_ST_SPEAKING;
            mc_show(d->hal, MC_DISPLAY_STATE, mc_state_name(d->state));
        }
        return f->type;
    case MC_FRAME_SPEAK_END:
        if (!v->speaking || v->speak_seq != f->seq) return MC_ERR_STATE;
        if (v->speak_got == v->speak_bytes) {
            v->speeches++;
        } else {
            mc_log(d->hal, MC_LOG_WARN, "speech ended short of its advertised size");
        }
        speech_over(d, 0);
        if (d->state == MC_ST_SPEAKING) {
            d->state = MC_ST_LISTENING;
            mc_show(d->hal, MC_DISPLAY_STATE, mc_state_name(d->state));
        }
        return f->type;
    default:
        return f->type;
    }
}
