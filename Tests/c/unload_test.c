/*
 * unload_test.c - libmlorc loaded and unloaded again and again, as a plugin
 * host does: usage unload_test path/to/libmlorc.so [cycles].
 *
 * Each cycle dlopens the library, steps a small tensor through it, frees the
 * handle and dlcloses it. The Swift runtime inside the library keeps caches
 * it cannot release, so the library stays loaded (RTLD_NODELETE,
 * include/mlorc.h): checked here by RTLD_NOLOAD after the last dlclose, and
 * by the heap in use (mallinfo2), which must be the same at the end of the
 * first cycle and of the last (the library before this was 1.8 kB more each
 * cycle). mallinfo2 counts the blocks glibc's per-thread cache holds back as
 * in use, so the test runs with that cache off:
 *   GLIBC_TUNABLES=glibc.malloc.tcache_count=0 unload_test ...
 * Tests/c/run.sh does so, and runs it under valgrind too, where no block may
 * be lost.
 */
#include "mlorc.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*create_fn)(mlorc_optimizer **, int);
typedef void (*free_fn)(mlorc_optimizer *);
typedef int (*state_size_fn)(const mlorc_optimizer *, const mlorc_tensor_layout *, size_t *);
typedef int (*state_init_fn)(const mlorc_optimizer *, const mlorc_tensor_layout *, uint64_t, void *, size_t);
typedef int (*step_fn)(mlorc_optimizer *, const mlorc_tensor *, size_t, double);

static void fail(const char *what) {
    fprintf(stderr, "unload_test: %s\n", what);
    exit(1);
}

/* dlsym's object pointer copied bit for bit into a function pointer (ISO C
 * has no conversion; POSIX guarantees this works). */
static void resolve(void *lib, const char *name, void *slot, size_t size) {
    void *sym = dlsym(lib, name);
    if (!sym) fail(name);
    memcpy(slot, &sym, size);
}

/* One cycle: load, step a 16 x 12 low-rank tensor twice, unload. */
static void cycle(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    create_fn create;
    free_fn release;
    state_size_fn state_size;
    state_init_fn state_init;
    step_fn step;
    mlorc_optimizer *opt = NULL;
    mlorc_tensor_layout layout = {16, 12, MLORC_DTYPE_F32, MLORC_STORAGE_LOWRANK};
    float param[16 * 12], grad[16 * 12];
    unsigned char *state;
    mlorc_tensor t;
    size_t bytes, i;

    if (!lib) fail(dlerror());
    resolve(lib, "mlorc_create", &create, sizeof create);
    resolve(lib, "mlorc_free", &release, sizeof release);
    resolve(lib, "mlorc_state_size", &state_size, sizeof state_size);
    resolve(lib, "mlorc_state_init", &state_init, sizeof state_init);
    resolve(lib, "mlorc_step", &step, sizeof step);
    if (create(&opt, MLORC_RULE_ADAMW) != MLORC_OK || state_size(opt, &layout, &bytes) != MLORC_OK) fail("create");
    state = malloc(bytes);
    if (!state || state_init(opt, &layout, 1, state, bytes) != MLORC_OK) fail("state_init");
    for (i = 0; i < 16 * 12; ++i) {
        param[i] = (float)(i % 5) / 5.0f;
        grad[i] = (float)(i % 7) / 7.0f - 0.5f;
    }
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    t.state = state;
    t.state_bytes = bytes;
    t.rows = 16;
    t.cols = 12;
    if (step(opt, &t, 1, 1e-3) != MLORC_OK || step(opt, &t, 1, 1e-3) != MLORC_OK) fail("step");
    release(opt);
    free(state);
    if (dlclose(lib) != 0) fail(dlerror());
}

int main(int argc, char **argv) {
    int cycles = argc > 2 ? atoi(argv[2]) : 20, i;
    size_t after_first, after_last;
    void *still;

    const char *tunables = getenv("GLIBC_TUNABLES");
    if (argc < 2 || cycles < 2) {
        fprintf(stderr, "usage: %s path/to/libmlorc.so [cycles >= 2]\n", argv[0]);
        return 2;
    }
    if (!tunables || !strstr(tunables, "glibc.malloc.tcache_count=0")) {
        fprintf(stderr, "unload_test: run with GLIBC_TUNABLES=glibc.malloc.tcache_count=0 (heap counts are exact only then)\n");
        return 2;
    }
    cycle(argv[1]);
    after_first = mallinfo2().uordblks;
    for (i = 1; i < cycles; ++i) cycle(argv[1]);
    after_last = mallinfo2().uordblks;
    if (after_first == 0) {
        /* Valgrind's allocator replaces glibc's: mallinfo2 sees nothing, and
         * valgrind's own leak check is the test. */
        printf("unload_test: no heap counts (valgrind's allocator): the leak check is valgrind's\n");
    } else {
        printf("unload_test: heap in use after cycle 1: %lu bytes, after cycle %d: %lu bytes\n",
               (unsigned long)after_first, cycles, (unsigned long)after_last);
        if (after_last != after_first) fail("the heap in use changed with load/unload cycles");
    }

    still = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
    if (!still) fail("the library was unmapped by dlclose (it should stay loaded: RTLD_NODELETE)");
    dlclose(still);
    printf("unload_test: %d cycles; the library is still mapped after dlclose\n", cycles);
    return 0;
}
