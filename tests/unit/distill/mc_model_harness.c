/* Test driver for mc_model.c (tests/unit/distill/test_mc_model.py).
 *   harness invoke BLOB      stdin: one input row per line (ints) -> stdout: output row per line
 *   harness featurize DIM    stdin: one text per line -> stdout: sorted set indices per line
 *   harness load BLOB        -> stdout: the mc_model_load result code
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc_model.h"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1u);
    *len = fread(buf, 1, (size_t)size, f);
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        return 2;
    }
    static char line[1 << 16];
    if (strcmp(argv[1], "featurize") == 0) {
        unsigned dim = (unsigned)atoi(argv[2]);
        int8_t *out = malloc(dim);
        while (fgets(line, sizeof line, stdin) != NULL) {
            size_t n = strcspn(line, "\n");
            char *work = malloc(n + 1);
            if (mc_model_featurize(line, n, work, n + 1, out, dim) < 0) {
                return 3;
            }
            for (unsigned i = 0; i < dim; i++) {
                if (out[i]) {
                    printf("%u ", i);
                }
            }
            printf("\n");
            free(work);
        }
        free(out);
        return 0;
    }
    size_t len = 0;
    unsigned char *blob = read_file(argv[2], &len);
    if (blob == NULL) {
        return 2;
    }
    mc_model_t model;
    mc_model_err_t err = mc_model_load(&model, blob, len);
    if (strcmp(argv[1], "load") == 0) {
        printf("%d\n", (int)err);
        free(blob);
        return 0;
    }
    if (err != MC_MODEL_OK) {
        fprintf(stderr, "load failed: %d\n", (int)err);
        return 4;
    }
    uint32_t n_in = mc_model_input_size(&model), n_out = mc_model_output_size(&model);
    int8_t *in = malloc(n_in), *out = malloc(n_out), *scratch = malloc(mc_model_scratch_bytes(&model));
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *p = line;
        for (uint32_t i = 0; i < n_in; i++) {
            in[i] = (int8_t)strtol(p, &p, 10);
        }
        err = mc_model_invoke(&model, in, n_in, out, n_out, scratch, mc_model_scratch_bytes(&model));
        if (err != MC_MODEL_OK) {
            return 5;
        }
        for (uint32_t i = 0; i < n_out; i++) {
            printf("%d ", out[i]);
        }
        printf("\n");
    }
    free(in);
    free(out);
    free(scratch);
    free(blob);
    return 0;
}
