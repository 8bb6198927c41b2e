/*
 * The LVGL status screen: device id, state, pairing code, connection, last message, OTA progress.
 * Every setter takes the LVGL port lock, so any task may call it.
 */
#pragma once

#include "board.h"

esp_err_t ui_start(const board_io_t *io, const char *device_id);
void ui_set_state(const char *state);
void ui_set_pairing_code(const char *code); /* NULL or "" hides the code panel */
void ui_set_connection(const char *text);
void ui_set_last_message(const char *text);
void ui_set_ota_progress(int percent); /* < 0 hides the bar */
