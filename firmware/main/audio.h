/*
 * Push-to-talk: while the button is held, 16-bit mono PCM is captured from the microphone codec
 * into a bounded PSRAM buffer; on release the utterance is handed to `on_utterance`. Playback
 * writes PCM to the speaker codec. Both run through esp_codec_dev.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "board.h"

typedef void (*audio_utterance_cb)(const int16_t *pcm, size_t samples, void *ctx);

/* Starts the push-to-talk task; at most `max_seconds` of audio per utterance (the rest is cut). */
esp_err_t audio_start(const board_io_t *io, int max_seconds, audio_utterance_cb on_utterance, void *ctx);

/* Plays 16-bit mono PCM at CONFIG_MICROCLAW_AUDIO_SAMPLE_RATE (blocks until written). */
esp_err_t audio_play(const int16_t *pcm, size_t samples);
