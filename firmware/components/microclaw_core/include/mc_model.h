/*
 * mc_model: the on-device router's int8 inference, bit-exact with TensorFlow Lite Micro.
 *
 * The model comes from the host's distillation pipeline (microclaw/distill, docs/distillation.md)
 * as a "model.mcm" blob in the signed bundle: a stack of int8 FULLY_CONNECTED layers with
 * per-channel requantization (multiplier, shift), int32 bias and an activation clamp (ReLU is
 * clamp(out_zero_point, 127)). mc_model_invoke computes exactly what TFLM's reference kernel
 * (reference_integer_ops::FullyConnectedPerChannel) computes: int32 accumulation of
 * (input + input_offset) * weight plus bias, MultiplyByQuantizedMultiplier (gemmlowp's saturating
 * rounding doubling high multiply, then rounding divide by a power of two), plus the output
 * offset, clamped. mc_model_featurize computes the input (hashed n-grams, 0/1) the way
 * microclaw/distill/features.py does.
 *
 * Portable C11, no allocation, no ESP-IDF headers. The blob is read with memcpy (any alignment)
 * and is untrusted until mc_model_load accepted it: every size is checked against the blob.
 * Assumes a little-endian target and arithmetic right shift of negative ints (gcc, xtensa-gcc).
 */
#ifndef MC_MODEL_H
#define MC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_MODEL_MAX_LAYERS 4
#define MC_MODEL_MAX_WIDTH 4096 /* largest layer input or output accepted */

typedef enum {
    MC_MODEL_OK = 0,
    MC_MODEL_E_ARG,       /* a NULL pointer or a buffer of the wrong size */
    MC_MODEL_E_TRUNCATED, /* the blob ends before what its header announces */
    MC_MODEL_E_MAGIC,     /* not an "MCM1" blob */
    MC_MODEL_E_VERSION,   /* a blob format this code does not know */
    MC_MODEL_E_SHAPE,     /* layer sizes out of range or not chained */
    MC_MODEL_E_PARAM,     /* a shift or activation range outside what the kernel allows */
    MC_MODEL_E_TRAILING,  /* bytes after the last layer */
} mc_model_err_t;

typedef struct {
    uint32_t in;
    uint32_t out;
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min;
    int32_t act_max;
    const uint8_t *multiplier; /* int32 LE [out] */
    const uint8_t *shift;      /* int32 LE [out] */
    const uint8_t *bias;       /* int32 LE [out] */
    const int8_t *weights;     /* [out][in], row-major */
} mc_layer_t;

typedef struct {
    uint32_t n_layers;
    uint32_t max_width;
    mc_layer_t layers[MC_MODEL_MAX_LAYERS];
} mc_model_t;

/* Parse and check a blob; the model points into it (keep the blob alive). */
mc_model_err_t mc_model_load(mc_model_t *model, const uint8_t *blob, size_t len);

uint32_t mc_model_input_size(const mc_model_t *model);
uint32_t mc_model_output_size(const mc_model_t *model);
/* Scratch bytes mc_model_invoke needs (two activation buffers of the widest layer). */
size_t mc_model_scratch_bytes(const mc_model_t *model);

/* int8 input [input_size] -> int8 output [output_size]. */
mc_model_err_t mc_model_invoke(const mc_model_t *model, const int8_t *input, size_t input_len, int8_t *output,
                               size_t output_len, int8_t *scratch, size_t scratch_len);

/* TFLM's MultiplyByQuantizedMultiplier (exposed for tests). */
int32_t mc_multiply_by_quantized_multiplier(int32_t x, int32_t quantized_multiplier, int shift);

/* 32-bit FNV-1a. */
uint32_t mc_fnv1a(uint32_t hash, const uint8_t *data, size_t len);
#define MC_FNV1A_INIT 0x811C9DC5u

/*
 * The model input for a text: out[dim] set to 0/1 from word unigrams, word bigrams and character
 * trigrams of "^token$", hashed with FNV-1a ("w:", "b:", "c:" prefixes). The text is lower-cased
 * ASCII (other bytes dropped), tokens are runs of [a-z0-9'] and each run of digits becomes "0".
 * work[work_len] (>= len bytes) holds the normalised text. Returns the number of tokens, or -1
 * for bad arguments.
 */
int mc_model_featurize(const char *text, size_t len, char *work, size_t work_len, int8_t *out, uint32_t dim);

#ifdef __cplusplus
}
#endif

#endif /* MC_MODEL_H */
