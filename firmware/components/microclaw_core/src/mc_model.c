/* mc_model: int8 FULLY_CONNECTED stack, bit-exact with TFLM's reference kernels (see mc_model.h). */
#include "mc_model.h"

#include <limits.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mc_model reads little-endian blobs on a little-endian target"
#endif

#define MC_MAGIC "MCM1"
#define MC_VERSION 1u
#define MC_LAYER_HEADER 24u

static uint32_t rd_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int32_t rd_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

mc_model_err_t mc_model_load(mc_model_t *model, const uint8_t *blob, size_t len) {
    if (model == NULL || blob == NULL) {
        return MC_MODEL_E_ARG;
    }
    memset(model, 0, sizeof *model);
    if (len < 12u) {
        return MC_MODEL_E_TRUNCATED;
    }
    if (memcmp(blob, MC_MAGIC, 4) != 0) {
        return MC_MODEL_E_MAGIC;
    }
    if (rd_u32(blob + 4) != MC_VERSION) {
        return MC_MODEL_E_VERSION;
    }
    uint32_t n_layers = rd_u32(blob + 8);
    if (n_layers == 0u || n_layers > MC_MODEL_MAX_LAYERS) {
        return MC_MODEL_E_SHAPE;
    }
    size_t pos = 12u;
    for (uint32_t i = 0; i < n_layers; i++) {
        mc_layer_t *layer = &model->layers[i];
        if (len - pos < MC_LAYER_HEADER) {
            return MC_MODEL_E_TRUNCATED;
        }
        const uint8_t *h = blob + pos;
        layer->in = rd_u32(h);
        layer->out = rd_u32(h + 4);
        layer->input_offset = rd_i32(h + 8);
        layer->output_offset = rd_i32(h + 12);
        layer->act_min = rd_i32(h + 16);
        layer->act_max = rd_i32(h + 20);
        pos += MC_LAYER_HEADER;
        if (layer->in == 0u || layer->out == 0u || layer->in > MC_MODEL_MAX_WIDTH ||
            layer->out > MC_MODEL_MAX_WIDTH) {
            return MC_MODEL_E_SHAPE;
        }
        if (i > 0u && layer->in != model->layers[i - 1u].out) {
            return MC_MODEL_E_SHAPE;
        }
        if (layer->input_offset < -127 || layer->input_offset > 128 || layer->output_offset < -128 ||
            layer->output_offset > 127 || layer->act_min < -128 || layer->act_max > 127 ||
            layer->act_min > layer->act_max) {
            return MC_MODEL_E_PARAM;
        }
        /* Both at most MC_MODEL_MAX_WIDTH (2^12): no overflow even with a 32-bit size_t. */
        size_t arrays = (size_t)layer->out * 12u;
        size_t weights = (size_t)layer->out * (size_t)layer->in;
        size_t body = arrays + weights;
        size_t padded = body + ((4u - (body % 4u)) % 4u);
        if (len - pos < padded) {
            return MC_MODEL_E_TRUNCATED;
        }
        layer->multiplier = blob + pos;
        layer->shift = blob + pos + (size_t)layer->out * 4u;
        layer->bias = blob + pos + (size_t)layer->out * 8u;
        layer->weights = (const int8_t *)(const void *)(blob + pos + arrays);
        for (uint32_t c = 0; c < layer->out; c++) {
            int32_t shift = rd_i32(layer->shift + (size_t)c * 4u);
            int32_t multiplier = rd_i32(layer->multiplier + (size_t)c * 4u);
            if (shift < -31 || shift > 30 || multiplier < 0) {
                return MC_MODEL_E_PARAM;
            }
        }
        pos += padded;
        if (layer->in > model->max_width) {
            model->max_width = layer->in;
        }
        if (layer->out > model->max_width) {
            model->max_width = layer->out;
        }
    }
    if (pos != len) {
        return MC_MODEL_E_TRAILING;
    }
    model->n_layers = n_layers;
    return MC_MODEL_OK;
}

uint32_t mc_model_input_size(const mc_model_t *model) {
    return model->n_layers ? model->layers[0].in : 0u;
}

uint32_t mc_model_output_size(const mc_model_t *model) {
    return model->n_layers ? model->layers[model->n_layers - 1u].out : 0u;
}

size_t mc_model_scratch_bytes(const mc_model_t *model) {
    return (size_t)model->max_width * 2u;
}

/* gemmlowp SaturatingRoundingDoublingHighMul. */
static int32_t rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (INT64_C(1) - (INT64_C(1) << 30));
    return (int32_t)((ab + nudge) / (INT64_C(1) << 31)); /* C division truncates, as in C++ */
}

/* gemmlowp RoundingDivideByPOT. */
static int32_t rounding_divide_by_pot(int32_t x, int exponent) {
    int32_t mask = (int32_t)((INT64_C(1) << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + ((x < 0) ? 1 : 0);
    return (x >> exponent) + ((remainder > threshold) ? 1 : 0);
}

int32_t mc_multiply_by_quantized_multiplier(int32_t x, int32_t quantized_multiplier, int shift) {
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    /* TFLM computes x * (1 << left) in int32; wrap the same way without undefined behaviour. */
    int32_t shifted = (int32_t)((uint32_t)x << left);
    return rounding_divide_by_pot(rounding_doubling_high_mul(shifted, quantized_multiplier), right);
}

static void fully_connected(const mc_layer_t *layer, const int8_t *input, int8_t *output) {
    for (uint32_t c = 0; c < layer->out; c++) {
        const int8_t *row = layer->weights + (size_t)c * layer->in;
        int64_t acc = 0;
        for (uint32_t i = 0; i < layer->in; i++) {
            acc += (int64_t)((int32_t)input[i] + layer->input_offset) * (int64_t)row[i];
        }
        acc += rd_i32(layer->bias + (size_t)c * 4u);
        int32_t acc32 = (int32_t)(uint32_t)(uint64_t)acc; /* int32 accumulator, as in the kernel */
        int32_t v = mc_multiply_by_quantized_multiplier(acc32, rd_i32(layer->multiplier + (size_t)c * 4u),
                                                        (int)rd_i32(layer->shift + (size_t)c * 4u));
        v += layer->output_offset;
        if (v < layer->act_min) {
            v = layer->act_min;
        }
        if (v > layer->act_max) {
            v = layer->act_max;
        }
        output[c] = (int8_t)v;
    }
}

mc_model_err_t mc_model_invoke(const mc_model_t *model, const int8_t *input, size_t input_len, int8_t *output,
                               size_t output_len, int8_t *scratch, size_t scratch_len) {
    if (model == NULL || input == NULL || output == NULL || model->n_layers == 0u) {
        return MC_MODEL_E_ARG;
    }
    if (input_len != mc_model_input_size(model) || output_len != mc_model_output_size(model)) {
        return MC_MODEL_E_ARG;
    }
    if (model->n_layers > 1u && (scratch == NULL || scratch_len < mc_model_scratch_bytes(model))) {
        return MC_MODEL_E_ARG;
    }
    const int8_t *in = input;
    for (uint32_t i = 0; i < model->n_layers; i++) {
        int8_t *out = (i + 1u == model->n_layers) ? output : scratch + (size_t)(i % 2u) * model->max_width;
        fully_connected(&model->layers[i], in, out);
        in = out;
    }
    return MC_MODEL_OK;
}

uint32_t mc_fnv1a(uint32_t hash, const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        hash ^= data[i];
        hash *= 0x01000193u;
    }
    return hash;
}

static int is_token_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '\'';
}

static void set_feature(int8_t *out, uint32_t dim, const char *prefix, const char *a, size_t a_len, const char *b,
                        size_t b_len) {
    uint32_t h = mc_fnv1a(MC_FNV1A_INIT, (const uint8_t *)prefix, strlen(prefix));
    h = mc_fnv1a(h, (const uint8_t *)a, a_len);
    if (b != NULL) {
        h = mc_fnv1a(h, (const uint8_t *)" ", 1u);
        h = mc_fnv1a(h, (const uint8_t *)b, b_len);
    }
    out[h % dim] = 1;
}

int mc_model_featurize(const char *text, size_t len, char *work, size_t work_len, int8_t *out, uint32_t dim) {
    if ((text == NULL && len > 0u) || work == NULL || work_len < len || out == NULL || dim == 0u) {
        return -1;
    }
    memset(out, 0, dim);
    /* Normalise: ASCII only, lower case, separators as ' ', each digit run as one '0'. */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80u) {
            continue; /* dropped, as encode("ascii", "ignore") does */
        }
        char ch = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
        if (!is_token_char(ch)) {
            ch = ' ';
        } else if (ch >= '0' && ch <= '9') {
            if (n > 0u && work[n - 1u] == '0') {
                continue; /* the run's first digit already became '0' */
            }
            ch = '0';
        }
        work[n++] = ch;
    }
    int tokens = 0;
    const char *prev = NULL;
    size_t prev_len = 0;
    size_t i = 0;
    while (i < n) {
        if (work[i] == ' ') {
            i++;
            continue;
        }
        size_t start = i;
        while (i < n && work[i] != ' ') {
            i++;
        }
        const char *tok = work + start;
        size_t tok_len = i - start;
        tokens++;
        set_feature(out, dim, "w:", tok, tok_len, NULL, 0u);
        if (prev != NULL) {
            set_feature(out, dim, "b:", prev, prev_len, tok, tok_len);
        }
        /* Character trigrams of "^" tok "$". */
        for (size_t k = 0; k + 3u <= tok_len + 2u; k++) {
            char tri[3];
            for (size_t j = 0; j < 3u; j++) {
                size_t p = k + j; /* position in "^tok$" */
                tri[j] = p == 0u ? '^' : (p == tok_len + 1u ? '$' : tok[p - 1u]);
            }
            set_feature(out, dim, "c:", tri, 3u, NULL, 0u);
        }
        prev = tok;
        prev_len = tok_len;
    }
    return tokens;
}
