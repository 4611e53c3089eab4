/* Oracle for tests: llama.cpp's public API (llama.h) on given token ids.
 *
 *   llama_oracle logits MODEL N_CTX N_BATCH OUT.f32 ID...
 *       evaluate the ids from an empty cache in batches of N_BATCH (1: token by
 *       token, as generation does); write float32 logits [n_ids, n_vocab].
 *   llama_oracle greedy MODEL N_CTX N_GEN ID...
 *       prompt in one batch, then N_GEN greedy (argmax) tokens, one per line:
 *       the TOP_K best "id logit" pairs (stops at an end-of-generation token).
 *
 * Built by tests/tools/make_references.py against ~/.cache/llama.cpp-ref. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

#define TOP_K 20

static void quiet(enum ggml_log_level level, const char * text, void * data) {
    (void) level; (void) text; (void) data;
}

static struct llama_context * open_context(struct llama_model * model, int n_ctx, int n_batch) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx; cp.n_batch = n_batch; cp.n_ubatch = n_batch;
    cp.n_threads = 2; cp.n_threads_batch = 2;
    return llama_init_from_model(model, cp);
}

static int decode(struct llama_context * ctx, struct llama_batch * batch, const int * ids,
                  int n, int pos0) {
    batch->n_tokens = n;
    for (int i = 0; i < n; i++) {
        batch->token[i] = ids[i];
        batch->pos[i] = pos0 + i;
        batch->n_seq_id[i] = 1;
        batch->seq_id[i][0] = 0;
        batch->logits[i] = 1;
    }
    return llama_decode(ctx, *batch);
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s logits MODEL N_CTX N_BATCH OUT.f32 ID...\n"
                        "       %s greedy MODEL N_CTX N_GEN ID...\n", argv[0], argv[0]);
        return 1;
    }
    const int greedy = strcmp(argv[1], "greedy") == 0;
    const int n_ctx = atoi(argv[3]), n = atoi(argv[4]);
    const int first_id = greedy ? 5 : 6, n_ids = argc - first_id;
    int * ids = malloc(sizeof(int) * (n_ids + 1));
    for (int i = 0; i < n_ids; i++) ids[i] = atoi(argv[first_id + i]);
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[2], llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[2]); return 1; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const int n_batch = greedy ? (n_ids > 1 ? n_ids : 1) : n;
    struct llama_context * ctx = open_context(model, n_ctx, n_batch);
    struct llama_batch batch = llama_batch_init(n_batch, 0, 1);
    if (!greedy) {
        FILE * out = fopen(argv[5], "wb");
        for (int start = 0; start < n_ids; start += n_batch) {
            int m = n_ids - start < n_batch ? n_ids - start : n_batch;
            if (decode(ctx, &batch, ids + start, m, start)) { fprintf(stderr, "decode failed\n"); return 1; }
            for (int i = 0; i < m; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
        }
        fclose(out);
    } else {
        if (decode(ctx, &batch, ids, n_ids, 0)) { fprintf(stderr, "decode failed\n"); return 1; }
        int pos = n_ids, last = n_ids - 1;
        for (int step = 0; step < n; step++) {
            const float * lg = llama_get_logits_ith(ctx, last);
            int top[TOP_K];
            for (int k = 0; k < TOP_K; k++) {
                top[k] = -1;
                for (int v = 0; v < n_vocab; v++) {
                    int taken = 0;
                    for (int j = 0; j < k; j++) taken |= top[j] == v;
                    if (!taken && (top[k] < 0 || lg[v] > lg[top[k]])) top[k] = v;
                }
                printf(k ? " %d %.6f" : "%d %.6f", top[k], lg[top[k]]);
            }
            printf("\n");
            const int best = top[0];
            if (llama_vocab_is_eog(vocab, best)) break;
            if (decode(ctx, &batch, (int *) &best, 1, pos++)) { fprintf(stderr, "decode failed\n"); return 1; }
            last = 0;
        }
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    free(ids);
    return 0;
}
