/*
 * mlorc.h - the stable C API of libmlorc.
 *
 * libmlorc implements memory-efficient optimizers for training neural networks.
 * Its heart is MLorc (Momentum Low-rank Compression, arXiv 2506.01897): the
 * momentum of each weight matrix is kept as rank-r factors, refreshed by a
 * randomized SVD at every step, while the weights still receive full-rank
 * updates. AdamW's state shrinks from 2mn to 2r(m+n+1) floats per m x n matrix.
 *
 * This header is the one source of truth for the ABI. Enum values and struct
 * layouts are never renumbered or reused; new optimizers add keys, never
 * signatures.
 *
 * Conventions
 * - Every function that can fail returns an int status: MLORC_OK (0) on
 *   success, a positive mlorc_status otherwise. mlorc_status_string() gives a
 *   static description; mlorc_last_error() gives the detailed message of the
 *   handle's last failed call; mlorc_state_check() and
 *   mlorc_group_state_check() give it for the calls without a handle.
 * - A call that fails changes nothing: no parameter, state or handle setting
 *   is modified (the last-error message excepted).
 * - Hyperparameters and settings live in the handle only, never in a state:
 *   see mlorc_state_init().
 * - Ownership: the caller owns parameters, gradients and per-tensor state
 *   bytes; the library never keeps a pointer to them past the call. The
 *   handle owns only its configuration and scratch memory.
 *
 * Thread-safety
 * - Different handles may be used concurrently from different threads.
 * - One handle must be used by one thread at a time (the caller serialises).
 *   This includes the functions taking a const handle: a failure records its
 *   message in the handle.
 * - mlorc_version_*, mlorc_status_string, mlorc_param_bounds and the
 *   functions on states alone (mlorc_state_inspect, mlorc_state_check and
 *   their group-state counterparts) are always thread-safe.
 * - A step on one handle may use up to MLORC_PARAM_THREADS threads of its
 *   own; it never changes OpenBLAS's process-wide settings.
 *
 * Loading and unloading
 * - libmlorc.so carries its own copy of the Swift runtime (nothing else to
 *   install), whose image registrations and type-metadata caches cannot be
 *   released. So the library marks itself RTLD_NODELETE as it is loaded:
 *   dlclose() succeeds but leaves it mapped and initialised, and a later
 *   dlopen() reuses it. Unloading it would leak those caches (about 1.7 kB
 *   in 14 blocks) at every dlopen/dlclose cycle; staying loaded, they are
 *   made once per process and stay reachable, so leak checkers do not report
 *   them (valgrind calls 2 of the blocks "possibly lost": interior pointers;
 *   Tests/support/valgrind.supp in the source tree suppresses them).
 *
 * Determinism
 * - The random test matrices of the randomized SVD come from a counter-based
 *   generator keyed by (seed, tensor id, step). A step is a pure function of
 *   (parameters, gradients, state, lr, handle settings): resuming from saved
 *   state with the same settings is bit-exact (the settings are not in the
 *   state), every data-parallel rank draws the same matrices, and the thread
 *   count never changes the result.
 */
#ifndef MLORC_H
#define MLORC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version */

#define MLORC_VERSION_MAJOR 0
#define MLORC_VERSION_MINOR 1
#define MLORC_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH: compare with mlorc_version_number(). */
#define MLORC_VERSION_NUMBER \
    (MLORC_VERSION_MAJOR * 10000 + MLORC_VERSION_MINOR * 100 + MLORC_VERSION_PATCH)

/* The version of the library actually loaded, in MLORC_VERSION_NUMBER form.
 * A program built against this header should refuse a library whose major
 * version differs from MLORC_VERSION_MAJOR. */
unsigned mlorc_version_number(void);

/* The same as a static string, "MAJOR.MINOR.PATCH". */
const char *mlorc_version_string(void);

/* ----------------------------------------------------------------- status */

typedef enum mlorc_status {
    MLORC_OK = 0,
    MLORC_ERROR_NULL_POINTER = 1,      /* a required pointer argument is NULL */
    MLORC_ERROR_INVALID_ARGUMENT = 2,  /* an enum, count or flag is not valid; a step's
                                          lr or buffers are not valid (mlorc_step) */
    MLORC_ERROR_INVALID_SHAPE = 3,     /* rows/cols zero, negative or above 2^31 - 1, or
                                          rows * cols of 2^59 or more (the largest
                                          state, 16 bytes per element, must fit in
                                          63 bits) */
    MLORC_ERROR_INVALID_RANK = 4,      /* rank 0, or rank > min(rows, cols) for low-rank storage */
    MLORC_ERROR_PARAM_OUT_OF_RANGE = 5,/* hyperparameter outside mlorc_param_bounds(),
                                          not finite, or not integral for an
                                          integer key */
    MLORC_ERROR_UNKNOWN_PARAM = 6,     /* key not known to this handle's rule */
    MLORC_ERROR_STATE_TOO_SMALL = 7,   /* state buffer smaller than its layout needs */
    MLORC_ERROR_STATE_CORRUPTED = 8,   /* bad magic, checksum, reserved header bytes
                                          not zero, inconsistent header, or factors
                                          no step can have written */
    MLORC_ERROR_STATE_VERSION = 9,     /* state's layout version is not this library's:
                                          written by a newer libmlorc, or its version
                                          field is corrupted */
    MLORC_ERROR_STATE_MISMATCH = 10,   /* state of another rule, shape or dtype */
    MLORC_ERROR_NON_FINITE = 11,       /* a gradient holds NaN or infinity, or a low-rank
                                          step's new moments overflow, or CAME's statistics
                                          are not finite; step refused */
    MLORC_ERROR_OUT_OF_MEMORY = 12,    /* scratch allocation failed */
    MLORC_ERROR_LINALG = 13,           /* LAPACK reported a failure */
    MLORC_ERROR_UNSUPPORTED_DTYPE = 14, /* dtype not supported by this build */
    MLORC_ERROR_REDUCTION = 15         /* mlorc_step_sharded: the reducer returned nonzero,
                                          or its sums are inconsistent; step refused */
} mlorc_status;

/* A static, NUL-terminated description of a status code (never NULL; an
 * unknown code gives "unknown status"). */
const char *mlorc_status_string(int status);

/* ------------------------------------------------------------------ enums */

/* The update rule of an optimizer handle. */
typedef enum mlorc_rule {
    MLORC_RULE_ADAMW = 1, /* AdamW; MLorc-AdamW on low-rank storage */
    MLORC_RULE_LION = 2,  /* Lion;  MLorc-Lion on low-rank storage */
    MLORC_RULE_ADOPT = 3, /* ADOPT (arXiv 2411.02853); MLorc-ADOPT on low-rank storage.
                             Its first step only sets v = g^2 (no update). */
    MLORC_RULE_GALORE_ADAMW = 4, /* GaLore-AdamW (arXiv 2403.03507), the projected-gradient
                             baseline: on low-rank storage the state is the rank-r
                             projection of the short side plus AdamW moments of the
                             projected gradient, r(min(m,n) + 2 max(m,n)) floats;
                             dense storage is AdamW. Options other than ORTHOGRAD and
                             CLIP_NORM do not apply. */
    MLORC_RULE_CAME = 5,  /* CAME (arXiv 2307.02047, as the authors' came_pytorch):
                             Adafactor's factored second moment r (m), c (n); the
                             normalised update u = G / sqrt(r c^T / mean(r)) scaled by
                             1 / max(1, RMS(u) / CAME_CLIP); M = beta1 M + (1-beta1) u;
                             the instability (u - M)^2 + EPS2 factored the same way
                             into R (m), C (n) with BETA3; w <- w (1 - lr wd) -
                             lr M / sqrt(R C^T / mean(R)). Row/column *means*, eps
                             added to the means, no bias correction. A vector (rows
                             or cols == 1) keeps r, c only and steps by lr M (the
                             authors' 1-D branch). M is dense (mn floats, state
                             mn + 2(m+n)) or MLorc factors (r(m+n+1) + 2(m+n)).
                             The update options (GRAMS ... CLIP_NORM) do not apply. */
    MLORC_RULE_PRODIGY = 6,     /* Prodigy (arXiv 2306.06101, prodigyopt 1.x): AdamW whose
                             step size d*lr is estimated over the group of tensors
                             stepped together; MLorc moments on low-rank storage.
                             Steps with a group state (mlorc_step_group). Pass lr = 1
                             (or a schedule around 1). */
    MLORC_RULE_DADAPT_LION = 7, /* D-Adapted Lion (facebookresearch/dadaptation): Lion with
                             step size d*lr estimated over the group; MLorc momentum
                             on low-rank storage. Steps with a group state. GRAMS,
                             CAUTIOUS and ATAN2 do not apply. */
    MLORC_RULE_MOFASGD = 8 /* MoFaSGD (arXiv 2507.08091), the low-rank-momentum
                             baseline: the momentum itself is rank-r factors
                             M = U diag(s) V^T, r(m+n+1) floats. Each step projects
                             G on the tangent space at M (UU^T G + G VV^T -
                             UU^T G VV^T), sets M = SVD_r(beta1 * M + that) (no
                             1 - beta1) through a 2r x 2r SVD, and updates
                             W = W (1 - lr wd) - lr U f(s) V^T with f(s) = 1
                             (spectrally normalised U V^T, default) or
                             min(1/s, MOFASGD_MAX_VALUE) (MOFASGD_RECIPROCAL = 1),
                             and f = 0 where s <= EPS. Both forms are the authors'
                             (pmahdavi/MoFaSGD, momentum_factorized_sgd.py,
                             MomentumFactorizedSGD.step, flag use_ones_for_nonzero_s;
                             their experiment configs use the reciprocal one).
                             First step (and whenever M is exactly 0): M = SVD_r(G)
                             by the randomized SVD (OVERSAMPLING, POWER_ITERATIONS,
                             SEED); the authors' code instead seeds M with the
                             top-r SVD of the weights.
                             Low-rank storage needs 2r <= min(m, n). Dense storage
                             is MoFaSGD at full rank: M = beta1 M + G, update from
                             the exact SVD of M (a vector steps along M/|M|; costs
                             an SVD of the whole tensor and scratch of about twice
                             its size). No per-element options. */
} mlorc_rule;

/* How a tensor's moments are stored. */
typedef enum mlorc_storage {
    /* Default policy: low-rank when the tensor is a matrix (rows > 1 and
     * cols > 1) and min(rows, cols) >= 4 * (rank + oversampling); dense
     * otherwise (vectors and small matrices are still updated, densely). */
    MLORC_STORAGE_AUTO = 0,
    MLORC_STORAGE_DENSE = 1,  /* full-size moments: exactly AdamW / Lion */
    MLORC_STORAGE_LOWRANK = 2 /* MLorc: rank-r factors U, s, V per moment
                                 (MoFaSGD: needs 2r <= min(rows, cols)) */
} mlorc_storage;

/* Element type of parameters and gradients. Arithmetic is fp32 whatever the
 * element type: half-precision values are widened when loaded, and new
 * weights are rounded when stored (MLORC_PARAM_STOCHASTIC_ROUNDING). Moments
 * and factors (and CAME's and the D-adaptation rules' statistics) are stored
 * fp32, or (AdamW, Lion, ADOPT) bf16 with MLORC_PARAM_STATE_DTYPE. Every
 * rule steps half precision on dense and low-rank storage: AdamW, Lion,
 * ADOPT, GaLore-AdamW, CAME, Prodigy, DAdapt-Lion and MoFaSGD (earlier
 * builds of 0.1 stepped only the first three; the others gave
 * MLORC_ERROR_UNSUPPORTED_DTYPE). */
typedef enum mlorc_dtype {
    MLORC_DTYPE_F32 = 0,  /* IEEE-754 binary32 */
    MLORC_DTYPE_BF16 = 1, /* bfloat16: the top 16 bits of a binary32 */
    MLORC_DTYPE_F16 = 2   /* IEEE-754 binary16 (max 65504) */
} mlorc_dtype;

/* In mlorc_tensor.dtype only: OR'ed into a half-precision dtype, says that
 * the gradient is fp32 (e.g. MLORC_DTYPE_BF16 | MLORC_DTYPE_GRAD_F32).
 * Without it the gradient has the parameter's dtype. */
#define MLORC_DTYPE_GRAD_F32 0x100

/* In mlorc_state_info.dtype only: the state keeps fp32 master weights
 * (MLORC_PARAM_MASTER_WEIGHTS); dtype & 0xff is the parameter's dtype. */
#define MLORC_STATE_MASTER_WEIGHTS 0x100

/* In mlorc_state_info.dtype only: the state's moments (dense) or factors
 * U, s, V (low-rank) are stored bf16 (MLORC_PARAM_STATE_DTYPE). */
#define MLORC_STATE_BF16_MOMENTS 0x200

/* Hyperparameters and settings, set per handle with mlorc_set_param().
 * Values are doubles; integer-valued keys (rank, counts, seeds, strides and
 * the 0/1 flags) take integral doubles: 2.5 is MLORC_ERROR_PARAM_OUT_OF_RANGE
 * like a value outside the bounds. Bounds are inclusive ("[0, 0.999999999]":
 * the betas stop 1e-9 short of 1); mlorc_param_bounds() gives them exactly.
 * Defaults are listed per rule; a key not listed for a rule is
 * MLORC_ERROR_UNKNOWN_PARAM. */
typedef enum mlorc_param {
    MLORC_PARAM_BETA1 = 1,            /* AdamW 0.9, Lion 0.95, ADOPT 0.9, CAME 0.9, MoFaSGD 0.9
                                         (its momentum beta); [0, 0.999999999] */
    MLORC_PARAM_BETA2 = 2,            /* AdamW 0.999, Lion 0.98, ADOPT 0.9999, CAME 0.999;
                                         [0, 0.999999999] */
    MLORC_PARAM_EPS = 3,              /* AdamW 1e-8, ADOPT 1e-6, CAME 1e-30 (its eps1, added
                                         to mean(G^2)) (not Lion); [0, 1]. MoFaSGD 1e-8:
                                         singular values <= eps get no update */
    MLORC_PARAM_WEIGHT_DECAY = 4,     /* decoupled: AdamW 0.01, Lion 0.05, ADOPT 0, CAME 0,
                                         MoFaSGD 0; [0, 1e3]
                                         (GaLore-AdamW: as AdamW for every key) */
    MLORC_PARAM_RANK = 5,             /* r, used when a state is initialised: 4; [1, 65536] */
    MLORC_PARAM_OVERSAMPLING = 6,     /* p, extra sketch columns: 0; [0, 1024] */
    MLORC_PARAM_POWER_ITERATIONS = 7, /* q, randomized-SVD power iterations: 0; [0, 16] */
    MLORC_PARAM_BIAS_CORRECTION = 8,  /* AdamW, GaLore 1 (on), Prodigy 0 (off); 1 or 0 */
    MLORC_PARAM_SEED = 9,             /* seed of the sketch matrices: 0; integer [0, 2^53] */
    MLORC_PARAM_THREADS = 10,         /* threads used by a step: 1; [1, 256] */
    MLORC_PARAM_ADOPT_CLIP = 11,      /* ADOPT only: 1 clips g/max(sqrt(v), eps) to
                                         +-(t-1)^(1/4) at step t (the paper's clipped
                                         variant), 0 (default) does not */
    /* Update options, all rules unless noted; 0 (off) by default. Applied in
     * this order: gradient transform (ORTHOGRAD, then CLIP_NORM), the rule,
     * GRAMS, CAUTIOUS. Each is per tensor. */
    MLORC_PARAM_GRAMS = 12,           /* 1: direction sign(g) * |u| (Grams) */
    MLORC_PARAM_ATAN2 = 13,           /* AdamW, ADOPT: 1 replaces m/(sqrt(v)+eps) by
                                         (4/pi) atan2(m, sqrt(v)) (bias-corrected; eps
                                         unused); for ADOPT g/max(sqrt(v), eps) likewise */
    MLORC_PARAM_CAUTIOUS = 14,        /* 1: u * [u*g > 0] * N / (kept + 1), kept counted
                                         over the tensor (costs one more read pass) */
    MLORC_PARAM_ORTHOGRAD = 15,       /* 1: g minus its component along w, rescaled to
                                         |g| (per-tensor sums: one more read pass) */
    MLORC_PARAM_CLIP_NORM = 16,       /* > 0: g scaled down to this L2 norm per tensor
                                         when longer; 0 off; [0, 1e30] */
    MLORC_PARAM_GALORE_SCALE = 17,    /* GaLore only: update scale alpha, 0.25; [0, 1e6] */
    MLORC_PARAM_GALORE_INTERVAL = 18, /* GaLore only: steps between projection refreshes
                                         T, 200 (first at step 1); integer [1, 1e9] */
    MLORC_PARAM_BETA3 = 19,           /* CAME: beta3 of the instability R, C: 0.9999;
                                         Prodigy: EMA of the estimate's statistics,
                                         sqrt(0.999) (set it with BETA2); [0, 0.999999999] */
    MLORC_PARAM_EPS2 = 20,            /* CAME only: eps2, added to mean((u - M)^2): 1e-16; [0, 1] */
    /* D-adaptation (Prodigy, DAdapt-Lion). Prodigy's defaults: betas 0.9,
     * 0.999, eps 1e-8, weight decay 0, bias correction off; DAdapt-Lion's:
     * betas 0.9, 0.99, weight decay 0. */
    MLORC_PARAM_D0 = 21,              /* initial estimate d0, used by
                                         mlorc_group_state_init: 1e-6; [1e-12, 1e6] */
    MLORC_PARAM_D_COEF = 22,          /* Prodigy: d = d_coef * estimate: 1; [1e-6, 1e6] */
    MLORC_PARAM_GROWTH_RATE = 23,     /* Prodigy: d grows at most by this factor per
                                         step: +inf (no cap); [1, +inf] */
    MLORC_PARAM_STATS_STRIDE = 24,    /* the estimate's per-tensor statistics sample
                                         every k-th element (prodigyopt's slice_p), k
                                         fixed when a state is initialised: 11; 1 is
                                         the reference exactly; integer [1, 2^20] */
    MLORC_PARAM_CAME_CLIP = 25,       /* CAME only: the update-clipping threshold d of
                                         1 / max(1, RMS(u) / d): 1.0; [1e-6, 1e6] */
    /* MoFaSGD takes BETA1, EPS, WEIGHT_DECAY, RANK, OVERSAMPLING and
     * POWER_ITERATIONS (its first step's randomized SVD), SEED, THREADS and: */
    MLORC_PARAM_MOFASGD_RECIPROCAL = 26, /* MoFaSGD only: 0 (default) updates along
                                         U V^T; 1 along U diag(min(1/s, MAX_VALUE)) V^T
                                         (use_ones_for_nonzero_s = False); integer [0, 1] */
    MLORC_PARAM_MOFASGD_MAX_VALUE = 27,  /* MoFaSGD only: clamp of 1/s in the reciprocal
                                         form, 1e4 (the authors' default); [1e-30, 1e30] */
    /* Half-precision parameters (every rule): */
    MLORC_PARAM_MASTER_WEIGHTS = 28,     /* 1: states initialised from now on keep an fp32
                                         copy of a bf16/f16 parameter (4 bytes per element
                                         more; mlorc_state_init_with_param); the step updates
                                         it and writes its rounding to the parameter. 0
                                         (default): the step rounds the updated parameter
                                         itself. Integer [0, 1] */
    MLORC_PARAM_STOCHASTIC_ROUNDING = 29, /* how new bf16 weights (or a master's value) are
                                         rounded: 1 (default) stochastically, with bits from
                                         the counter-based generator keyed by (seed, tensor
                                         id, step, element), so rounding is the same for any
                                         thread count, on resume and on every data-parallel
                                         rank; 0 to nearest even. f16 always rounds to
                                         nearest even. Integer [0, 1]. It also rounds
                                         bf16 moments and factors (STATE_DTYPE), with
                                         bits of their own */
    MLORC_PARAM_STATE_DTYPE = 30         /* AdamW, Lion, ADOPT: the element type of the
                                         moments (dense) and factors U, s, V (low-rank)
                                         of states initialised from now on:
                                         MLORC_DTYPE_F32 (0, default) or MLORC_DTYPE_BF16
                                         (1: half the state). Fixed in the state like the
                                         rank (MLORC_STATE_BF16_MOMENTS in
                                         mlorc_state_info.dtype): a step follows the state,
                                         whatever the handle's value. Arithmetic stays
                                         fp32; only the stored values are rounded, as
                                         STOCHASTIC_ROUNDING says. Master weights stay
                                         fp32. Other rules give MLORC_ERROR_UNKNOWN_PARAM.
                                         Integer [0, 1] */
} mlorc_param;

/* ----------------------------------------------------------------- handle */

/* An optimizer: one rule, its hyperparameters and scratch memory. Opaque. */
typedef struct mlorc_optimizer mlorc_optimizer;

/* Creates a handle for `rule` with that rule's default hyperparameters and
 * stores it in *out (set to NULL on failure). Release it with mlorc_free(). */
int mlorc_create(mlorc_optimizer **out, int rule);

/* Releases a handle and its scratch. mlorc_free(NULL) does nothing. */
void mlorc_free(mlorc_optimizer *opt);

/* The detailed message of the last failed call on `opt` (which tensor, which
 * argument, what was expected), or "" if none failed yet. Successful calls
 * leave it as it was: read it only after a call returned an error. The text
 * stays valid until the next failed call on `opt` or mlorc_free(opt). Calls
 * without a handle (mlorc_param_bounds, mlorc_state_inspect,
 * mlorc_group_state_inspect) record nothing: mlorc_state_check and
 * mlorc_group_state_check return their reason instead. NULL gives a static
 * message. */
const char *mlorc_last_error(const mlorc_optimizer *opt);

/* The rule the handle was created with, in *out_rule. */
int mlorc_get_rule(const mlorc_optimizer *opt, int *out_rule);

/* Sets a hyperparameter. Keys that do not apply to the handle's rule give
 * MLORC_ERROR_UNKNOWN_PARAM; values outside the bounds, NaN, infinities
 * (but for GROWTH_RATE's +inf) and non-integral values of integer keys give
 * MLORC_ERROR_PARAM_OUT_OF_RANGE (and the old value stays). A change applies
 * from the next call on; states keep only their rank and storage (see
 * mlorc_state_init). */
int mlorc_set_param(mlorc_optimizer *opt, int param, double value);

/* Reads a hyperparameter into *out_value. */
int mlorc_get_param(const mlorc_optimizer *opt, int param, double *out_value);

/* The inclusive bounds of `param` for `rule`, in *out_min and *out_max. */
int mlorc_param_bounds(int rule, int param, double *out_min, double *out_max);

/* Bytes of scratch memory the handle currently holds (grows with the largest
 * step seen, reused across steps, released by mlorc_free). */
int mlorc_scratch_bytes(const mlorc_optimizer *opt, size_t *out_bytes);

/* ----------------------------------------------------------------- state */

/* The shape and storage of one tensor, used to size and initialise its state.
 * A matrix is rows x cols in row-major order; a vector is 1 x n (or n x 1);
 * higher-dimensional tensors are flattened to (first dim) x (the rest). */
typedef struct mlorc_tensor_layout {
    int64_t rows;     /* >= 1 */
    int64_t cols;     /* >= 1 */
    int32_t dtype;    /* mlorc_dtype */
    int32_t storage;  /* mlorc_storage */
} mlorc_tensor_layout;

/* Every state starts with a header of this many bytes; the moments follow. */
#define MLORC_STATE_HEADER_BYTES 128

/* Bytes of state that a tensor of `layout` needs under the handle's rule and
 * current MLORC_PARAM_RANK / MLORC_PARAM_OVERSAMPLING, in *out_bytes: for an
 * m x n tensor stored at rank r (low-rank) or in full (dense),
 * MLORC_STATE_HEADER_BYTES + 4 * F with F floats:
 *   rule                 low-rank                     dense
 *   AdamW, ADOPT         2r(m+n+1)                    2mn
 *   Lion                 r(m+n+1)                     mn
 *   GaLore-AdamW         r(min(m,n) + 2 max(m,n))     2mn
 *   CAME                 r(m+n+1) + S                 mn + S
 *   Prodigy              2r(m+n+1) + 2 ceil(mn/k)     2mn + 2 ceil(mn/k)
 *   DAdapt-Lion          r(m+n+1) + ceil(mn/k)        mn + ceil(mn/k)
 *   MoFaSGD              r(m+n+1)                     mn
 * where CAME's statistics are S = 2(m+n) for a matrix and S = m+n for a
 * vector (rows or cols == 1), and k = MLORC_PARAM_STATS_STRIDE. Oversampling
 * changes only which storage MLORC_STORAGE_AUTO picks, not the size. fp32
 * master weights of a bf16/f16 parameter (MLORC_PARAM_MASTER_WEIGHTS) add mn.
 * With MLORC_PARAM_STATE_DTYPE = MLORC_DTYPE_BF16 (AdamW, Lion, ADOPT) the
 * moments take 2 bytes each: MLORC_STATE_HEADER_BYTES + 4 * ceil(F / 2)
 * (+ 4mn for master weights), F as in the table. */
int mlorc_state_size(const mlorc_optimizer *opt, const mlorc_tensor_layout *layout,
                     size_t *out_bytes);

/* Initialises caller-owned `state` (of `state_bytes` >= mlorc_state_size())
 * for a tensor of `layout`: zero moments, step 0, the given `tensor_id`.
 * The tensor id keys the sketch matrices: give every tensor of a model its
 * own id, and the same id again when resuming. The rank and the resolved
 * storage are fixed in the state; changing MLORC_PARAM_RANK later affects
 * only states initialised later. The state holds no pointers: it may be
 * copied, saved and reloaded byte for byte.
 *
 * A state holds the rule, shape, dtype, storage, rank, moments' dtype, tensor id, step count
 * (and the statistics stride of the D-adaptation rules), but no other
 * hyperparameter: betas, eps, weight decay, seed, power iterations, the
 * update options... come from the handle at every step, and a state is
 * accepted by any handle of its rule. A resume is bit-exact only with the
 * same settings: save them with the checkpoint (mlorc_get_param) and set
 * them again before the first step. (Changing one on purpose, e.g. on a
 * schedule, is allowed.) */
int mlorc_state_init(const mlorc_optimizer *opt, const mlorc_tensor_layout *layout,
                     uint64_t tensor_id, void *state, size_t state_bytes);

/* mlorc_state_init for a handle with MLORC_PARAM_MASTER_WEIGHTS = 1 and a
 * bf16/f16 `layout`: also copies the parameter's values (rows * cols
 * elements of layout->dtype at `param`, widened exactly) into the state's
 * fp32 master weights. Without master weights `param` is not read (it may
 * be NULL) and this is mlorc_state_init, which refuses a state with master
 * weights (it cannot fill them). */
int mlorc_state_init_with_param(const mlorc_optimizer *opt, const mlorc_tensor_layout *layout,
                                uint64_t tensor_id, const void *param, void *state, size_t state_bytes);

/* What a state header says, as checked by mlorc_state_inspect(). */
typedef struct mlorc_state_info {
    uint32_t layout_version; /* MLORC_STATE_LAYOUT_VERSION of the writer */
    int32_t rule;            /* mlorc_rule */
    int32_t storage;         /* resolved: MLORC_STORAGE_DENSE or _LOWRANK */
    int32_t dtype;           /* mlorc_dtype, | MLORC_STATE_MASTER_WEIGHTS,
                                | MLORC_STATE_BF16_MOMENTS */
    int64_t rows;
    int64_t cols;
    int64_t rank;            /* 0 for dense storage */
    uint64_t step;           /* steps taken so far */
    uint64_t tensor_id;
    uint64_t state_bytes;    /* bytes the state occupies */
} mlorc_state_info;

/* The state layout this library writes. States of other versions are refused
 * with MLORC_ERROR_STATE_VERSION: written by a newer libmlorc, or a damaged
 * version field (mlorc_state_check's reason says which is likely). */
#define MLORC_STATE_LAYOUT_VERSION 1

/* Validates a state (magic, version, header checksum, reserved header bytes
 * 96..127 all zero, sizes; for low-rank storage also the payload checksum)
 * and describes it in *out_info. Needs no handle: use it to check a
 * checkpoint before loading it. */
int mlorc_state_inspect(const void *state, size_t state_bytes, mlorc_state_info *out_info);

/* A buffer of this size holds every reason that mlorc_state_check and
 * mlorc_group_state_check give in this version (longer ones would be cut). */
#define MLORC_REASON_BYTES 256

/* mlorc_state_inspect that also says why it refused. On failure, `why`
 * receives a NUL-terminated ASCII description of the first problem found:
 * which check failed (magic, layout version, header checksum, reserved
 * bytes, shape or rank, payload size, buffer size, payload checksum,
 * factors) and the values involved, cut to fit `why_bytes` bytes with its
 * NUL. On success `why` receives "". `why` may be NULL (then
 * `why_bytes` is ignored) and `out_info` may be NULL (validation only).
 * Returns the status mlorc_state_inspect would. Needs no handle and
 * touches none: thread-safe. */
int mlorc_state_check(const void *state, size_t state_bytes, mlorc_state_info *out_info, char *why,
                      size_t why_bytes);

/* ------------------------------------------------------------------- step */

/* One tensor of a step. All pointers are caller-owned; `param` and `state`
 * are updated in place, `grad` is only read. `param` and `grad` hold
 * rows * cols elements of `dtype`, row-major. `param`, `grad` and `state`
 * must be 4-byte aligned. Written buffers must not overlap any buffer of the
 * call: not `param` and `grad` of one tensor (param == grad included), not
 * two tensors' `param` or `state` (one parameter or state stepped twice),
 * not the group state. Gradients may be shared by several tensors. Each
 * violation is MLORC_ERROR_INVALID_ARGUMENT, naming the tensors. */
typedef struct mlorc_tensor {
    void *param;
    const void *grad;
    void *state;
    size_t state_bytes;
    int64_t rows;
    int64_t cols;
    int32_t dtype;     /* mlorc_dtype */
    int32_t reserved;  /* must be 0 */
} mlorc_tensor;

/* The most tensors one mlorc_step or mlorc_step_group call takes. */
#define MLORC_MAX_STEP_TENSORS 16777216 /* 2^24 */

/* Takes one optimizer step over `count` tensors with learning rate `lr`
 * (>= 0, finite; pass the scheduled value every step). Every tensor's state
 * must have been initialised by a handle of the same rule, with matching
 * rows, cols and dtype.
 *
 * A negative, NaN or infinite lr is MLORC_ERROR_INVALID_ARGUMENT.
 *
 * A count above MLORC_MAX_STEP_TENSORS, which includes every count with its
 * top bit set (e.g. a negative value converted to size_t), is
 * MLORC_ERROR_INVALID_ARGUMENT whatever the other arguments are (only a NULL
 * handle is reported first, as MLORC_ERROR_NULL_POINTER). A count of 0
 * steps nothing and `tensors` may then be NULL, but the call is checked like
 * any other: a bad lr, or a D-adaptation rule without its group state, is
 * refused; on success nothing changes (a group state is not advanced).
 *
 * All-or-nothing: every argument and state is validated and every gradient
 * is checked for NaN/infinity before anything is written. If any check fails
 * the call returns its status, names the tensor (by index) in
 * mlorc_last_error(), and leaves every parameter and state bit for bit as it
 * was. */
int mlorc_step(mlorc_optimizer *opt, const mlorc_tensor *tensors, size_t count, double lr);

/* ------------------------------------------------------------ group state */

/* The D-adaptation rules (MLORC_RULE_PRODIGY, MLORC_RULE_DADAPT_LION)
 * estimate one step size d for all tensors stepped together: pass the whole
 * group (e.g. a model's parameters) to one mlorc_step_group call each step.
 * The estimate lives in a caller-owned group state of MLORC_GROUP_STATE_BYTES
 * bytes, checkpointed like the tensors' states (bit-exact resume needs both).
 * Each tensor's state also holds the rule's statistics on every k-th element
 * (k = MLORC_PARAM_STATS_STRIDE): Prodigy 2*ceil(rows*cols/k) floats (s and
 * the initial weights), DAdapt-Lion ceil(rows*cols/k) (s), after the moments. */
#define MLORC_GROUP_STATE_BYTES 128

/* What mlorc_group_state_inspect reports. */
typedef struct mlorc_group_info {
    uint32_t layout_version;
    int32_t rule;       /* mlorc_rule */
    uint64_t step;      /* group steps taken */
    double d;           /* the current estimate: the step size is d * lr */
    double d0;          /* the initial estimate */
    double d_max;       /* Prodigy: the largest estimate seen (DAdapt-Lion: d) */
    double numerator;   /* the estimate's running numerator */
} mlorc_group_info;

/* Writes a fresh group state (d = MLORC_PARAM_D0 of `opt`) into `group`,
 * which must hold MLORC_GROUP_STATE_BYTES. Rules without a group state give
 * MLORC_ERROR_INVALID_ARGUMENT. */
int mlorc_group_state_init(const mlorc_optimizer *opt, void *group, size_t group_bytes);

/* Validates a group state (magic, version, checksum, plausible values) and
 * describes it in *out_info. */
int mlorc_group_state_inspect(const void *group, size_t group_bytes, mlorc_group_info *out_info);

/* mlorc_group_state_inspect that also says why it refused, into `why` as
 * mlorc_state_check does (`why` and `out_info` may be NULL). */
int mlorc_group_state_check(const void *group, size_t group_bytes, mlorc_group_info *out_info, char *why,
                            size_t why_bytes);

/* mlorc_step for the D-adaptation rules: the same tensors and guarantees,
 * plus `group`, read and updated in place (all-or-nothing with the rest).
 * Other rules take group = NULL (then it is mlorc_step); the D-adaptation
 * rules refuse NULL with MLORC_ERROR_NULL_POINTER, and mlorc_step with it. */
int mlorc_step_group(mlorc_optimizer *opt, const mlorc_tensor *tensors, size_t count, double lr, void *group,
                     size_t group_bytes);

/* -------------------------------------------------------- sharded steps */

/* Exact MLorc on matrices split by rows between ranks (ZeRO-3 / FSDP style:
 * each rank holds its rows of W, G and the factor U, and its rows of dense
 * moments; s, V and the sketch matrices are replicated). The rank calls
 * mlorc_step_sharded with its shards of the same global tensors in the same
 * order; the step exchanges only small sums through the handle's reducer.
 * AdamW, Lion, ADOPT, CAME, MoFaSGD, Prodigy and DAdapt-Lion, dense and
 * low-rank storage, f32 tensors, and for AdamW, Lion, ADOPT, Prodigy and
 * DAdapt-Lion also bf16/f16 ones with master weights and stochastic rounding
 * as mlorc_step takes them (the rounding bits of an element are those of its
 * index in the whole matrix, so every sharding rounds alike); fp32 states
 * only (Prodigy and DAdapt-Lion: every rank passes its
 * copy of the same group state, which every rank advances alike; a shard
 * keeps the statistics samples of the whole matrix that fall in its rows,
 * so the estimate is the whole matrices' up to rounding; CAME reduces its
 * column statistics, the means of its row statistics and its clipping RMS
 * too; MoFaSGD's dense storage gathers the new momentum, global_rows x
 * cols values per step, for its exact SVD); the other
 * rules refuse the sharded calls with MLORC_ERROR_INVALID_ARGUMENT naming the
 * rule, half-precision tensors of CAME and MoFaSGD and bf16 states
 * (MLORC_PARAM_STATE_DTYPE) are MLORC_ERROR_UNSUPPORTED_DTYPE. */

/* Sums `count` doubles of `buffer` in place across all shards (ranks) of a
 * step; every rank must get the same result, bit for bit (e.g. a reduction
 * in a fixed order). Called on the thread that called mlorc_step_sharded, in
 * the same order with the same counts on every rank (one call per phase of
 * the step for the whole batch, about 5 calls per step plus 3 per power
 * iteration). Returns 0, or nonzero to fail the step: the step is then
 * refused with MLORC_ERROR_REDUCTION and nothing changes. A failure must be
 * reported on every rank of that call (as MPI_Allreduce errors are);
 * otherwise the other ranks wait in their next call.
 *
 * An MPI reducer:
 *     static int mpi_sum(void *user, double *buffer, size_t count) {
 *         MPI_Comm comm = *(MPI_Comm *)user;
 *         return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_DOUBLE,
 *                              MPI_SUM, comm) == MPI_SUCCESS ? 0 : 1;
 *     }
 *     mlorc_set_reducer(opt, mpi_sum, &comm);
 * (MPI_SUM's order is fixed per communicator and count in common MPI
 * builds; NCCL's ncclAllReduce on doubles gives every rank the same bits.) */
typedef int (*mlorc_reduce_fn)(void *user, double *buffer, size_t count);

/* Sets the handle's reducer and its `user` pointer (passed back at each
 * call, never dereferenced by the library); NULL `reduce` clears it. Without
 * a reducer mlorc_step_sharded takes only shards that are whole matrices. */
int mlorc_set_reducer(mlorc_optimizer *opt, mlorc_reduce_fn reduce, void *user);

/* A tensor that is rows [row_begin, row_begin + tensor.rows) of a
 * global_rows x cols matrix (tensor.rows, or layout->rows, may be 0 on a rank
 * with no rows; its param and grad may then be NULL). The shards of the
 * ranks must partition the rows: each row on exactly one rank. A shard out
 * of range (global_rows outside [1, 2^31 - 1], row_begin < 0, row_begin +
 * rows > global_rows) is MLORC_ERROR_INVALID_ARGUMENT; shards of the ranks
 * that overlap or leave rows out are refused by the step on every rank as
 * MLORC_ERROR_INVALID_ARGUMENT (checked with the row count and two 16-bit row
 * hashes summed over the ranks: a wrong partition passes with probability
 * about 2^-32). */
typedef struct mlorc_shard {
    int64_t global_rows;
    int64_t row_begin;
} mlorc_shard;

/* mlorc_state_size for a shard: `layout` gives the shard (rows = its rows).
 * MLORC_STORAGE_AUTO and the rank bounds follow the global shape, so every
 * rank decides alike; the state holds the shard's rows of U (or of the
 * dense moments) and the whole s and V: the table of mlorc_state_size with
 * m = the shard's rows. */
int mlorc_state_size_sharded(const mlorc_optimizer *opt, const mlorc_tensor_layout *layout,
                             const mlorc_shard *shard, size_t *out_bytes);

/* mlorc_state_init_with_param for a shard (`param`, the shard's rows of the
 * parameter, is read only with master weights: required then, may be NULL
 * otherwise).
 * The state records global_rows and row_begin in header bytes 96..127 (with
 * their own checksum; zero in the state of a whole matrix), and a step with
 * another shard description is refused as MLORC_ERROR_STATE_MISMATCH naming
 * the tensor; mlorc_step refuses a shard's state the same way. A shard that
 * is the whole matrix gives exactly the state of mlorc_state_init. */
int mlorc_state_init_sharded(const mlorc_optimizer *opt, const mlorc_tensor_layout *layout,
                             const mlorc_shard *shard, uint64_t tensor_id, const void *param, void *state,
                             size_t state_bytes);

/* One step of `count` tensors, tensor i being shards[i] of its matrix (the
 * other arguments as mlorc_step_group: Prodigy and DAdapt-Lion take their
 * group state, the other rules NULL). Every rank passes the same count, lr,
 * handle settings, group state (its own copy, the same bytes) and tensors
 * (its shards of them, with states at the same step).
 *
 * Without a reducer every shard must be its whole matrix, and the call is
 * exactly mlorc_step (bit for bit). With one, the step is the MLorc step of
 * the whole matrices up to rounding: the sums over rows are reassociated
 * and Q = orth(Y) comes from CholeskyQR2 in fp64 (Householder QR of the
 * gathered Y where Y is too ill-conditioned for it). Replicated results (s,
 * V) are bit-identical on every rank when the ranks run the same library
 * build on the same kind of CPU.
 *
 * All-or-nothing on every rank: any rank's refusal (a bad argument or state,
 * a shard description that does not match, a non-finite gradient, outputs
 * that would not be finite, a reducer failure) refuses the step everywhere
 * with nothing changed; the other ranks report "refused on another rank"
 * with the status of that refusal where it is known. Bytes exchanged per
 * step and low-rank matrix (rows x n, sketch width l = rank + oversampling,
 * k moments, q power iterations): 8 k (1 + q) (l(l+1) + l n) (two packed
 * Gram matrices and Q^T A, or A^T Q, per QR), plus 144 bytes per tensor (152
 * with MLORC_PARAM_CAUTIOUS) and 16 per call for the checks; dense tensors
 * exchange only those. CAME (k = 1): 128 + 16 n bytes per tensor instead of
 * the 144 (its column statistics), in 5 reducer calls per step, 7 with MLorc
 * storage, plus 3 per power iteration. MoFaSGD: 88 bytes per tensor, plus
 * 8 global_rows n (dense), 8 (1 + q)(l(l+1) + l n) at a low-rank tensor's
 * first step (the randomized SVD of G) and 8 (r n + 9 r^2 + 2 r) at the
 * others (GᵀU, UᵀGV, the QR of [U | GV]), in 3 to 5 reducer calls. Prodigy
 * (k = 2) and DAdapt-Lion (k = 1) as AdamW and Lion, plus 16 bytes per step
 * (the estimate's two sums). */
int mlorc_step_sharded(mlorc_optimizer *opt, const mlorc_tensor *tensors, const mlorc_shard *shards, size_t count,
                       double lr, void *group, size_t group_bytes);

/* ------------------------------------------- states across world sizes */

/* A checkpoint of sharded states that loads at another world size, or into
 * an unsharded run (and back): a state, of a whole matrix or of a row
 * shard, is cut into its rows and its replicated part; the rows are then
 * resharded like the weights (torch.distributed.checkpoint does it for
 * DTensors) and the replicated part, identical on every rank, is saved once.
 * Joining the replicated part with any rows [row_begin, row_begin + rows)
 * gives the state of that shard, exactly as the sharded run would hold it;
 * joining it with all rows gives the state of the whole matrix, exactly as
 * mlorc_step would hold it (and the other way round).
 *
 * Rows: `rows` records of row_bytes each, in row order; a record holds the
 * row's part of each row-sharded array of the state (a dense moment's row,
 * a row of a factor U, a row of master weights) and an 8-byte seal that ties
 * it to its global row and to its replicated part: a record that is
 * damaged, moved to another row, or from another state or step is refused.
 * The replicated part (s, Vt, the header of the whole matrix) carries its
 * own checksum. States of AdamW, Lion, ADOPT, CAME, MoFaSGD, Prodigy and
 * DAdapt-Lion (dense and low-rank, any dtype, master weights, bf16 state)
 * split; a D-adaptation row record also holds the row's statistics samples
 * (every stride-th element of the matrix: ceil(cols / stride) floats per
 * array, zero-padded where the row holds fewer). The group state is not part
 * of a tensor's state: save it once, as the replicated part. GaLore's states
 * are refused with MLORC_ERROR_INVALID_ARGUMENT. Each call says why it refused into
 * `why` (`why_bytes` bytes with its NUL; may be NULL), as mlorc_state_check
 * does. */

/* The bytes of one row record and of the replicated part of a valid `state`
 * (mlorc_state_inspect's checks; the state holds mlorc_state_info.rows rows). */
int mlorc_state_split_size(const void *state, size_t state_bytes, size_t *out_row_bytes, size_t *out_shared_bytes,
                           char *why, size_t why_bytes);

/* Cuts a valid `state` into its rows (`rows_bytes` >= rows x row_bytes;
 * `rows` may be NULL for a shard of 0 rows) and its replicated part
 * (`shared_bytes` >= the size above). The state is only read. */
int mlorc_state_split(const void *state, size_t state_bytes, void *rows, size_t rows_bytes, void *shared,
                      size_t shared_bytes, char *why, size_t why_bytes);

/* The bytes of the state that mlorc_state_join makes of `shared` and rows
 * [shard->row_begin, shard->row_begin + rows) of a shard->global_rows-row
 * matrix, and of one row record (`out_row_bytes` may be NULL). */
int mlorc_state_join_size(const void *shared, size_t shared_bytes, const mlorc_shard *shard, int64_t rows,
                          size_t *out_state_bytes, size_t *out_row_bytes, char *why, size_t why_bytes);

/* Writes into `state` the state of rows [shard->row_begin, shard->row_begin
 * + rows): `row_records` are those rows' records (exactly rows x row_bytes
 * bytes, from mlorc_state_split of states of the same matrix at the same
 * step, however they were sharded). A shard that is the whole matrix gives
 * the state of the whole matrix. Refused, with nothing written: a damaged
 * replicated part (MLORC_ERROR_STATE_CORRUPTED), a record whose seal does
 * not match (MLORC_ERROR_STATE_CORRUPTED, naming the row), shard->global_rows
 * other than the matrix's rows (MLORC_ERROR_STATE_MISMATCH), rows outside
 * the matrix or a wrong row_records_bytes (MLORC_ERROR_INVALID_ARGUMENT), a
 * small `state` (MLORC_ERROR_STATE_TOO_SMALL). */
int mlorc_state_join(const void *shared, size_t shared_bytes, const mlorc_shard *shard, int64_t rows,
                     const void *row_records, size_t row_records_bytes, void *state, size_t state_bytes, char *why,
                     size_t why_bytes);

/* Writes into `out` the state `state` of a dense tensor as the state of the
 * same elements seen as a rows x cols tensor (rows * cols elements as
 * before): a 1-D parameter is a 1 x n row for one trainer and n x 1 (so that
 * its rows can be sharded) for another. Dense states of whole tensors
 * without statistics shaped by the tensor (AdamW, Lion, ADOPT, MoFaSGD, and
 * Prodigy and DAdapt-Lion, whose samples are by flat index), and CAME's
 * vectors as the other vector shape (1 x n <-> n x 1: its r and c swap);
 * anything else is refused
 * with nothing written
 * (MLORC_ERROR_INVALID_ARGUMENT; MLORC_ERROR_INVALID_SHAPE for another
 * element count). `out` may be `state`. */
int mlorc_state_reshape(const void *state, size_t state_bytes, int64_t rows, int64_t cols, void *out,
                        size_t out_bytes, char *why, size_t why_bytes);

#ifdef __cplusplus
}
#endif

#endif /* MLORC_H */
