/* A compiled model's lifetime and its parameters' initial values. */
#include "gim_runtime.h"
#include "rt_internal.h"

void gim_exec_model_free(gim_exec_model *m) {
    if (m && m->release) m->release(m);
}

/* PyTorch's default initialisation (kaiming_uniform with a = sqrt(5) for
 * weights, and the same 1/sqrt(fan_in) bound for biases) is U(-b, b) with
 * b = 1/sqrt(fan_in); lowering computes b per parameter into init_bound. */
void gim_rt_init_params(const gim_exec_module *m, float *params, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        const gim_param_info *p = &m->params[i];
        uint64_t h = p->name ? gim_rt_hash_name(p->name)
                             : ((uint64_t)(uint32_t)m->index << 32 | (uint32_t)i);
        uint64_t stream = GIM_RT_STREAM_INIT | (h & ~GIM_RT_STREAM_TAG_MASK);
        float b = p->init_bound, *dst = params + p->offset;
        for (int64_t k = 0; k < p->numel; k++)
            dst[k] = (2.0f * gim_rt_rand_uniform(seed, stream, (uint64_t)k) - 1.0f) * b;
    }
}
