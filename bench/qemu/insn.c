/* A qemu-user plugin (the qemu 7.2 plugin API of Debian 12, declarations written out here:
 * Debian ships no qemu-plugin.h) that counts the guest instructions a program executes: the
 * total on stderr at exit, and with QPROF=FILE also the count of every translation block
 * ("vaddr instructions" lines) for a per-function breakdown (scripts/aarch64-instructions.sh).
 * Counting is per process and not atomic: run the program on one core (taskset -c 0). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op,
                                              void *, uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* One record per translated block: its address, instructions, executions. */
struct block {
    uint64_t vaddr, n, runs;
    struct block *next;
};
static struct block *blocks;

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct block *b = calloc(1, sizeof *b);
    if (!b)
        abort();
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
}

static void finished(qemu_plugin_id_t id, void *unused) {
    const char *path = getenv("QPROF");
    FILE *f = path ? fopen(path, "w") : NULL;
    unsigned long long total = 0;
    for (struct block *b = blocks; b; b = b->next) {
        total += b->n * b->runs;
        if (f && b->runs)
            fprintf(f, "%llx %llu\n", (unsigned long long)b->vaddr,
                    (unsigned long long)(b->n * b->runs));
    }
    if (f)
        fclose(f);
    fprintf(stderr, "guest instructions: %llu\n", total);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv) {
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
