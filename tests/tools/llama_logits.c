/* Oracle for tests: logits from llama.cpp's public API (llama.h) for given token ids.
 *
 *   llama_logits MODEL N_CTX N_BATCH OUT.f32 ID...
 *
 * Evaluates the ids from an empty cache in batches of N_BATCH (1: token by token,
 * as generation does) and writes float32 logits [n_ids, n_vocab] to OUT.f32.
 * Built by tests/tools/make_references.py against ~/.cache/llama.cpp-ref. */
#include <stdio.h>
#include <stdlib.h>
#include "llama.h"

static void quiet(enum ggml_log_level level, const char * text, void * data) {
    (void) level; (void) text; (void) data;
}

int main(int argc, char ** argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL N_CTX N_BATCH OUT.f32 ID...\n", argv[0]);
        return 1;
    }
    const int n_ctx = atoi(argv[2]), n_batch = atoi(argv[3]), n_ids = argc - 5;
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx; cp.n_batch = n_batch; cp.n_ubatch = n_batch;
    cp.n_threads = 2; cp.n_threads_batch = 2;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    FILE * out = fopen(argv[4], "wb");
    struct llama_batch batch = llama_batch_init(n_batch, 0, 1);
    for (int start = 0; start < n_ids; start += n_batch) {
        int n = n_ids - start < n_batch ? n_ids - start : n_batch;
        batch.n_tokens = n;
        for (int i = 0; i < n; i++) {
            batch.token[i] = atoi(argv[5 + start + i]);
            batch.pos[i] = start + i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
        for (int i = 0; i < n; i++) {
            fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
        }
    }
    fclose(out);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
