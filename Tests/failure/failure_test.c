/*
 * failure_test.c - what libmlorc does when things go wrong, through the C API.
 *
 * Usage: failure_test [--corpus DIR] [--steps N] [--no-rss] [TEST...]
 * Runs the named tests (default: every regular test) and prints
 * "ok <test> (<checks> checks)"; the first failed check prints where and
 * exits 1. Regular tests:
 *   cross_rule   a state saved by one optimizer, loaded into another
 *   truncated    checkpoints cut short
 *   bit_flips    every single-bit flip of a checkpoint's header and checksummed payload
 *   nonfinite    NaN/Inf in one gradient of a batch
 *   aliasing     parameters, gradients and states that overlap
 *   concurrent   steps on different handles from several pthreads
 *   long_run     thousands of steps: state size, scratch and memory stay flat
 *   versioning   current-version states load; other layout versions do not
 * Regression tests of bugs these tests found, fixed since (see
 * docs/guarantees.md): known_dtype_trap, known_step_overflow,
 * known_linalg_partial_write, known_thread_leak, known_svd_hang.
 *
 * The contract under test is include/mlorc.h: a call that fails changes
 * nothing, every refusal has its documented status.
 */
#include "harness.h"
#include "../support/state_checksum.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *corpus_dir; /* states written by the library earlier */
static int long_steps = 3000;
static int check_rss = 1; /* off under valgrind and ASan: they hold freed memory back */

/* The rules this build supports, found by probing mlorc_create: a rule
 * added later is covered without editing the tests. */
static int rules[16], rule_count;

static void probe_rules(void) {
    int r;
    for (r = 1; r < 16; ++r) {
        mlorc_optimizer *opt = NULL;
        if (mlorc_create(&opt, r) == MLORC_OK) rules[rule_count++] = r;
        mlorc_free(opt);
    }
    CHECK(rule_count >= 2);
}

static const double lr = 1e-2;

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* ------------------------------------------------------------ cross_rule */

/* A checkpoint written to a file and read back, as a user saves states. */
static void save_and_load(model *loaded, const model *saved) {
    FILE *f = tmpfile();
    size_t i;
    CHECK(f != NULL);
    for (i = 0; i < saved->count; ++i) CHECK(fwrite(saved->state[i], 1, saved->t[i].state_bytes, f) == saved->t[i].state_bytes);
    rewind(f);
    model_copy(loaded, saved);
    for (i = 0; i < saved->count; ++i) {
        memset(loaded->state[i], 0, loaded->t[i].state_bytes);
        CHECK(fread(loaded->state[i], 1, loaded->t[i].state_bytes, f) == loaded->t[i].state_bytes);
    }
    fclose(f);
}

/* States written under `from` refused by a handle of rule `to`. */
static void cross_pair(int from, int to) {
    mlorc_optimizer *writer = make(from, 1), *reader = make(to, 1);
    model m, loaded, before;
    mlorc_state_info info;
    size_t i;
    model_init(&m, writer, small_model, 3, 11);
    model_train(&m, writer, 3, 1);
    save_and_load(&loaded, &m);
    CHECK(model_same(&loaded, &m));
    for (i = 0; i < loaded.count; ++i) {
        CHECK_RC(NULL, mlorc_state_inspect(loaded.state[i], loaded.t[i].state_bytes, &info), MLORC_OK);
        CHECK(info.rule == from && info.step == 3);
    }
    model_grads(&loaded, 5);
    model_copy(&before, &loaded);
    /* The whole batch and each tensor alone (low-rank and dense). */
    CHECK_RC(reader, mlorc_test_step_any(reader, loaded.t, loaded.count, lr), MLORC_ERROR_STATE_MISMATCH);
    CHECK(contains(mlorc_last_error(reader), "tensor 0"));
    for (i = 0; i < loaded.count; ++i)
        CHECK_RC(reader, mlorc_test_step_any(reader, &loaded.t[i], 1, lr), MLORC_ERROR_STATE_MISMATCH);
    CHECK(model_same(&loaded, &before));
    /* Another tensor's state (same rule) is a mismatch of shape. */
    {
        mlorc_tensor swapped = loaded.t[0];
        swapped.state = loaded.t[1].state;
        swapped.state_bytes = loaded.t[1].state_bytes;
        CHECK_RC(writer, mlorc_test_step_any(writer, &swapped, 1, lr), MLORC_ERROR_STATE_MISMATCH);
        CHECK(model_same(&loaded, &before));
    }
    /* The right optimizer still takes it. */
    CHECK_RC(writer, mlorc_test_step_any(writer, loaded.t, loaded.count, lr), MLORC_OK);
    model_free(&m);
    model_free(&loaded);
    model_free(&before);
    mlorc_free(writer);
    mlorc_free(reader);
}

static void test_cross_rule(void) {
    int k, r;
    for (k = 0; k < rule_count; ++k)
        for (r = 0; r < rule_count; ++r)
            if (r != k) cross_pair(rules[k], rules[r]);
}

/* ------------------------------------------------------------- truncated */

static void test_truncated(void) {
    int k;
    for (k = 0; k < rule_count; ++k) {
        mlorc_optimizer *opt = make(rules[k], 1);
        model m, before;
        size_t i, c;
        model_init(&m, opt, small_model, 3, 12);
        model_train(&m, opt, 2, 2);
        model_grads(&m, 9);
        model_copy(&before, &m);
        for (i = 0; i < m.count; ++i) {
            const size_t total = m.t[i].state_bytes;
            const size_t cut[] = {0, 1, 8, 64, 95, 96, 127, 128, 129, total / 2, total - 4, total - 1};
            for (c = 0; c < sizeof cut / sizeof cut[0]; ++c) {
                const size_t n = cut[c];
                /* Exactly n bytes, as read from a short file: nothing past them may be read. */
                unsigned char *part = memcpy(xmalloc(n), m.state[i], n), *padded;
                mlorc_tensor t[3];
                mlorc_state_info info;
                memcpy(t, m.t, sizeof t);
                t[i].state = part;
                t[i].state_bytes = n;
                CHECK_RC(NULL, mlorc_state_inspect(part, n, &info), MLORC_ERROR_STATE_TOO_SMALL);
                CHECK_RC(opt, mlorc_test_step_any(opt, t, 3, lr), MLORC_ERROR_STATE_TOO_SMALL);
                CHECK(memcmp(part, m.state[i], n) == 0 && model_same(&m, &before));
                free(part);
                /* The same bytes in a full-size, zero-filled buffer: detected where a
                 * checksum covers the lost bytes (header; low-rank payload); a
                 * zeroed version field reads as layout version 0. */
                padded = calloc(1, total);
                CHECK(padded != NULL);
                memcpy(padded, m.state[i], n);
                if (n < 96 || (n < total && i == 0)) {
                    const int want = n >= 8 && n < 12 ? MLORC_ERROR_STATE_VERSION : MLORC_ERROR_STATE_CORRUPTED;
                    t[i].state = padded;
                    t[i].state_bytes = total;
                    CHECK_RC(NULL, mlorc_state_inspect(padded, total, &info), want);
                    CHECK_RC(opt, mlorc_test_step_any(opt, t, 3, lr), want);
                    CHECK(memcmp(padded, m.state[i], n) == 0 && model_same(&m, &before));
                }
                free(padded);
            }
        }
        CHECK_RC(opt, mlorc_test_step_any(opt, m.t, m.count, lr), MLORC_OK);
        model_free(&m);
        model_free(&before);
        mlorc_free(opt);
    }
}

/* ------------------------------------------------------------- bit_flips */

/* Flips one bit of tensor i's state, expects `want` from inspect and from a
 * step of the whole batch, flips it back and checks nothing else changed. */
static void flip_and_refuse(mlorc_optimizer *opt, model *m, const model *before, size_t i, size_t byte, int bit, int want) {
    mlorc_state_info info;
    m->state[i][byte] ^= (unsigned char)(1u << bit);
    CHECK_RC(NULL, mlorc_state_inspect(m->state[i], m->t[i].state_bytes, &info), want);
    CHECK_RC(opt, mlorc_test_step_any(opt, m->t, m->count, lr), want);
    m->state[i][byte] ^= (unsigned char)(1u << bit);
    CHECK(model_same(m, before));
}

static void test_bit_flips(void) {
    int k, bit;
    for (k = 0; k < rule_count; ++k) {
        mlorc_optimizer *opt = make(rules[k], 1);
        model m, before, twin;
        size_t i, byte;
        model_init(&m, opt, small_model, 3, 13);
        model_train(&m, opt, 2, 3);
        model_grads(&m, 10);
        model_copy(&before, &m);
        model_copy(&twin, &m);
        for (i = 0; i < 2; ++i) { /* tensor 0 low-rank, tensor 1 dense */
            /* Header fields, the header checksum and the reserved bytes
             * 96..127 (not checksummed, required to be zero): version bytes
             * say VERSION. */
            for (byte = 0; byte < 128; ++byte)
                for (bit = 0; bit < 8; ++bit)
                    flip_and_refuse(opt, &m, &before, i, byte, bit,
                                    byte >= 8 && byte < 12 ? MLORC_ERROR_STATE_VERSION : MLORC_ERROR_STATE_CORRUPTED);
        }
        /* The low-rank payload is checksummed: every bit. (Dense payloads are
         * not, by design: see docs/guarantees.md.) */
        for (byte = 128; byte < m.t[0].state_bytes; ++byte)
            for (bit = 0; bit < 8; ++bit) flip_and_refuse(opt, &m, &before, 0, byte, bit, MLORC_ERROR_STATE_CORRUPTED);
        /* After all that, the state steps exactly like an untouched twin. */
        CHECK_RC(opt, mlorc_test_step_any(opt, m.t, m.count, lr), MLORC_OK);
        CHECK_RC(opt, mlorc_test_step_any(opt, twin.t, twin.count, lr), MLORC_OK);
        CHECK(model_same(&m, &twin));
        model_free(&m);
        model_free(&before);
        model_free(&twin);
        mlorc_free(opt);
    }
}

/* ------------------------------------------------------------- nonfinite */

/* All of the model's parameters are finite and its states inspect fine. */
static int model_sane(const model *m) {
    mlorc_state_info info;
    size_t i, j;
    for (i = 0; i < m->count; ++i) {
        if (mlorc_state_inspect(m->state[i], m->t[i].state_bytes, &info) != MLORC_OK) return 0;
        for (j = 0; j < m->elements[i]; ++j)
            if (!isfinite(m->param[i][j])) return 0;
    }
    return 1;
}

static void test_nonfinite(void) {
    static const shape shapes[4] = {{24, 20, MLORC_STORAGE_LOWRANK}, {6, 5, MLORC_STORAGE_DENSE},
                                    {1, 9, MLORC_STORAGE_AUTO}, {40, 32, MLORC_STORAGE_LOWRANK}};
    /* NaN and infinities are always refused. Huge finite values (squares
     * overflow fp32) in a low-rank tensor must be refused or give finite
     * results; dense moments follow the reference rules and may overflow
     * (the header promises the check for low-rank storage only). */
    const float bad[5] = {NAN, INFINITY, -INFINITY, 1e20f, -3e38f};
    int k, threads, b, w;
    for (k = 0; k < rule_count; ++k)
        for (threads = 1; threads <= 2; ++threads) {
            mlorc_optimizer *opt = make(rules[k], threads);
            model m, before;
            size_t i;
            model_init(&m, opt, shapes, 4, 14);
            model_train(&m, opt, 2, 4);
            model_grads(&m, 11);
            model_copy(&before, &m);
            for (i = 0; i < 4; ++i)
                for (b = 0; b < 5; ++b)
                    for (w = 0; w < 3; ++w) {
                        const size_t where[3] = {0, m.elements[i] / 2, m.elements[i] - 1};
                        const float saved = m.grad[i][where[w]];
                        char name[32];
                        int rc;
                        snprintf(name, sizeof name, "tensor %lu", (unsigned long)i);
                        m.grad[i][where[w]] = bad[b];
                        rc = mlorc_test_step_any(opt, m.t, m.count, lr);
                        if (b >= 3 && rc == MLORC_OK) {
                            CHECK(shapes[i].storage != MLORC_STORAGE_LOWRANK || model_sane(&m));
                            model_free(&m);
                            model_copy(&m, &before); /* back to the common starting point */
                            continue;
                        }
                        CHECK_RC(opt, rc, MLORC_ERROR_NON_FINITE);
                        CHECK(contains(mlorc_last_error(opt), name));
                        CHECK(model_same(&m, &before));
                        m.grad[i][where[w]] = saved;
                    }
            CHECK_RC(opt, mlorc_test_step_any(opt, m.t, m.count, lr), MLORC_OK);
            model_free(&m);
            model_free(&before);
            mlorc_free(opt);
        }
}

/* -------------------------------------------------------------- aliasing */

static void test_aliasing(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW, 1);
    model m, before;
    float *shared;
    mlorc_tensor t[2];
    size_t n0;
    int c;
    model_init(&m, opt, small_model, 2, 15); /* 24x20 low-rank, 6x5 dense */
    model_train(&m, opt, 1, 5);
    model_grads(&m, 12);
    model_copy(&before, &m);
    n0 = m.elements[0];
    shared = xmalloc(4 * 2 * n0); /* room for two overlapping tensor buffers */
    memcpy(shared, m.param[0], 4 * n0);
    memcpy(shared + n0, m.grad[0], 4 * n0);
    for (c = 0; c < 8; ++c) {
        float snapshot[2 * 480];
        memcpy(t, m.t, sizeof t);
        CHECK(n0 <= 480);
        switch (c) {
        case 0: t[0].grad = t[0].param; break;                                 /* grad is param */
        case 1: t[0].param = shared; t[0].grad = shared + n0 / 2; break;      /* partial overlap */
        case 2: t[1].param = m.state[1] + 128; break;                         /* param inside state */
        case 3: t[1].grad = m.state[1] + 128; break;                          /* grad inside state */
        case 4: t[1].param = m.param[0] + 8; break;                           /* params of two tensors */
        case 5: t[1].grad = m.param[0]; break;                                /* grad read while written */
        case 6: t[1] = t[0]; break;                                           /* one tensor twice */
        case 7: t[1].state = (unsigned char *)m.param[0]; t[1].state_bytes = m.t[1].state_bytes; break; /* state over a param */
        }
        memcpy(snapshot, shared, sizeof snapshot);
        CHECK_RC(opt, mlorc_test_step_any(opt, t, 2, lr), c == 7 ? MLORC_ERROR_STATE_CORRUPTED : MLORC_ERROR_INVALID_ARGUMENT);
        CHECK(c == 7 || contains(mlorc_last_error(opt), "overlaps"));
        CHECK(model_same(&m, &before) && memcmp(snapshot, shared, sizeof snapshot) == 0);
    }
    /* Gradients are only read: tensors may share one. */
    memcpy(t, m.t, sizeof t);
    t[1].grad = m.grad[0];
    CHECK_RC(opt, mlorc_test_step_any(opt, t, 2, lr), MLORC_OK);
    free(shared);
    model_free(&m);
    model_free(&before);
    mlorc_free(opt);
}

/* ------------------------------------------------------------ concurrent */

#define WORKERS 4
static const shape worker_model[3] = {{256, 256, MLORC_STORAGE_LOWRANK}, {64, 48, MLORC_STORAGE_AUTO}, {1, 300, MLORC_STORAGE_AUTO}};

typedef struct {
    int w;
    model m;
} job;

/* Worker w trains its own model on its own handle: rules alternate, and
 * every other pair also uses 2 threads inside the step. */
static void *run_job(void *arg) {
    job *j = arg;
    mlorc_optimizer *opt = make(rules[j->w % rule_count], 1 + (j->w / 2) % 2);
    model_init(&j->m, opt, worker_model, 3, 100 + (uint64_t)j->w);
    model_train(&j->m, opt, 6, 200 + (uint64_t)j->w);
    mlorc_free(opt);
    return NULL;
}

static void test_concurrent(void) {
    job sequential[WORKERS], parallel[WORKERS];
    pthread_t threads[WORKERS];
    int w;
    for (w = 0; w < WORKERS; ++w) {
        sequential[w].w = parallel[w].w = w;
        run_job(&sequential[w]);
    }
    for (w = 0; w < WORKERS; ++w) CHECK(pthread_create(&threads[w], NULL, run_job, &parallel[w]) == 0);
    for (w = 0; w < WORKERS; ++w) CHECK(pthread_join(threads[w], NULL) == 0);
    for (w = 0; w < WORKERS; ++w) {
        CHECK(model_same(&sequential[w].m, &parallel[w].m));
        model_free(&sequential[w].m);
        model_free(&parallel[w].m);
    }
}

/* -------------------------------------------------------------- long_run */

static long max_rss_kib(void) {
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) == 0 ? u.ru_maxrss : -1;
}

static void test_long_run(void) {
    int k, s;
    for (k = 0; k < rule_count; ++k) {
        mlorc_optimizer *opt = make(rules[k], 1);
        model m;
        size_t i, j, scratch_early = 0, scratch_late = 0, sizes[3];
        long rss_early = 0;
        mlorc_state_info info;
        model_init(&m, opt, small_model, 3, 16);
        for (i = 0; i < m.count; ++i) sizes[i] = m.t[i].state_bytes;
        for (s = 0; s < long_steps; ++s) {
            model_grads(&m, (uint64_t)s);
            CHECK_RC(opt, mlorc_test_step_any(opt, m.t, m.count, 1e-3), MLORC_OK);
            if (s == 100) {
                CHECK_RC(opt, mlorc_scratch_bytes(opt, &scratch_early), MLORC_OK);
                rss_early = max_rss_kib();
            }
        }
        CHECK_RC(opt, mlorc_scratch_bytes(opt, &scratch_late), MLORC_OK);
        CHECK(scratch_late == scratch_early); /* scratch is reused, not regrown */
        /* Peak RSS may not creep up once the loop is warm (a leak of even a
         * few hundred bytes a step would show at this length). */
        CHECK(!check_rss || long_steps <= 100 || max_rss_kib() - rss_early < 4096);
        for (i = 0; i < m.count; ++i) {
            CHECK_RC(NULL, mlorc_state_inspect(m.state[i], m.t[i].state_bytes, &info), MLORC_OK);
            CHECK(info.state_bytes == sizes[i] && info.step == (uint64_t)long_steps);
            for (j = 0; j < m.elements[i]; ++j) CHECK(isfinite(m.param[i][j]));
        }
        model_free(&m);
        mlorc_free(opt);
    }
}

/* ------------------------------------------------------------ versioning */

static void set_version(unsigned char *state, uint32_t version, int reseal) {
    memcpy(state + 8, &version, 4);
    if (reseal) mlorc_test_fix_header(state);
}

/* Every committed seed state (a 32-byte fuzz control block, then a state)
 * still loads and steps. */
static void load_committed_states(void) {
    DIR *dir;
    struct dirent *e;
    int loaded = 0;
    if (!corpus_dir) return;
    dir = opendir(corpus_dir);
    CHECK(dir != NULL);
    while ((e = readdir(dir)) != NULL) {
        char path[1024];
        unsigned char buf[8192];
        FILE *f;
        size_t n;
        mlorc_state_info info;
        mlorc_optimizer *opt;
        float param[4096], grad[4096];
        mlorc_tensor t;
        if (!strstr(e->d_name, ".bin")) continue;
        snprintf(path, sizeof path, "%s/%s", corpus_dir, e->d_name);
        f = fopen(path, "rb");
        CHECK(f != NULL);
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        CHECK(n > 32);
        CHECK_RC(NULL, mlorc_state_inspect(buf + 32, n - 32, &info), MLORC_OK);
        CHECK(info.layout_version == MLORC_STATE_LAYOUT_VERSION && info.rows * info.cols <= 4096);
        opt = make(info.rule, 1);
        memset(&t, 0, sizeof t);
        memset(param, 0, sizeof param);
        memset(grad, 0, sizeof grad);
        grad[0] = 1.0f;
        t.param = param;
        t.grad = grad;
        t.state = buf + 32;
        t.state_bytes = n - 32;
        t.rows = info.rows;
        t.cols = info.cols;
        CHECK_RC(opt, mlorc_test_step_any(opt, &t, 1, lr), MLORC_OK);
        mlorc_free(opt);
        ++loaded;
    }
    closedir(dir);
    CHECK(loaded >= 8);
}

static void test_versioning(void) {
    int k;
    load_committed_states();
    for (k = 0; k < rule_count; ++k) {
        mlorc_optimizer *opt = make(rules[k], 1);
        model m, loaded, before;
        mlorc_state_info info;
        size_t i;
        model_init(&m, opt, small_model, 3, 17);
        model_train(&m, opt, 1, 6);
        save_and_load(&loaded, &m);
        for (i = 0; i < loaded.count; ++i) {
            CHECK_RC(NULL, mlorc_state_inspect(loaded.state[i], loaded.t[i].state_bytes, &info), MLORC_OK);
            CHECK(info.layout_version == MLORC_STATE_LAYOUT_VERSION);
        }
        model_grads(&loaded, 13);
        model_copy(&before, &loaded);
        for (i = 0; i < loaded.count; ++i) {
            /* A newer writer, with a consistent checksum: a real future state. */
            set_version(loaded.state[i], MLORC_STATE_LAYOUT_VERSION + 1, 1);
            CHECK_RC(NULL, mlorc_state_inspect(loaded.state[i], loaded.t[i].state_bytes, &info), MLORC_ERROR_STATE_VERSION);
            CHECK_RC(opt, mlorc_test_step_any(opt, loaded.t, loaded.count, lr), MLORC_ERROR_STATE_VERSION);
            CHECK(contains(mlorc_last_error(opt), "newer libmlorc"));
            CHECK(!contains(mlorc_last_error(opt), "corrupted"));
            /* The version is checked before the checksum: the same status
             * unsealed, but then the field may as well be damaged. */
            set_version(loaded.state[i], 7, 0);
            CHECK_RC(opt, mlorc_test_step_any(opt, loaded.t, loaded.count, lr), MLORC_ERROR_STATE_VERSION);
            CHECK(contains(mlorc_last_error(opt), "newer libmlorc"));
            CHECK(contains(mlorc_last_error(opt), "corrupted"));
            /* An older (unknown) layout is refused without blaming a newer writer. */
            set_version(loaded.state[i], 0, 1);
            CHECK_RC(opt, mlorc_test_step_any(opt, loaded.t, loaded.count, lr), MLORC_ERROR_STATE_VERSION);
            CHECK(!contains(mlorc_last_error(opt), "newer"));
            set_version(loaded.state[i], MLORC_STATE_LAYOUT_VERSION, 1);
            CHECK(model_same(&loaded, &before));
        }
        CHECK_RC(opt, mlorc_test_step_any(opt, loaded.t, loaded.count, lr), MLORC_OK);
        model_free(&m);
        model_free(&loaded);
        model_free(&before);
        mlorc_free(opt);
    }
}

/* ------------------------------------------------------------ known bugs */

/* A dense 3x5 AdamW state whose header field at `offset` is overwritten
 * with `value` and resealed: consistent, but semantically out of range. */
static void sealed_state_with(unsigned char *state, size_t bytes, mlorc_optimizer *opt, size_t offset, const void *value, size_t size) {
    mlorc_tensor_layout layout = {3, 5, MLORC_DTYPE_F32, MLORC_STORAGE_DENSE};
    CHECK_RC(opt, mlorc_state_init(opt, &layout, 1, state, bytes), MLORC_OK);
    memcpy(state + offset, value, size);
    mlorc_test_fix_header(state);
}

/* Expected: a dtype field with bit 31 set is refused (STATE_CORRUPTED).
 * Bug: mlorc_state_inspect traps (SIGILL) converting it to int32. */
static void known_dtype_trap(void) {
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW, 1);
    unsigned char state[128 + 120];
    const uint32_t dtype = 0x80000000u;
    mlorc_state_info info;
    sealed_state_with(state, sizeof state, opt, 20, &dtype, 4);
    CHECK_RC(NULL, mlorc_state_inspect(state, sizeof state, &info), MLORC_ERROR_STATE_CORRUPTED);
    mlorc_free(opt);
}

/* Expected: a state whose step counter is UINT64_MAX is refused, unchanged.
 * Bug (fixed): mlorc_step trapped (SIGILL) on the overflowing step + 1.
 * Around the limit: a step from 2^53 - 2 writes 2^53 - 1, which inspects
 * fine; a step from 2^53 - 1 would write a counter inspect refuses, so it is
 * refused itself, unchanged (found by fuzzing: the library once wrote it). */
static void known_step_overflow(void) {
    static const uint64_t limit = (uint64_t)1 << 53;
    const uint64_t refused[3] = {UINT64_MAX, limit, limit - 1};
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW, 1);
    unsigned char state[128 + 120], before[sizeof state];
    float param[15] = {0}, grad[15] = {0};
    mlorc_tensor t = {param, grad, state, sizeof state, 3, 5, MLORC_DTYPE_F32, 0};
    mlorc_state_info info;
    uint64_t step;
    size_t k;
    for (k = 0; k < 3; ++k) {
        sealed_state_with(state, sizeof state, opt, 48, &refused[k], 8);
        memcpy(before, state, sizeof state);
        CHECK_RC(opt, mlorc_test_step_any(opt, &t, 1, lr), MLORC_ERROR_STATE_CORRUPTED);
        CHECK(memcmp(state, before, sizeof state) == 0);
    }
    step = limit - 2;
    sealed_state_with(state, sizeof state, opt, 48, &step, 8);
    CHECK_RC(opt, mlorc_test_step_any(opt, &t, 1, lr), MLORC_OK);
    CHECK_RC(opt, mlorc_state_inspect(state, sizeof state, &info), MLORC_OK);
    CHECK(info.step == limit - 1);
    mlorc_free(opt);
}

/* Expected: a step either succeeds or changes nothing. Bug: with a finite
 * but huge singular value in a (checksum-valid) low-rank state, the step
 * fails in sgesdd with MLORC_ERROR_LINALG after writing the parameters. */
static void known_linalg_partial_write(void) {
    int k;
    static const int repro_rules[2] = {MLORC_RULE_ADAMW, MLORC_RULE_LION};
    for (k = 0; k < 2; ++k) {
        mlorc_optimizer *opt = NULL;
        mlorc_tensor_layout layout = {8, 6, MLORC_DTYPE_F32, MLORC_STORAGE_LOWRANK};
        unsigned char *state, *before;
        float param[48], grad[48], param_before[48];
        const float huge = 3e38f;
        size_t bytes = 0, i;
        mlorc_tensor t;
        int rc;
        CHECK_RC(NULL, mlorc_create(&opt, repro_rules[k]), MLORC_OK);
        CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_RANK, 2), MLORC_OK);
        CHECK_RC(opt, mlorc_state_size(opt, &layout, &bytes), MLORC_OK);
        state = xmalloc(bytes);
        before = xmalloc(bytes);
        CHECK_RC(opt, mlorc_state_init(opt, &layout, 3, state, bytes), MLORC_OK);
        for (i = 0; i < 48; ++i) {
            param[i] = 0.01f * (float)i;
            grad[i] = 0.1f * (float)((i * 7) % 11) - 0.5f;
        }
        t = (mlorc_tensor){param, grad, state, bytes, 8, 6, MLORC_DTYPE_F32, 0};
        CHECK_RC(opt, mlorc_test_step_any(opt, &t, 1, lr), MLORC_OK);
        /* First singular value of the first moment: U is 8x2, then s. */
        memcpy(state + 128 + 4 * 16, &huge, 4);
        mlorc_test_fix_payload(state, bytes);
        mlorc_test_fix_header(state);
        memcpy(before, state, bytes);
        memcpy(param_before, param, sizeof param);
        rc = mlorc_test_step_any(opt, &t, 1, lr);
        if (rc != MLORC_OK) {
            fprintf(stderr, "step returned %d: %s\n", rc, mlorc_last_error(opt));
            CHECK(memcmp(param, param_before, sizeof param) == 0);
            CHECK(memcmp(state, before, bytes) == 0);
        }
        free(state);
        free(before);
        mlorc_free(opt);
    }
}

/* Expected: a step returns. Bug: with this checksum-valid Lion state
 * (8x6, rank 2, found by fuzzing: some factors near 1e16..1e25) and
 * oversampling 1, mlorc_step never returns from OpenBLAS's sgesdd
 * (sbdsqr). The alarm turns the hang into a failure. */
static void known_svd_hang(void) {
    static const uint32_t factors[30] = {
        0xbeac09a8, 0xbef52d04, 0x3e7b9ab2, 0x3f0de8a9, 0xda0cf907, 0xa7050728, 0x27c9893e, 0x0d8705bf,
        0x0cf9073f, 0x0507283e, 0xc9893ea7, 0x8705bf27, 0x234d3efd, 0xe8debe30, 0xe145be7b, 0xc288be7f,
        0xa300be87, 0x52413d15, 0x39783df1, 0xd1963f52, 0xbe3023d7, 0xbe7be8de, 0xbe7fe145, 0xbe87c288,
        0x43524f4c, 0x01315453, 0x02000000, 0x02000000, 0x00000000, 0x08000000};
    const uint64_t step = 17169973579350019ull;
    mlorc_optimizer *opt = make(MLORC_RULE_LION, 1);
    mlorc_tensor_layout layout = {8, 6, MLORC_DTYPE_F32, MLORC_STORAGE_LOWRANK};
    unsigned char state[128 + sizeof factors];
    float param[48], grad[48];
    mlorc_tensor t = {param, grad, state, sizeof state, 8, 6, MLORC_DTYPE_F32, 0};
    int i;
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_OVERSAMPLING, 1), MLORC_OK);
    CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_POWER_ITERATIONS, 0), MLORC_OK);
    CHECK_RC(opt, mlorc_state_init(opt, &layout, 3, state, sizeof state), MLORC_OK);
    memcpy(state + 48, &step, 8);
    memcpy(state + 128, factors, sizeof factors);
    mlorc_test_fix_payload(state, sizeof state);
    mlorc_test_fix_header(state);
    for (i = 0; i < 48; ++i) {
        param[i] = 0.25f;
        grad[i] = 0.1f * (float)((i * 7) % 11) - 0.5f;
    }
    alarm(5); /* a step of this size takes microseconds */
    (void)mlorc_test_step_any(opt, &t, 1, 1e-3);
    alarm(0);
    mlorc_free(opt);
}

/* Threads of this process (Linux). */
static int thread_count(void) {
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    CHECK(dir != NULL);
    while ((e = readdir(dir)) != NULL) n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* Expected: mlorc_free (and a change of MLORC_PARAM_THREADS) ends the
 * handle's worker threads. Bug: parked workers keep their ThreadPool alive,
 * so it is never deinitialised: each handle that stepped with THREADS = k
 * leaves k - 1 threads (and their stacks) behind. */
static void known_thread_leak(void) {
    static const shape big[1] = {{256, 256, MLORC_STORAGE_LOWRANK}};
    mlorc_optimizer *opt = make(MLORC_RULE_ADAMW, 1);
    model m;
    int base, i;
    model_init(&m, opt, big, 1, 18);
    model_train(&m, opt, 1, 7); /* lets OpenBLAS start its own threads first */
    mlorc_free(opt);
    base = thread_count();
    for (i = 0; i < 4; ++i) {
        opt = make(MLORC_RULE_ADAMW, 3);
        model_train(&m, opt, 1, 8);
        CHECK_RC(opt, mlorc_set_param(opt, MLORC_PARAM_THREADS, 2), MLORC_OK);
        model_train(&m, opt, 1, 9);
        mlorc_free(opt);
    }
    fprintf(stderr, "threads before: %d, after 4 handles: %d\n", base, thread_count());
    CHECK(thread_count() == base);
    model_free(&m);
}

/* ------------------------------------------------------------------ main */

typedef struct {
    const char *name;
    void (*run)(void);
    int regular;
} test;

static const test tests[] = {
    {"cross_rule", test_cross_rule, 1},   {"truncated", test_truncated, 1},
    {"bit_flips", test_bit_flips, 1},     {"nonfinite", test_nonfinite, 1},
    {"aliasing", test_aliasing, 1},       {"concurrent", test_concurrent, 1},
    {"long_run", test_long_run, 1},       {"versioning", test_versioning, 1},
    {"known_dtype_trap", known_dtype_trap, 1},
    {"known_step_overflow", known_step_overflow, 1},
    {"known_linalg_partial_write", known_linalg_partial_write, 1},
    {"known_thread_leak", known_thread_leak, 1},
    {"known_svd_hang", known_svd_hang, 1},
};
#define TEST_COUNT (sizeof tests / sizeof tests[0])

static void run(const test *t) {
    unsigned long before = checks_run;
    t->run();
    printf("ok %s (%lu checks)\n", t->name, checks_run - before);
    fflush(stdout);
}

int main(int argc, char **argv) {
    int a, named = 0;
    size_t i;
    probe_rules();
    for (a = 1; a < argc; ++a) {
        if (strcmp(argv[a], "--corpus") == 0 && a + 1 < argc) {
            corpus_dir = argv[++a];
        } else if (strcmp(argv[a], "--no-rss") == 0) {
            check_rss = 0;
        } else if (strcmp(argv[a], "--steps") == 0 && a + 1 < argc) {
            long_steps = atoi(argv[++a]);
        } else {
            for (i = 0; i < TEST_COUNT && strcmp(tests[i].name, argv[a]) != 0; ++i) {}
            if (i == TEST_COUNT) {
                fprintf(stderr, "unknown test %s\n", argv[a]);
                return 2;
            }
            run(&tests[i]);
            named = 1;
        }
    }
    if (!named)
        for (i = 0; i < TEST_COUNT; ++i)
            if (tests[i].regular) run(&tests[i]);
    return 0;
}
