/*
 * ESP32-S3-BOX-3: ILI9341 320x240 on SPI3, ES8311 (speaker, amplifier enable on a GPIO) and ES7210
 * (microphone array) on one I2C bus and one duplex I2S port, BOOT button as push-to-talk. Pins come
 * from Kconfig (defaults: the BOX-3's schematic).
 */
#include "board.h"

#include "driver/i2c_master.h"
#include "driver/i2s_std.h"
#include "driver/spi_master.h"
#include "esp_check.h"
#include "esp_codec_dev_defaults.h"
#include "esp_lcd_ili9341.h"
#include "esp_log.h"
#include "sdkconfig.h"

#if CONFIG_MICROCLAW_BOARD_ESP32_S3_BOX_3

static const char *TAG = "box3";

#define LCD_H_RES 320
#define LCD_V_RES 240
#define LCD_SPI_HOST SPI3_HOST
#define CODEC_I2C_PORT I2C_NUM_1

static i2c_master_bus_handle_t s_i2c;
static i2s_chan_handle_t s_tx, s_rx;

static esp_err_t init_i2c(void)
{
    const i2c_master_bus_config_t cfg = {
        .i2c_port = CODEC_I2C_PORT,
        .sda_io_num = CONFIG_MICROCLAW_PIN_I2C_SDA,
        .scl_io_num = CONFIG_MICROCLAW_PIN_I2C_SCL,
        .clk_source = I2C_CLK_SRC_DEFAULT,
        .glitch_ignore_cnt = 7,
        .flags.enable_internal_pullup = 1,
    };
    return i2c_new_master_bus(&cfg, &s_i2c);
}

static esp_err_t init_i2s(void)
{
    i2s_chan_config_t chan = I2S_CHANNEL_DEFAULT_CONFIG(I2S_NUM_0, I2S_ROLE_MASTER);
    chan.auto_clear_after_cb = true;
    ESP_RETURN_ON_ERROR(i2s_new_channel(&chan, &s_tx, &s_rx), TAG, "i2s channel");
    const i2s_std_config_t std = {
        .clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(CONFIG_MICROCLAW_AUDIO_SAMPLE_RATE),
        .slot_cfg = I2S_STD_PHILIPS_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_16BIT, I2S_SLOT_MODE_STEREO),
        .gpio_cfg = {
            .mclk = CONFIG_MICROCLAW_PIN_I2S_MCLK,
            .bclk = CONFIG_MICROCLAW_PIN_I2S_BCLK,
            .ws = CONFIG_MICROCLAW_PIN_I2S_WS,
            .dout = CONFIG_MICROCLAW_PIN_I2S_DOUT,
            .din = CONFIG_MICROCLAW_PIN_I2S_DIN,
        },
    };
    ESP_RETURN_ON_ERROR(i2s_channel_init_std_mode(s_tx, &std), TAG, "i2s tx");
    ESP_RETURN_ON_ERROR(i2s_channel_init_std_mode(s_rx, &std), TAG, "i2s rx");
    return ESP_OK;
}

static esp_err_t init_codecs(board_io_t *out)
{
    const audio_codec_i2s_cfg_t i2s_cfg = {.port = I2S_NUM_0, .rx_handle = s_rx, .tx_handle = s_tx};
    const audio_codec_data_if_t *data_if = audio_codec_new_i2s_data(&i2s_cfg);
    const audio_codec_gpio_if_t *gpio_if = audio_codec_new_gpio();
    audio_codec_i2c_cfg_t i2c_cfg = {.port = CODEC_I2C_PORT, .addr = ES8311_CODEC_DEFAULT_ADDR, .bus_handle = s_i2c};
    const audio_codec_ctrl_if_t *out_ctrl = audio_codec_new_i2c_ctrl(&i2c_cfg);
    if (data_if == NULL || gpio_if == NULL || out_ctrl == NULL) {
        return ESP_FAIL;
    }
    es8311_codec_cfg_t es8311 = {
        .ctrl_if = out_ctrl,
        .gpio_if = gpio_if,
        .codec_mode = ESP_CODEC_DEV_WORK_MODE_DAC,
        .pa_pin = CONFIG_MICROCLAW_PIN_PA_ENABLE,
        .use_mclk = true,
        .hw_gain = {.pa_voltage = 5.0, .codec_dac_voltage = 3.3},
    };
    const audio_codec_if_t *out_codec = es8311_codec_new(&es8311);
    i2c_cfg.addr = ES7210_CODEC_DEFAULT_ADDR;
    const audio_codec_ctrl_if_t *in_ctrl = audio_codec_new_i2c_ctrl(&i2c_cfg);
    es7210_codec_cfg_t es7210 = {.ctrl_if = in_ctrl, .mic_selected = ES7210_SEL_MIC1 | ES7210_SEL_MIC2};
    const audio_codec_if_t *in_codec = es7210_codec_new(&es7210);
    if (out_codec == NULL || in_codec == NULL) {
        return ESP_FAIL;
    }
    const esp_codec_dev_cfg_t spk = {.dev_type = ESP_CODEC_DEV_TYPE_OUT, .codec_if = out_codec, .data_if = data_if};
    const esp_codec_dev_cfg_t mic = {.dev_type = ESP_CODEC_DEV_TYPE_IN, .codec_if = in_codec, .data_if = data_if};
    out->speaker = esp_codec_dev_new(&spk);
    out->mic = esp_codec_dev_new(&mic);
    return (out->speaker && out->mic) ? ESP_OK : ESP_FAIL;
}

static esp_err_t init_lcd(board_io_t *out)
{
    const spi_bus_config_t bus = {
        .mosi_io_num = CONFIG_MICROCLAW_PIN_LCD_MOSI,
        .miso_io_num = GPIO_NUM_NC,
        .sclk_io_num = CONFIG_MICROCLAW_PIN_LCD_SCLK,
        .quadwp_io_num = GPIO_NUM_NC,
        .quadhd_io_num = GPIO_NUM_NC,
        .max_transfer_sz = LCD_H_RES * 40 * sizeof(uint16_t),
    };
    ESP_RETURN_ON_ERROR(spi_bus_initialize(LCD_SPI_HOST, &bus, SPI_DMA_CH_AUTO), TAG, "spi bus");
    const esp_lcd_panel_io_spi_config_t io = {
        .cs_gpio_num = CONFIG_MICROCLAW_PIN_LCD_CS,
        .dc_gpio_num = CONFIG_MICROCLAW_PIN_LCD_DC,
        .spi_mode = 0,
        .pclk_hz = 40 * 1000 * 1000,
        .trans_queue_depth = 10,
        .lcd_cmd_bits = 8,
        .lcd_param_bits = 8,
    };
    ESP_RETURN_ON_ERROR(esp_lcd_new_panel_io_spi((esp_lcd_spi_bus_handle_t)LCD_SPI_HOST, &io, &out->lcd_io),
                        TAG, "panel io");
    const esp_lcd_panel_dev_config_t panel = {
        .reset_gpio_num = CONFIG_MICROCLAW_PIN_LCD_RST,
        .rgb_ele_order = LCD_RGB_ELEMENT_ORDER_BGR,
        .bits_per_pixel = 16,
        .flags.reset_active_high = 1,
    };
    ESP_RETURN_ON_ERROR(esp_lcd_new_panel_ili9341(out->lcd_io, &panel, &out->lcd_panel), TAG, "ili9341");
    esp_lcd_panel_reset(out->lcd_panel);
    esp_lcd_panel_init(out->lcd_panel);
    esp_lcd_panel_mirror(out->lcd_panel, true, true);
    esp_lcd_panel_disp_on_off(out->lcd_panel, true);
    out->lcd_width = LCD_H_RES;
    out->lcd_height = LCD_V_RES;
    out->lcd_mirror_x = true;
    out->lcd_mirror_y = true;
    return ESP_OK;
}

static void backlight(bool on)
{
    gpio_set_level(CONFIG_MICROCLAW_PIN_LCD_BACKLIGHT, on ? 1 : 0);
}

static esp_err_t init(board_io_t *out)
{
    const gpio_config_t outputs = {
        .pin_bit_mask = 1ULL << CONFIG_MICROCLAW_PIN_LCD_BACKLIGHT,
        .mode = GPIO_MODE_OUTPUT,
    };
    ESP_RETURN_ON_ERROR(gpio_config(&outputs), TAG, "backlight gpio");
    const gpio_config_t ptt = {
        .pin_bit_mask = 1ULL << CONFIG_MICROCLAW_PIN_PTT,
        .mode = GPIO_MODE_INPUT,
        .pull_up_en = GPIO_PULLUP_ENABLE,
    };
    ESP_RETURN_ON_ERROR(gpio_config(&ptt), TAG, "ptt gpio");
    out->ptt = CONFIG_MICROCLAW_PIN_PTT;
    ESP_RETURN_ON_ERROR(init_i2c(), TAG, "i2c");
    ESP_RETURN_ON_ERROR(init_i2s(), TAG, "i2s");
    ESP_RETURN_ON_ERROR(init_codecs(out), TAG, "codecs");
    ESP_RETURN_ON_ERROR(init_lcd(out), TAG, "lcd");
    backlight(true);
    ESP_LOGI(TAG, "board ready");
    return ESP_OK;
}

static const board_t s_box3 = {.name = "esp32s3-box3", .init = init, .backlight = backlight};

const board_t *board_get(void)
{
    return &s_box3;
}

#endif /* CONFIG_MICROCLAW_BOARD_ESP32_S3_BOX_3 */
