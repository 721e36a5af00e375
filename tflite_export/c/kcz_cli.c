/* Test and command-line driver for kcz_decode (not part of the device library).
 *   kcz_cli SKELETON SIDECAR OUT          decode; exit 0, or 2 with the error's name
 *   kcz_cli SKELETON SIDECAR --mutate N   decode N corrupted copies of the sidecar: each must
 *                                         be rejected or decode to the identical model
 *   kcz_cli SKELETON SIDECAR --bench N    decode N times into memory, print the CPU seconds
 * OUT is written to OUT.part and renamed over OUT only once the whole model decoded (its CRCs
 * and SHA-256 checked), so a failed decode leaves OUT as it was; OUT may not be an input. */
#define _POSIX_C_SOURCE 200112L /* stat(): is OUT one of the inputs? */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "kcz_decode.h"

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *data;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc(n > 0 ? (size_t)n : 1u);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return data;
}

/* Whether paths a and b name the same existing file (hard links and ./ spellings too). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int to_file(void *ctx, const uint8_t *data, size_t len) {
    return fwrite(data, 1, len, (FILE *)ctx) != len;
}

typedef struct {
    unsigned char *buf;
    size_t used, cap;
} memsink;

static int to_memory(void *ctx, const uint8_t *data, size_t len) {
    memsink *m = ctx;
    if (m->used + len > m->cap) return 1;
    memcpy(m->buf + m->used, data, len);
    m->used += len;
    return 0;
}

int main(int argc, char **argv) {
    size_t skel_size, side_size;
    unsigned char *skel, *side;
    static kcz_workspace ws;
    int rc;
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: kcz_cli SKELETON SIDECAR OUT | --mutate N\n");
        return 64;
    }
    skel = slurp(argv[1], &skel_size);
    side = slurp(argv[2], &side_size);
    if (!skel || !side) {
        fprintf(stderr, "cannot read inputs\n");
        return 66;
    }
    if (argc == 5 && strcmp(argv[3], "--bench") == 0) {
        unsigned long n = strtoul(argv[4], NULL, 10), i;
        memsink sink = {NULL, 0, 0};
        clock_t start;
        sink.cap = skel_size + 64u * side_size + 1024u;
        sink.buf = malloc(sink.cap);
        if (!sink.buf) return 70;
        start = clock();
        for (i = 0; i < n; i++) {
            sink.used = 0;
            if (kcz_decode(skel, skel_size, side, side_size, to_memory, &sink, &ws) != KCZ_OK) return 3;
        }
        printf("%lu %.6f\n", (unsigned long)sink.used, (double)(clock() - start) / CLOCKS_PER_SEC);
        free(sink.buf);
        free(skel);
        free(side);
        return 0;
    }
    if (argc == 5 && strcmp(argv[3], "--mutate") == 0) {
        unsigned long n = strtoul(argv[4], NULL, 10), i, rejected = 0, identical = 0;
        unsigned long seed = 12345;
        memsink ref = {NULL, 0, 0}, got = {NULL, 0, 0};
        unsigned char *copy = malloc(side_size);
        ref.cap = got.cap = skel_size + 64u * side_size + 1024u;
        ref.buf = malloc(ref.cap);
        got.buf = malloc(got.cap);
        if (!copy || !ref.buf || !got.buf) return 70;
        if (kcz_decode(skel, skel_size, side, side_size, to_memory, &ref, &ws) != KCZ_OK) return 3;
        for (i = 0; i < n; i++) {
            size_t len = side_size, pos;
            memcpy(copy, side, side_size);
            seed = seed * 6364136223846793005ul + 1442695040888963407ul;
            pos = (size_t)((seed >> 33) % side_size);
            switch ((seed >> 13) % 4) {
                case 0: copy[pos] ^= (unsigned char)(1u << ((seed >> 7) % 8)); break;
                case 1: copy[pos] = (unsigned char)(seed >> 17); break;
                case 2: len = pos; break; /* truncate */
                default: copy[pos] ^= 0xFF; copy[(pos * 7u) % side_size] ^= 0x55; break;
            }
            got.used = 0;
            rc = kcz_decode(skel, skel_size, copy, len, to_memory, &got, &ws);
            if (rc != KCZ_OK) {
                rejected++;
            } else if (got.used == ref.used && memcmp(got.buf, ref.buf, ref.used) == 0) {
                identical++;
            } else {
                fprintf(stderr, "mutation %lu decoded to a different model\n", i);
                return 4;
            }
        }
        printf("%lu mutations: %lu rejected, %lu decoded identically\n", n, rejected, identical);
        free(copy);
        free(ref.buf);
        free(got.buf);
        free(skel);
        free(side);
        return 0;
    }
    {
        size_t n = strlen(argv[3]);
        char *part = malloc(n + sizeof ".part");
        FILE *out;
        int closed;
        if (same_file(argv[3], argv[1]) || same_file(argv[3], argv[2])) {
            fprintf(stderr, "error: output %s would overwrite an input\n", argv[3]);
            return 64;
        }
        if (!part) return 70;
        memcpy(part, argv[3], n);
        memcpy(part + n, ".part", sizeof ".part");
        out = fopen(part, "wb");
        if (!out) {
            free(part);
            return 73;
        }
        rc = kcz_decode(skel, skel_size, side, side_size, to_file, out, &ws);
        closed = fclose(out);
        if (rc == KCZ_OK && (closed != 0 || rename(part, argv[3]) != 0)) {
            fprintf(stderr, "error: cannot write %s\n", argv[3]);
            remove(part);
            free(part);
            return 74;
        }
        if (rc != KCZ_OK) {
            fprintf(stderr, "error: %s\n", kcz_error_name(rc));
            remove(part);
        }
        free(part);
    }
    free(skel);
    free(side);
    return rc == KCZ_OK ? 0 : 2;
}
