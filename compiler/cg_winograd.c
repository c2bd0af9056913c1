/* Code generator: 3×3, stride-1, pad-1 convolutions by Winograd's minimal
 * filtering F(m×m, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016), m = 2 or 4: forward, data gradient and weight
 * gradient.
 *
 * Each m×m block of outputs ("tile") of one channel pair is
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
 * with g the 3×3 kernel, d the α×α input window around the tile (α = m + 2),
 * and for F(2×2, 3×3)
 *     Bᵀ = | 1  0 -1  0 |    G = | 1    0    0  |    Aᵀ = | 1  1  1  0 |
 *          | 0  1  1  0 |        | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
 *          | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *          | 0  1  0 -1 |        | 0    0    1  |
 * (F(4×4, 3×3)'s 6×6 matrices, from the points 0, ±1, ±2 and ∞, are below).
 * Summed over input channels, the elementwise product becomes α² matrix
 * products, one per position ξ of the transformed tile:
 *     M[ξ] [Co, tiles] = U[ξ] [Co, Ci] · V[ξ] [Ci, tiles]
 * α²·Co·Ci multiplications per tile of m² outputs instead of 9·m²·Co·Ci:
 * 2.25× fewer FLOPs than im2col for F(2×2), 4× for F(4×4), for the cost of
 * the transforms (additions and multiplications by constants).
 *
 * The data gradient of such a convolution is again one: dx = conv(dy, w′)
 * with w′[c, o] = w[o, c] rotated by 180°, pad 1, so one emitter does both.
 *
 * Two layouts of the transformed tiles:
 *  - planes (F(2×2) only): V [α², Ci, n] and M [α², Co, n], the transforms'
 *    vectors along a row of tiles of one channel;
 *  - lanes: V, M tile-major, [α², n, Ci] and [α², n, Co], the transforms'
 *    vectors along CL channels (see "Vectors along channels" below). It takes
 *    images of one F(2×2) tile (≤ 2×2) and, with F(4×4), images whose planes
 *    are whole vectors (H·W a multiple of CL: the 4×4 and 8×8 layers), where
 *    a row of tiles would make vectors of one or two lanes.
 * All three take F(4×4) wherever the lanes layout does and F(2×2)
 * elsewhere. The weight gradient's F(4×4) sums dU over every tile of the
 * batch before Gᵀ dU G; checked against finite differences (test_op_conv)
 * and in training: 400 steps of fashion_gim, the mean loss of the last
 * hundred the same to 0.5 % per module as with F(2×2).
 *
 * Layout of the scratch: U [α², Co, Ci] (transformed once per call, before
 * the parallel loop; [α², Ci, Co] in the lanes layout), then per part V and M
 * for a chunk of n tiles (nimg images). The chunks run over the runtime's
 * pool like the im2col path (each part its own slice); every output element
 * is computed by exactly one part in a fixed order, so the bits do not depend
 * on the thread count. The transforms are vector code unrolled over the
 * tiles of an image at compile time (the image size is a constant): window
 * positions outside the image are constant zeros, left out of the sums, so
 * there are no branches. Sizes that are not multiples of m have a last row
 * or column of partial tiles, whose missing outputs are never stored. */
#include "cg.h"

/* Off switch and chunk size: variables so a benchmark can compare policies
 * (test_op_conv --bench). The chunk's V and M fit in about this many floats. */
int cg_conv_winograd = 1;
/* The lanes layout for images of one F(2×2) tile (≤ 2×2). */
int cg_winograd_lanes_c = 1;
/* F(4×4, 3×3) (in the lanes layout) for the forward and data gradient,
 * and, unless cg_winograd_f4_wgrad is 0, for the weight gradient. */
int cg_winograd_f4 = 1;
int cg_winograd_f4_wgrad = 1;
/* Channels per vector in the lanes layout. */
#define CL 8
/* 512 KB: against 256 KB the canonical model's forward and data gradients
 * ran 9-16% faster (test_op_conv --bench: fewer, wider products per ξ). */
int64_t cg_winograd_chunk_cap = (int64_t)1 << 17;
/* The weight gradient's products have the chunk's tiles as their inner
 * dimension, and gain from longer ones. */
int64_t cg_winograd_wgrad_cap = (int64_t)1 << 18;
/* F(4×4)'s chunks: its products are α² = 36 per chunk, each of n·Ci·Co, and
 * want more tiles than F(2×2)'s 16. */
int64_t cg_winograd_f4_cap = (int64_t)1 << 18;

/* Floats of partial dU the weight gradient's parts may hold together (4 MB). */
#define WGRAD_PARTIALS ((int64_t)1 << 20)

/* Tiles a generator unrolls at most (16×16 images); larger images take im2col. */
#define WINO_MAX_TILES 64
/* Pixels of an image in the lanes layout, at most (16×16). */
#define WINO_MAX_PIXELS 256
/* α at most, and α² */
#define WA 6
#define WA2 36

/* The transform matrices of F(m×m, 3×3), row-major. */
typedef struct wino_mats {
    int m, a;                 /* tile, transformed tile α = m + 2 */
    const float *BT;          /* α×α: V = Bᵀ d B */
    const float *G, *GT;      /* α×3, 3×α: U = G g Gᵀ; dg = Gᵀ dU G */
    const float *AT, *A;      /* m×α, α×m: Y = Aᵀ M A; dM = A dY Aᵀ */
} wino_mats;

static const float BT2[16] = {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1};
static const float G2[12] = {1, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0, 0, 1};
static const float GT2[12] = {1, 0.5f, 0.5f, 0, 0, 0.5f, -0.5f, 0, 0, 0.5f, 0.5f, 1};
static const float AT2[8] = {1, 1, 1, 0, 0, 1, -1, -1};
static const float A2[8] = {1, 0, 1, 1, 1, -1, 0, -1};

static const float BT4[36] = {4, 0, -5, 0, 1, 0,  0, -4, -4, 1, 1, 0,  0, 4, -4, -1, 1, 0,
                              0, -2, -1, 2, 1, 0, 0, 2, -1, -2, 1, 0,  0, 4, 0, -5, 0, 1};
static const float G4[18] = {1.0f / 4,  0,          0,          -1.0f / 6, -1.0f / 6, -1.0f / 6,
                             -1.0f / 6, 1.0f / 6,   -1.0f / 6,  1.0f / 24, 1.0f / 12, 1.0f / 6,
                             1.0f / 24, -1.0f / 12, 1.0f / 6,   0,         0,         1};
static const float GT4[18] = {1.0f / 4, -1.0f / 6, -1.0f / 6, 1.0f / 24, 1.0f / 24,  0,
                              0,        -1.0f / 6, 1.0f / 6,  1.0f / 12, -1.0f / 12, 0,
                              0,        -1.0f / 6, -1.0f / 6, 1.0f / 6,  1.0f / 6,   1};
static const float AT4[24] = {1, 1, 1, 1, 1, 0,  0, 1, -1, 2, -2, 0,  0, 1, 1, 4, 4, 0,  0, 1, -1, 8, -8, 1};
static const float A4[24] = {1, 0, 0, 0,  1, 1, 1, 1,  1, -1, 1, -1,  1, 2, 4, 8,  1, -2, 4, -8,  0, 0, 0, 1};

static const wino_mats F2 = {2, 4, BT2, G2, GT2, AT2, A2};
static const wino_mats F4 = {4, 6, BT4, G4, GT4, AT4, A4};

typedef struct wino_geo {
    const wino_mats *f;          /* F(2×2) or F(4×4) */
    int64_t X;                   /* α²: products per chunk */
    int64_t B, Ci, Co, H, W;     /* images, input and output channels, extent (in = out) */
    int64_t th, tw, T;           /* tiles per column, per row, per image */
    int64_t nimg, chunks;        /* images per chunk; chunks */
    int64_t items;               /* parallel items (weight gradient: runs of chunks) */
    int64_t u_floats, part_floats;
    bool bwd;                    /* data gradient: input dy, kernel flipped and transposed */
    bool wgrad;                  /* weight gradient: tiles of x and dy, out dw */
    bool lanes_c;                /* vectors along channels: V and M tile-major (see
                                    "Vectors along channels" below) */
} wino_geo;

/* Floats between consecutive ξ blocks of U, V or M holding `rows` rows of n:
 * a cache line more than the block, so that the blocks a transform writes
 * at once do not all fall into the same L1 set (their size is often a
 * multiple of 4 KB). */
static int64_t xstride(int64_t rows, int64_t n) { return cg_round16(rows * n) + 16; }

/* Fills g when n is a convolution this file computes. */
static bool wino_geometry(const gim_node *n, wino_geo *g) {
    if (!cg_conv_winograd) return false;
    if (n->op != GIM_OP_CONV2D && n->op != GIM_OP_CONV2D_BWD_DATA && n->op != GIM_OP_CONV2D_BWD_WEIGHT)
        return false;
    if (gim_attr_i(n, 1) != 3 || gim_attr_i(n, 2) != 1 || gim_attr_i(n, 3) != 1) return false;
    g->bwd = n->op == GIM_OP_CONV2D_BWD_DATA;
    g->wgrad = n->op == GIM_OP_CONV2D_BWD_WEIGHT;
    const gim_shape *ws = g->wgrad ? &n->shape : &n->in[1]->shape;
    if (ws->rank != 4 || ws->d[2] != 3 || ws->d[3] != 3) return false;
    /* the tensor the tiles are cut from: x (forward, weight gradient) or dy (data gradient) */
    const gim_shape *xs = &n->in[g->wgrad ? 1 : 0]->shape;
    const gim_shape *ys = g->wgrad ? &n->in[0]->shape : &n->shape;
    if (xs->rank < 3) return false;
    int64_t O = ws->d[0], C = ws->d[1];
    g->Ci = g->bwd ? O : C;
    g->Co = g->bwd ? C : O;
    g->H = xs->d[xs->rank - 2];
    g->W = xs->d[xs->rank - 1];
    if (xs->d[xs->rank - 3] != g->Ci || g->H < 1 || g->W < 1 || g->Ci < 1 || g->Co < 1) return false;
    /* The products shrink 2.25×, the transforms cost about (Ci + Co) per
     * tile against Ci·Co for the products: few channels (the first layer of
     * an image model) stay with im2col. Measured with test_op_conv --bench. */
    if (g->Ci * g->Co < 8 * (g->Ci + g->Co)) return false;
    if (gim_shape_numel(ys) != gim_shape_numel(xs) / g->Ci * g->Co) return false;
    g->B = gim_shape_numel(xs) / (g->Ci * g->H * g->W);
    int64_t hw = g->H * g->W;
    bool by_c = g->Ci % CL == 0 && g->Co % CL == 0;
    g->f = &F2;
    if (by_c && cg_winograd_f4 && (!g->wgrad || cg_winograd_f4_wgrad) && hw % CL == 0 && hw <= WINO_MAX_PIXELS) g->f = &F4;
    int m = g->f->m;
    g->th = (g->H + m - 1) / m;
    g->tw = (g->W + m - 1) / m;
    g->T = g->th * g->tw;
    if (g->T > WINO_MAX_TILES || g->B < 1) return false;
    g->lanes_c = g->f == &F4 || (cg_winograd_lanes_c && by_c && g->T == 1);
    g->X = (int64_t)g->f->a * g->f->a;
    int64_t per_img = g->X * (g->Ci + g->Co) * g->T;
    /* (the one-tile layout's weight gradient keeps a partial dU of Co·Ci·16
     * floats per part hot, and measured faster with the smaller chunks) */
    g->nimg = (g->wgrad && !g->lanes_c ? cg_winograd_wgrad_cap
               : g->f == &F4              ? cg_winograd_f4_cap
                                          : cg_winograd_chunk_cap) /
              per_img;
    if (g->nimg < 1) g->nimg = 1;
    if (g->nimg > g->B) g->nimg = g->B;
    g->chunks = (g->B + g->nimg - 1) / g->nimg;
    /* The weight gradient's parallel items, each a run of chunks summed into a
     * partial dU of its own: as many as the pool cuts (8), but fewer when the
     * partials would pass WGRAD_PARTIALS floats (zeroing and adding them is
     * memory traffic), never fewer than 2; a power of two, so that parts split
     * evenly over the threads. */
    g->items = g->chunks;
    if (g->wgrad) {
        int64_t du = g->X * xstride(g->Co, g->Ci), most = WGRAD_PARTIALS / du, p2 = 2;
        while (p2 * 2 <= most && p2 * 2 <= 8) p2 *= 2;
        if (g->items > p2 && most < 8) g->items = p2;
    }
    /* forward and data gradient: U, shared; weight gradient: no shared part,
     * each part's partial dU [α², Co, Ci] before its chunk */
    g->u_floats = g->wgrad ? 0 : g->X * xstride(g->Co, g->Ci);
    g->part_floats = g->X * (xstride(g->Ci, g->nimg * g->T) + xstride(g->Co, g->nimg * g->T)) +
                     (g->wgrad ? g->X * xstride(g->Co, g->Ci) : 0);
    return true;
}

bool cg_winograd_applies(const gim_node *n) {
    wino_geo g;
    return wino_geometry(n, &g);
}

int cg_winograd_tile(const gim_node *n) {
    wino_geo g;
    return wino_geometry(n, &g) ? g.f->m : 0;
}

int64_t cg_winograd_scratch_floats(const gim_node *n) {
    wino_geo g;
    if (!wino_geometry(n, &g)) return 0;
    return g.u_floats + cg_par_parts(g.items) * g.part_floats;
}

/* ---- small helpers --------------------------------------------------------------- */

/* base + k, folded when k is 0 */
static LLVMValueRef at(cg_ctx *c, LLVMValueRef base, LLVMValueRef i, int64_t k) {
    return cg_gep(c, base, k ? cg_addk(c, i, k) : i);
}

static LLVMValueRef load_at(cg_ctx *c, LLVMValueRef base, LLVMValueRef i, int64_t k) {
    return LLVMBuildLoad2(c->b, c->f32, at(c, base, i, k), "");
}

static void store_at(cg_ctx *c, LLVMValueRef base, LLVMValueRef i, int64_t k, LLVMValueRef v) {
    LLVMBuildStore(c->b, v, at(c, base, i, k));
}

static LLVMValueRef vec_load(cg_ctx *c, LLVMValueRef base, LLVMValueRef i, int64_t k, int64_t len) {
    LLVMValueRef v = LLVMBuildLoad2(c->b, LLVMVectorType(c->f32, (unsigned)len), at(c, base, i, k), "");
    LLVMSetAlignment(v, 4);
    return v;
}

static void vec_store(cg_ctx *c, LLVMValueRef base, LLVMValueRef i, int64_t k, LLVMValueRef v) {
    LLVMValueRef st = LLVMBuildStore(c->b, v, at(c, base, i, k));
    LLVMSetAlignment(st, 4);
}

/* shufflevector(a, b, idx[0..len)) with constant indices */
static LLVMValueRef shuffle(cg_ctx *c, LLVMValueRef a, LLVMValueRef b, const int64_t *idx, int64_t len) {
    LLVMValueRef m[2 * WINO_MAX_PIXELS];
    for (int64_t i = 0; i < len; i++) m[i] = cg_i32(c, (int32_t)idx[i]);
    return LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(m, (unsigned)len), "");
}

/* k (a float constant) in the type of v: a scalar or a splat vector */
static LLVMValueRef konst(cg_ctx *c, LLVMValueRef v, float k) {
    LLVMTypeRef t = LLVMTypeOf(v);
    LLVMValueRef s = cg_f32(c, k);
    if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return s;
    unsigned len = LLVMGetVectorSize(t);
    LLVMValueRef e[WINO_MAX_PIXELS];
    for (unsigned i = 0; i < len; i++) e[i] = s;
    return LLVMConstVector(e, len);
}

/* Σ_k coef[k]·v[k·vs] over k < n, in index order. Zero coefficients and
 * constant-zero values (the padding around an image) are left out; ±1 are an
 * addition or a subtraction. zero is returned when nothing is left. */
static LLVMValueRef lin(cg_ctx *c, const float *coef, LLVMValueRef const *v, int vs, int n, LLVMValueRef zero) {
    LLVMValueRef sum = NULL;
    for (int k = 0; k < n; k++) {
        float a = coef[k];
        LLVMValueRef x = v[k * vs];
        if (a == 0 || LLVMIsNull(x)) continue;
        float mag = a < 0 ? -a : a;
        LLVMValueRef t = mag == 1 ? x : LLVMBuildFMul(c->b, x, konst(c, x, sum ? mag : a), "");
        if (!sum) sum = a == -1 ? LLVMBuildFNeg(c->b, t, "") : t;
        else sum = a < 0 ? LLVMBuildFSub(c->b, sum, t, "") : LLVMBuildFAdd(c->b, sum, t, "");
    }
    return sum ? sum : zero;
}

/* out = L X Rᵀ: out[i][j] = Σ_l (Σ_k L[i][k] X[k][l]) R[j][l], with L r×s, X s×t
 * and R u×t row-major (out r×u). Every transform of this file is one:
 * V = Bᵀ d B, U = G g Gᵀ, Y = Aᵀ M A, dM = A dY Aᵀ, dg = Gᵀ dU G. */
static void sandwich(cg_ctx *c, const float *L, int r, int s, LLVMValueRef const *X, int t, const float *R, int u,
                     LLVMValueRef *out) {
    LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(X[0])), tmp[WA * WA];
    for (int i = 0; i < r; i++)
        for (int l = 0; l < t; l++) tmp[i * t + l] = lin(c, L + i * s, X + l, t, s, zero);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < u; j++) out[i * u + j] = lin(c, R + j * t, tmp + i * t, 1, t, zero);
}

/* ---- the weight transform ------------------------------------------------------------ */

/* U[ξ, co, ci] = (G g Gᵀ)[ξ] for every kernel, g = w[co, ci] (forward) or
 * w[ci, co] rotated by 180° (data gradient). */
static void weight_transform(cg_ctx *c, const wino_geo *g, LLVMValueRef w, LLVMValueRef U) {
    const wino_mats *f = g->f;
    /* output channels over the pool: each kernel's transform is its own */
    LLVMValueRef v[2] = {w, U};
    cg_par par = cg_par_begin(c, "wino.u", v, 2);
    w = v[0], U = v[1];
    cg_loop lo = cg_for_begin(c, par.begin, par.end, "co");
    cg_loop li = cg_for(c, g->Ci, "ci");
    LLVMValueRef kbase = g->bwd ? cg_mulk(c, cg_mad(c, li.iv, g->Co, lo.iv), 9)
                                : cg_mulk(c, cg_mad(c, lo.iv, g->Ci, li.iv), 9);
    LLVMValueRef k[9], u[WA2];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) k[i * 3 + j] = load_at(c, w, kbase, g->bwd ? (2 - i) * 3 + (2 - j) : i * 3 + j);
    sandwich(c, f->G, f->a, 3, k, 3, f->G, f->a, u);
    /* U[ξ] [Co, Ci]; transposed, [Ci, Co], for the lanes layout's products */
    LLVMValueRef ubase = g->lanes_c ? cg_mad(c, li.iv, g->Co, lo.iv) : cg_mad(c, lo.iv, g->Ci, li.iv);
    for (int64_t xi = 0; xi < g->X; xi++) store_at(c, U, ubase, xi * xstride(g->Co, g->Ci), u[xi]);
    cg_for_end(c, &li);
    cg_for_end(c, &lo);
    cg_par_end(c, &par, g->Co);
}

/* ---- planes: vectors along a row of tiles (F(2×2)) -------------------------------------
 * Lane tx of a vector belongs to tile (ty, tx). An image row is loaded as one
 * <W x float>; the window columns 2tx − 1 + j the tiles need are shuffled out
 * of it (zeros past the edges). */

/* The loop nest every tile transform runs in: image b of the chunk, then
 * channel ch of `channels`. img is the offset of the (image, channel) plane
 * in the tensor (floats), blk the offset of its first tile in a [channels, n]
 * block of V or M (n = nimg·T tiles in the chunk). */
typedef struct plane_loop {
    cg_loop lb, lc;
    LLVMValueRef img, blk;
    LLVMValueRef zrow, zv;   /* zero vectors of an image row and of a row of tiles */
} plane_loop;

static plane_loop planes_begin(cg_ctx *c, const wino_geo *g, LLVMValueRef b0, int64_t nimg, int64_t channels,
                               const char *name) {
    plane_loop p;
    p.lb = cg_for(c, nimg, "img");
    p.lc = cg_for(c, channels, name);
    p.img = cg_mulk(c, cg_mad(c, cg_add(c, b0, p.lb.iv), channels, p.lc.iv), g->H * g->W);
    p.blk = cg_mad(c, p.lc.iv, nimg * g->T, cg_mulk(c, p.lb.iv, g->T));
    p.zrow = LLVMConstNull(LLVMVectorType(c->f32, (unsigned)g->W));
    p.zv = LLVMConstNull(LLVMVectorType(c->f32, (unsigned)g->tw));
    return p;
}

static void planes_end(cg_ctx *c, plane_loop *p) {
    cg_for_end(c, &p->lc);
    cg_for_end(c, &p->lb);
}

/* V[ξ, ci, b·T + t] = (Bᵀ d B)[ξ] for every tile t of the chunk's nimg images
 * (the chunk starts at image b0). */
static void input_transform(cg_ctx *c, const wino_geo *g, LLVMValueRef x, LLVMValueRef b0, int64_t nimg,
                            LLVMValueRef V) {
    int64_t n = nimg * g->T, tw = g->tw;
    plane_loop pl = planes_begin(c, g, b0, nimg, g->Ci, "ci");
    LLVMValueRef xbase = pl.img, vbase = pl.blk, zrow = pl.zrow, zv = pl.zv;
    for (int64_t ty = 0; ty < g->th; ty++) {
        LLVMValueRef d[16], v[16];   /* window row i, column j, as a vector over tx */
        for (int i = 0; i < 4; i++) {
            int64_t r = 2 * ty - 1 + i;
            if (r < 0 || r >= g->H) {
                for (int j = 0; j < 4; j++) d[i * 4 + j] = zv;
                continue;
            }
            LLVMValueRef row = vec_load(c, x, xbase, r * g->W, g->W);
            for (int j = 0; j < 4; j++) {
                int64_t idx[WINO_MAX_TILES];
                for (int64_t t = 0; t < tw; t++) {
                    int64_t q = 2 * t - 1 + j;
                    idx[t] = q >= 0 && q < g->W ? q : g->W;   /* g->W: the zero row's first lane */
                }
                d[i * 4 + j] = shuffle(c, row, zrow, idx, tw);
            }
        }
        sandwich(c, BT2, 4, 4, d, 4, BT2, 4, v);
        for (int xi = 0; xi < 16; xi++) vec_store(c, V, vbase, xi * xstride(g->Ci, n) + ty * tw, v[xi]);
    }
    planes_end(c, &pl);
}

/* What the output transform applies as it stores: the bias (forward), a
 * fused ReLU (forward), or a fused ReLU gradient's mask y > 0 (data gradient;
 * y has dx's layout). */
typedef struct wino_epilogue {
    LLVMValueRef bias, mask;
    bool relu;
} wino_epilogue;

/* A row of len outputs about to be stored at y + i + k: with a fused ReLU
 * its positive part, with a fused ReLU gradient kept where the mask (y of
 * the ReLU, dx's layout) is positive. */
static LLVMValueRef epilogue_keep(cg_ctx *c, const wino_epilogue *ep, LLVMValueRef row, LLVMValueRef i, int64_t k,
                                  int64_t len) {
    if (ep->relu) return cg_keep_positive(c, row, row);
    if (ep->mask) return cg_keep_positive(c, vec_load(c, ep->mask, i, k, len), row);
    return row;
}

/* y[b0 + b, co, 2ty + i, 2tx + j] = (Aᵀ m A)[i, j] (+ bias[co]) for every tile,
 * m[ξ] = M[ξ, co, b·T + t]; outputs past an odd edge are not stored. */
static void output_transform(cg_ctx *c, const wino_geo *g, LLVMValueRef M, LLVMValueRef b0, int64_t nimg,
                             LLVMValueRef y, const wino_epilogue *ep) {
    LLVMValueRef bias = ep->bias;
    int64_t n = nimg * g->T, tw = g->tw;
    plane_loop pl = planes_begin(c, g, b0, nimg, g->Co, "co");
    LLVMValueRef ybase = pl.img, mbase = pl.blk;
    LLVMValueRef brow = NULL;
    if (bias) {
        LLVMTypeRef rowt = LLVMVectorType(c->f32, (unsigned)g->W);
        LLVMValueRef one = LLVMBuildInsertElement(c->b, LLVMGetPoison(rowt), cg_loadf(c, bias, pl.lc.iv), cg_i32(c, 0), "");
        int64_t zeros[WINO_MAX_PIXELS] = {0};
        brow = shuffle(c, one, LLVMGetPoison(rowt), zeros, g->W);
    }
    for (int64_t ty = 0; ty < g->th; ty++) {
        LLVMValueRef m[16], o[4];
        for (int xi = 0; xi < 16; xi++) m[xi] = vec_load(c, M, mbase, xi * xstride(g->Co, n) + ty * tw, tw);
        sandwich(c, AT2, 2, 4, m, 4, AT2, 2, o);
        for (int i = 0; i < 2; i++) {
            int64_t r = 2 * ty + i;
            if (r >= g->H) continue;
            /* the output row interleaves the tiles' two columns: o0[0] o1[0] o0[1] o1[1] ... */
            int64_t idx[WINO_MAX_PIXELS];
            for (int64_t q = 0; q < g->W; q++) idx[q] = (q % 2) * tw + q / 2;
            LLVMValueRef row = shuffle(c, o[i * 2], o[i * 2 + 1], idx, g->W);
            if (brow) row = LLVMBuildFAdd(c->b, row, brow, "");
            vec_store(c, y, ybase, r * g->W, epilogue_keep(c, ep, row, ybase, r * g->W, g->W));
        }
    }
    planes_end(c, &pl);
}

/* dM[ξ, co, b·T + t] = (A dY Aᵀ)[ξ] for every tile of the chunk, dY the 2×2
 * block of dy (zeros past an odd edge). */
static void grad_transform(cg_ctx *c, const wino_geo *g, LLVMValueRef dy, LLVMValueRef b0, int64_t nimg,
                           LLVMValueRef dM) {
    int64_t n = nimg * g->T, tw = g->tw;
    plane_loop pl = planes_begin(c, g, b0, nimg, g->Co, "co");
    LLVMValueRef ybase = pl.img, mbase = pl.blk, zrow = pl.zrow, zv = pl.zv;
    for (int64_t ty = 0; ty < g->th; ty++) {
        LLVMValueRef e[4], m[16];   /* dY[k][l] as vectors over tx */
        for (int k = 0; k < 2; k++) {
            int64_t r = 2 * ty + k;
            if (r >= g->H) {
                e[k * 2] = e[k * 2 + 1] = zv;
                continue;
            }
            LLVMValueRef row = vec_load(c, dy, ybase, r * g->W, g->W);
            for (int l = 0; l < 2; l++) {
                int64_t idx[WINO_MAX_TILES];
                for (int64_t t = 0; t < tw; t++) idx[t] = 2 * t + l < g->W ? 2 * t + l : g->W;
                e[k * 2 + l] = shuffle(c, row, zrow, idx, tw);
            }
        }
        sandwich(c, A2, 4, 2, e, 2, A2, 4, m);
        for (int xi = 0; xi < 16; xi++) vec_store(c, dM, mbase, xi * xstride(g->Co, n) + ty * tw, m[xi]);
    }
    planes_end(c, &pl);
}

/* ---- Vectors along channels (the lanes layout) ---------------------------------------
 * When a row of tiles is one or two tiles, vectors along it would have one or
 * two lanes. The vectors run along CL channels instead, and V, M and dM are
 * tile-major, [ξ][tile][channel], so that a vector is CL consecutive floats.
 * A block of CL channels of one image is loaded and turned into a vector per
 * pixel (px[p], lane k: channel k's pixel p), every tile of the image is
 * transformed from those, and the outputs are turned back the same way. The
 * products turn around accordingly: Mᵀ[ξ] = Vᵀ[ξ] Uᵀ[ξ] (U stored
 * transposed), dU[ξ] += dMᵀ[ξ]ᵀ Vᵀ[ξ].
 * Measured on the canonical 2×2 layer (128 channels, F(2×2)): forward and
 * data gradient 4.5 -> 3.2 ms, weight gradient 5.7 -> 4.6 ms. */

/* r[k] = column k of the 8×8 matrix whose rows are v[0..8): the usual three
 * rounds of two-vector shuffles (unpack, pairs, halves). */
static void transpose8(cg_ctx *c, LLVMValueRef const *v, LLVMValueRef *r) {
    static const int64_t lo[8] = {0, 8, 1, 9, 4, 12, 5, 13}, hi[8] = {2, 10, 3, 11, 6, 14, 7, 15};
    static const int64_t p0[8] = {0, 1, 8, 9, 4, 5, 12, 13}, p1[8] = {2, 3, 10, 11, 6, 7, 14, 15};
    static const int64_t h0[8] = {0, 1, 2, 3, 8, 9, 10, 11}, h1[8] = {4, 5, 6, 7, 12, 13, 14, 15};
    LLVMValueRef t[8], s[8];
    for (int q = 0; q < 4; q++) {
        t[2 * q] = shuffle(c, v[2 * q], v[2 * q + 1], lo, 8);
        t[2 * q + 1] = shuffle(c, v[2 * q], v[2 * q + 1], hi, 8);
    }
    /* t0 = rows 0,1 interleaved (cols 0,1 | 4,5), t1 = (cols 2,3 | 6,7); t2, t3 rows 2,3 ... */
    for (int q = 0; q < 2; q++)
        for (int h = 0; h < 2; h++) {
            s[4 * q + 2 * h] = shuffle(c, t[4 * q + h], t[4 * q + 2 + h], p0, 8);
            s[4 * q + 2 * h + 1] = shuffle(c, t[4 * q + h], t[4 * q + 2 + h], p1, 8);
        }
    /* s[0..4): columns 0, 1, 2, 3 of rows 0-3 (with 4-7 in the upper half); s[4..8) rows 4-7 */
    for (int k = 0; k < 4; k++) {
        r[k] = shuffle(c, s[k], s[4 + k], h0, 8);
        r[k + 4] = shuffle(c, s[k], s[4 + k], h1, 8);
    }
}

/* px[p] (p < H·W): pixel p of CL channels' planes starting at base + i. */
static void lanes_load(cg_ctx *c, const wino_geo *g, LLVMValueRef base, LLVMValueRef i, LLVMValueRef *px) {
    int64_t hw = g->H * g->W;
    if (hw % CL == 0) {   /* CL×CL blocks: channels by eight consecutive pixels */
        for (int64_t q = 0; q < hw / CL; q++) {
            LLVMValueRef rows[CL];
            for (int k = 0; k < CL; k++) rows[k] = vec_load(c, base, i, k * hw + q * CL, CL);
            transpose8(c, rows, px + q * CL);
        }
        return;
    }
    LLVMValueRef all = vec_load(c, base, i, 0, CL * hw);   /* hw ≤ 4: one vector */
    for (int64_t p = 0; p < hw; p++) {
        int64_t idx[CL];
        for (int k = 0; k < CL; k++) idx[k] = k * hw + p;
        px[p] = shuffle(c, all, LLVMGetPoison(LLVMTypeOf(all)), idx, CL);
    }
}

/* The inverse: stores px back as CL channels' planes at base + i, each
 * vector through the epilogue (ReLU, or the ReLU gradient's mask). */
static void lanes_store(cg_ctx *c, const wino_geo *g, LLVMValueRef *px, LLVMValueRef base, LLVMValueRef i,
                        const wino_epilogue *ep) {
    int64_t hw = g->H * g->W;
    if (hw % CL == 0) {
        for (int64_t q = 0; q < hw / CL; q++) {
            LLVMValueRef rows[CL];
            transpose8(c, px + q * CL, rows);
            for (int k = 0; k < CL; k++)
                vec_store(c, base, i, k * hw + q * CL, epilogue_keep(c, ep, rows[k], i, k * hw + q * CL, CL));
        }
        return;
    }
    LLVMValueRef cat[4] = {px[0], NULL, NULL, NULL};
    for (int64_t p = 1; p < hw; p++) cat[p] = px[p];
    int64_t len = CL;
    for (int64_t cnt = hw; cnt > 1; cnt /= 2, len *= 2) {   /* hw is 1, 2 or 4 */
        int64_t idx[4 * CL];
        for (int64_t k = 0; k < 2 * len; k++) idx[k] = k;
        for (int64_t q = 0; q < cnt / 2; q++) cat[q] = shuffle(c, cat[2 * q], cat[2 * q + 1], idx, 2 * len);
    }
    /* cat[0][p·CL + k] holds channel k's pixel p; planes want k·hw + p */
    int64_t idx[4 * CL];
    for (int k = 0; k < CL; k++)
        for (int64_t p = 0; p < hw; p++) idx[k * hw + p] = p * CL + k;
    LLVMValueRef row = shuffle(c, cat[0], LLVMGetPoison(LLVMTypeOf(cat[0])), idx, CL * hw);
    vec_store(c, base, i, 0, epilogue_keep(c, ep, row, i, 0, CL * hw));
}

/* The loop nest of the lanes transforms: image b of the chunk, then a block
 * cb of CL channels of `channels`; img is the block's offset in the tensor,
 * blk its offset in a tile-major [n, channels] block of V or M (the image's
 * first tile; tile t is t·channels further). */
typedef struct lanes_loop {
    cg_loop lb, lc;
    LLVMValueRef img, blk, zv;
} lanes_loop;

static lanes_loop lanes_begin(cg_ctx *c, const wino_geo *g, LLVMValueRef b0, int64_t nimg, int64_t channels) {
    lanes_loop l;
    l.lb = cg_for(c, nimg, "img");
    l.lc = cg_for(c, channels / CL, "cb");
    l.img = cg_mulk(c, cg_mad(c, cg_add(c, b0, l.lb.iv), channels / CL, l.lc.iv), CL * g->H * g->W);
    l.blk = cg_mad(c, l.lb.iv, channels * g->T, cg_mulk(c, l.lc.iv, CL));
    l.zv = LLVMConstNull(LLVMVectorType(c->f32, CL));
    return l;
}

static void lanes_end(cg_ctx *c, lanes_loop *l) {
    cg_for_end(c, &l->lc);
    cg_for_end(c, &l->lb);
}

/* px[r·W + q], or zero outside the image */
static LLVMValueRef pixel(const wino_geo *g, LLVMValueRef *px, int64_t r, int64_t q, LLVMValueRef zv) {
    return r >= 0 && r < g->H && q >= 0 && q < g->W ? px[r * g->W + q] : zv;
}

/* V[ξ, b·T + t, ci] = (Bᵀ d B)[ξ] for every tile t of the chunk's images. */
static void lanes_input(cg_ctx *c, const wino_geo *g, LLVMValueRef x, LLVMValueRef b0, int64_t nimg, LLVMValueRef V) {
    const wino_mats *f = g->f;
    int64_t n = nimg * g->T;
    int a = f->a, m = f->m;
    lanes_loop l = lanes_begin(c, g, b0, nimg, g->Ci);
    LLVMValueRef px[WINO_MAX_PIXELS];
    lanes_load(c, g, x, l.img, px);
    for (int64_t ty = 0; ty < g->th; ty++)
        for (int64_t tx = 0; tx < g->tw; tx++) {
            LLVMValueRef d[WA2], v[WA2];
            for (int i = 0; i < a; i++)
                for (int j = 0; j < a; j++) d[i * a + j] = pixel(g, px, m * ty - 1 + i, m * tx - 1 + j, l.zv);
            sandwich(c, f->BT, a, a, d, a, f->BT, a, v);
            int64_t t = ty * g->tw + tx;
            for (int64_t xi = 0; xi < g->X; xi++) vec_store(c, V, l.blk, xi * xstride(g->Ci, n) + t * g->Ci, v[xi]);
        }
    lanes_end(c, &l);
}

/* y[b0 + b, co, m·ty + i, m·tx + j] = (Aᵀ M A)[i, j] (+ bias[co]) for every tile;
 * outputs past the image's edge are not stored. */
static void lanes_output(cg_ctx *c, const wino_geo *g, LLVMValueRef M, LLVMValueRef b0, int64_t nimg, LLVMValueRef y,
                         const wino_epilogue *ep) {
    const wino_mats *f = g->f;
    int64_t n = nimg * g->T;
    int a = f->a, m = f->m;
    lanes_loop l = lanes_begin(c, g, b0, nimg, g->Co);
    LLVMValueRef bias = ep->bias ? vec_load(c, ep->bias, cg_mulk(c, l.lc.iv, CL), 0, CL) : NULL;
    LLVMValueRef px[WINO_MAX_PIXELS];
    for (int64_t ty = 0; ty < g->th; ty++)
        for (int64_t tx = 0; tx < g->tw; tx++) {
            int64_t t = ty * g->tw + tx;
            LLVMValueRef mv[WA2], o[16];
            for (int64_t xi = 0; xi < g->X; xi++) mv[xi] = vec_load(c, M, l.blk, xi * xstride(g->Co, n) + t * g->Co, CL);
            sandwich(c, f->AT, m, a, mv, a, f->AT, m, o);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++) {
                    int64_t r = m * ty + i, q = m * tx + j;
                    if (r < g->H && q < g->W) px[r * g->W + q] = bias ? LLVMBuildFAdd(c->b, o[i * m + j], bias, "") : o[i * m + j];
                }
        }
    lanes_store(c, g, px, y, l.img, ep);
    lanes_end(c, &l);
}

/* dM[ξ, b·T + t, co] = (A dY Aᵀ)[ξ], dY the m×m block of dy (zeros past the edge). */
static void lanes_grad(cg_ctx *c, const wino_geo *g, LLVMValueRef dy, LLVMValueRef b0, int64_t nimg, LLVMValueRef dM) {
    const wino_mats *f = g->f;
    int64_t n = nimg * g->T;
    int a = f->a, m = f->m;
    lanes_loop l = lanes_begin(c, g, b0, nimg, g->Co);
    LLVMValueRef px[WINO_MAX_PIXELS];
    lanes_load(c, g, dy, l.img, px);
    for (int64_t ty = 0; ty < g->th; ty++)
        for (int64_t tx = 0; tx < g->tw; tx++) {
            LLVMValueRef e[16], mm[WA2];
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++) e[i * m + j] = pixel(g, px, m * ty + i, m * tx + j, l.zv);
            sandwich(c, f->A, a, m, e, m, f->A, a, mm);
            int64_t t = ty * g->tw + tx;
            for (int64_t xi = 0; xi < g->X; xi++) vec_store(c, dM, l.blk, xi * xstride(g->Co, n) + t * g->Co, mm[xi]);
        }
    lanes_end(c, &l);
}

/* One chunk of nimg images from image b0: transform in, α² products, transform out. */
static void wino_chunk(cg_ctx *c, const wino_geo *g, LLVMValueRef x, LLVMValueRef U, LLVMValueRef part,
                       LLVMValueRef b0, int64_t nimg, LLVMValueRef y, const wino_epilogue *ep) {
    int64_t n = nimg * g->T;
    LLVMValueRef V = part, M = cg_gep(c, part, cg_i64(c, g->X * xstride(g->Ci, n)));
    if (g->lanes_c) {
        lanes_input(c, g, x, b0, nimg, V);
        for (int64_t xi = 0; xi < g->X; xi++)   /* Mᵀ[ξ] [n, Co] = Vᵀ[ξ] [n, Ci] · Uᵀ[ξ] [Ci, Co] */
            cg_sgemm(c, false, false, n, g->Co, g->Ci, 1.0f, cg_gep(c, V, cg_i64(c, xi * xstride(g->Ci, n))), g->Ci,
                     cg_gep(c, U, cg_i64(c, xi * xstride(g->Co, g->Ci))), g->Co, 0.0f,
                     cg_gep(c, M, cg_i64(c, xi * xstride(g->Co, n))), g->Co);
        lanes_output(c, g, M, b0, nimg, y, ep);
        return;
    }
    input_transform(c, g, x, b0, nimg, V);
    for (int64_t xi = 0; xi < g->X; xi++)
        cg_sgemm(c, false, false, g->Co, n, g->Ci, 1.0f, cg_gep(c, U, cg_i64(c, xi * xstride(g->Co, g->Ci))), g->Ci,
                 cg_gep(c, V, cg_i64(c, xi * xstride(g->Ci, n))), n, 0.0f, cg_gep(c, M, cg_i64(c, xi * xstride(g->Co, n))),
                 n);
    output_transform(c, g, M, b0, nimg, y, ep);
}

/* ---- the weight gradient ----------------------------------------------------------
 * Differentiating Y = Aᵀ [U ⊙ V] A with U = G g Gᵀ:
 *     dU[ξ] [Co, Ci] = Σ_tiles dM[ξ] [Co, t] · V[ξ] [Ci, t]ᵀ,   dM = A dY Aᵀ per tile
 *     dg = Gᵀ dU G
 * V is the forward's input transform of x. Each part sums its chunks into a
 * partial dU of its own; the partials are added in part order (parallel over
 * output channels) and transformed back into dw. */

/* One chunk: V from x, dM from dy, dU[ξ] += dM[ξ] V[ξ]ᵀ. */
static void wgrad_chunk(cg_ctx *c, const wino_geo *g, LLVMValueRef x, LLVMValueRef dy, LLVMValueRef dU,
                        LLVMValueRef b0, int64_t nimg) {
    int64_t n = nimg * g->T;
    LLVMValueRef V = cg_gep(c, dU, cg_i64(c, g->X * xstride(g->Co, g->Ci)));
    LLVMValueRef dM = cg_gep(c, V, cg_i64(c, g->X * xstride(g->Ci, n)));
    if (g->lanes_c) {
        lanes_input(c, g, x, b0, nimg, V);
        lanes_grad(c, g, dy, b0, nimg, dM);
        for (int64_t xi = 0; xi < g->X; xi++)   /* dU[ξ] [Co, Ci] += (dMᵀ[ξ] [n, Co])ᵀ · Vᵀ[ξ] [n, Ci] */
            cg_sgemm(c, true, false, g->Co, g->Ci, n, 1.0f, cg_gep(c, dM, cg_i64(c, xi * xstride(g->Co, n))), g->Co,
                     cg_gep(c, V, cg_i64(c, xi * xstride(g->Ci, n))), g->Ci, 1.0f,
                     cg_gep(c, dU, cg_i64(c, xi * xstride(g->Co, g->Ci))), g->Ci);
        return;
    }
    input_transform(c, g, x, b0, nimg, V);
    grad_transform(c, g, dy, b0, nimg, dM);
    for (int64_t xi = 0; xi < g->X; xi++)
        cg_sgemm(c, false, true, g->Co, g->Ci, n, 1.0f, cg_gep(c, dM, cg_i64(c, xi * xstride(g->Co, n))), n,
                 cg_gep(c, V, cg_i64(c, xi * xstride(g->Ci, n))), n, 1.0f, cg_gep(c, dU, cg_i64(c, xi * xstride(g->Co, g->Ci))),
                 g->Ci);
}

static int wino_wgrad(cg_ctx *c, const wino_geo *g, const gim_node *n, LLVMValueRef scratch) {
    const wino_mats *f = g->f;
    LLVMValueRef dy = cg_buf(c, n->in[0]), x = cg_buf(c, n->in[1]), dw = cg_buf(c, n);
    int64_t full = g->B / g->nimg, rest = g->B % g->nimg, parts = cg_par_parts(g->items);
    int64_t nu = g->X * xstride(g->Co, g->Ci);
    LLVMValueRef v[3] = {x, dy, scratch};
    cg_par p = cg_par_begin(c, "wino.dw", v, 3);
    LLVMValueRef dU = cg_gep(c, v[2], cg_mulk(c, p.part, g->part_floats));
    cg_zero(c, dU, cg_i64(c, nu));
    /* items [begin, end) are the chunks [begin·chunks/items, end·chunks/items) */
    LLVMValueRef c0 = LLVMBuildSDiv(c->b, cg_mulk(c, p.begin, g->chunks), cg_i64(c, g->items), "");
    LLVMValueRef c1 = LLVMBuildSDiv(c->b, cg_mulk(c, p.end, g->chunks), cg_i64(c, g->items), "");
    LLVMValueRef hi = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, c1, cg_i64(c, full), ""), c1,
                                      cg_i64(c, full), "");
    cg_loop l = cg_for_begin(c, c0, hi, "chunk");
    wgrad_chunk(c, g, v[0], v[1], dU, cg_mulk(c, l.iv, g->nimg), g->nimg);
    cg_for_end(c, &l);
    if (rest) {
        cg_if last = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, c1, cg_i64(c, g->chunks), ""), "rest");
        wgrad_chunk(c, g, v[0], v[1], dU, cg_i64(c, full * g->nimg), rest);
        cg_if_end(c, &last);
    }
    cg_par_end(c, &p, g->items);

    /* dw[o, c] = Gᵀ (Σ_t dU_t[·, o, c]) G, parallel over o */
    LLVMValueRef w2[2] = {scratch, dw};
    cg_par q = cg_par_begin(c, "wino.dw.sum", w2, 2);
    cg_loop lo = cg_for_begin(c, q.begin, q.end, "co");
    cg_loop li = cg_for(c, g->Ci, "ci");
    /* U[ξ] [Co, Ci]; transposed, [Ci, Co], for the lanes layout's products */
    LLVMValueRef ubase = g->lanes_c ? cg_mad(c, li.iv, g->Co, lo.iv) : cg_mad(c, lo.iv, g->Ci, li.iv);
    LLVMValueRef u[WA2], d[9];
    for (int64_t xi = 0; xi < g->X; xi++) {
        LLVMValueRef sum = NULL;
        for (int64_t t = 0; t < parts; t++) {
            LLVMValueRef x1 = load_at(c, w2[0], ubase, t * g->part_floats + xi * xstride(g->Co, g->Ci));
            sum = sum ? LLVMBuildFAdd(c->b, sum, x1, "") : x1;
        }
        u[xi] = sum;
    }
    sandwich(c, f->GT, 3, f->a, u, f->a, f->GT, 3, d);
    LLVMValueRef wbase = cg_mulk(c, ubase, 9);
    for (int k = 0; k < 9; k++) store_at(c, w2[1], wbase, k, d[k]);
    cg_for_end(c, &li);
    cg_for_end(c, &lo);
    cg_par_end(c, &q, g->Co);
    return 0;
}
int cg_winograd(cg_ctx *c, const gim_node *n, LLVMValueRef scratch) {
    wino_geo g;
    if (!wino_geometry(n, &g)) return cg_fail(c, n, "internal: %s is not a 3x3 stride-1 pad-1 convolution",
                                              gim_op_name(n->op));
    if (g.wgrad) return wino_wgrad(c, &g, n, scratch);
    LLVMValueRef x = cg_buf(c, n->in[0]), w = cg_buf(c, n->in[1]), y = cg_buf(c, n);
    bool act = n->attr[GIM_FUSED_RELU] != 0;
    /* forward: x, w[, b]; data gradient: dy, w[, y when a ReLU gradient was fused] */
    LLVMValueRef extra = n->n_in > 2 ? cg_buf(c, n->in[2]) : NULL;
    if (g.bwd && act && !extra) return cg_fail(c, n, "internal: fused data gradient without y");
    weight_transform(c, &g, w, scratch);
    int64_t full = g.B / g.nimg, rest = g.B % g.nimg;
    LLVMValueRef v[4] = {x, y, scratch, extra ? extra : x};
    cg_par p = cg_par_begin(c, "wino", v, 4);
    x = v[0], y = v[1];
    LLVMValueRef U = v[2];
    wino_epilogue ep = {.bias = !g.bwd && extra ? v[3] : NULL, .mask = g.bwd && act ? v[3] : NULL,
                        .relu = !g.bwd && act};
    wino_epilogue *b = &ep;
    LLVMValueRef part = cg_gep(c, U, cg_addk(c, cg_mulk(c, p.part, g.part_floats), g.u_floats));
    LLVMValueRef hi = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, p.end, cg_i64(c, full), ""), p.end,
                                      cg_i64(c, full), "");
    cg_loop l = cg_for_begin(c, p.begin, hi, "chunk");
    wino_chunk(c, &g, x, U, part, cg_mulk(c, l.iv, g.nimg), g.nimg, y, b);
    cg_for_end(c, &l);
    if (rest) {
        cg_if last = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, p.end, cg_i64(c, g.chunks), ""), "rest");
        wino_chunk(c, &g, x, U, part, cg_i64(c, full * g.nimg), rest, y, b);
        cg_if_end(c, &last);
    }
    cg_par_end(c, &p, g.chunks);
    return 0;
}
