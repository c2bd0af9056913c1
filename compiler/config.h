/* Training configuration helpers shared by the driver's commands (private to
 * compiler/); gim_config_from_program is in gim_compiler.h. */
#ifndef GIM_CONFIG_H
#define GIM_CONFIG_H

#include "gim_runtime.h"
#include "gim_util.h"

/* The largest batch the compiler accepts (train block or --batch). */
#define GIM_MAX_BATCH ((int64_t)1 << 20)

/* Fills what only the model can tell: out_dir "runs/<model>" when unset. */
void gim_config_finish(gim_train_config *cfg, gim_arena *a, const char *model_name);

#endif
