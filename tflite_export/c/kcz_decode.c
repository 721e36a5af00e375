/* kcz_decode.c - see kcz_decode.h. Written by hand for microcontrollers: no library there
 * decodes this format, and the pieces (CRC-32, SHA-256, canonical Huffman) are small. */
#include "kcz_decode.h"

#include <string.h>

#define HEADER_SIZE 64u
#define ENTRY_SIZE 32u

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* CRC-32 (zlib polynomial, reflected), four bits at a time: a 64-byte table. */
static uint32_t crc32(const uint8_t *p, size_t n) {
    static const uint32_t t[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
    uint32_t crc = 0xFFFFFFFFu;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ t[crc & 15u];
        crc = (crc >> 4) ^ t[crc & 15u];
    }
    return ~crc;
}

/* ------------------------------------------------------------------ SHA-256 (FIPS 180-4) */

static const uint32_t K256[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(kcz_sha256 *s, const uint8_t *b) {
    uint32_t w[64], a, bb, c, d, e, f, g, h, i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) |
               ((uint32_t)b[4 * i + 2] << 8) | b[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; bb = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += bb; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha_init(kcz_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                   0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    memcpy(s->h, iv, sizeof iv);
    s->length = 0;
    s->used = 0;
}

static void sha_update(kcz_sha256 *s, const uint8_t *p, size_t n) {
    s->length += n;
    while (n) {
        size_t take;
        if (s->used == 0 && n >= 64) { /* whole blocks straight from the input */
            sha_block(s, p);
            p += 64;
            n -= 64;
            continue;
        }
        take = 64u - s->used < n ? 64u - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += (uint32_t)take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha_block(s, s->block);
            s->used = 0;
        }
    }
}

static void sha_final(kcz_sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->length * 8u;
    uint8_t pad = 0x80;
    unsigned i;
    sha_update(s, &pad, 1);
    pad = 0;
    while (s->used != 56) sha_update(s, &pad, 1);
    for (i = 0; i < 8; i++) {
        uint8_t byte = (uint8_t)(bits >> (56 - 8 * i));
        sha_update(s, &byte, 1);
    }
    for (i = 0; i < 32; i++) out[i] = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ------------------------------------------------------------------ output */

typedef struct {
    kcz_workspace *ws;
    kcz_write_fn write;
    void *ctx;
} sink;

static int flush(sink *o) {
    if (o->ws->out_used && o->write(o->ctx, o->ws->out, o->ws->out_used)) return KCZ_E_WRITE;
    o->ws->out_used = 0;
    return KCZ_OK;
}

static int emit(sink *o, const uint8_t *p, size_t n) {
    sha_update(&o->ws->sha, p, n);
    while (n) {
        size_t room = KCZ_CHUNK - o->ws->out_used, take = n < room ? n : room;
        memcpy(o->ws->out + o->ws->out_used, p, take);
        o->ws->out_used += (uint32_t)take;
        p += take;
        n -= take;
        if (o->ws->out_used == KCZ_CHUNK && flush(o)) return KCZ_E_WRITE;
    }
    return KCZ_OK;
}

static int emit_zeros(sink *o, uint64_t n) {
    static const uint8_t zeros[16] = {0};
    while (n) {
        size_t take = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (emit(o, zeros, take)) return KCZ_E_WRITE;
        n -= take;
    }
    return KCZ_OK;
}

/* ------------------------------------------------------------------ canonical Huffman */

typedef struct {
    const uint8_t *p;
    uint32_t nbits, pos;
} bits;

/* Code counts per length and symbols in canonical order, from one byte of length per symbol.
 * Rejects lengths over max_len and over-subscribed (non-prefix) sets of lengths. */
static int huff_build(uint16_t *count, uint16_t *symbol, const uint8_t *len, uint32_t n,
                      uint32_t max_len) {
    uint16_t offs[KCZ_MAX_CODE_LEN + 2];
    int32_t left = 1;
    uint32_t i;
    memset(count, 0, sizeof(uint16_t) * (KCZ_MAX_CODE_LEN + 1));
    for (i = 0; i < n; i++) {
        if (len[i] > max_len) return KCZ_E_HUFFMAN;
        count[len[i]]++;
    }
    for (i = 1; i <= KCZ_MAX_CODE_LEN; i++) {
        left = left * 2 - count[i];
        if (left < 0) return KCZ_E_HUFFMAN;
    }
    offs[1] = 0;
    for (i = 1; i < KCZ_MAX_CODE_LEN; i++) offs[i + 1] = (uint16_t)(offs[i] + count[i]);
    for (i = 0; i < n; i++)
        if (len[i]) symbol[offs[len[i]]++] = (uint16_t)i;
    count[0] = 0;
    return KCZ_OK;
}

/* One symbol, or -1 at the end of the stream, -2 for a bit pattern that is no code. */
static int32_t huff_decode(const uint16_t *count, const uint16_t *symbol, bits *b) {
    int32_t code = 0, first = 0, index = 0;
    uint32_t len;
    for (len = 1; len <= KCZ_MAX_CODE_LEN; len++) {
        int32_t c;
        if (b->pos >= b->nbits) return -1;
        code |= (b->p[b->pos >> 3] >> (7u - (b->pos & 7u))) & 1;
        b->pos++;
        c = count[len];
        if (code - c < first) return symbol[index + (code - first)];
        index += c;
        first = (first + c) << 1;
        code <<= 1;
    }
    return -2;
}

/* ------------------------------------------------------------------ one tensor */

typedef struct {
    const uint8_t *p;
    uint32_t size, pos;
} cursor;

static const uint8_t *take(cursor *c, uint32_t n) {
    const uint8_t *out;
    if (n > c->size - c->pos) return NULL;
    out = c->p + c->pos;
    c->pos += n;
    return out;
}

static int read_stream(cursor *c, bits *b) {
    const uint8_t *head = take(c, 8);
    if (!head) return KCZ_E_PAYLOAD;
    b->nbits = rd32(head);
    if ((uint32_t)(((uint64_t)b->nbits + 7u) / 8u) != rd32(head + 4)) return KCZ_E_HUFFMAN;
    b->p = take(c, rd32(head + 4));
    b->pos = 0;
    return b->p || rd32(head + 4) == 0 ? KCZ_OK : KCZ_E_PAYLOAD;
}

static int decode_tensor(const uint8_t *payload, uint32_t size, uint64_t length,
                         uint32_t elem, sink *o) {
    kcz_workspace *ws = o->ws;
    cursor c = {payload, size, 0};
    const uint8_t *head = take(&c, 10), *codebook, *vlen, *glen = NULL;
    uint32_t k, gap_bits, max_len, entries, i, rc;
    uint64_t n = length / elem, pos = 0;
    bits vb, gb = {NULL, 0, 0};
    if (!head || length % elem) return KCZ_E_PAYLOAD;
    k = rd32(head);
    gap_bits = head[4];
    max_len = head[5];
    entries = rd32(head + 6);
    if (gap_bits > KCZ_MAX_GAP_BITS || max_len < 1 || max_len > KCZ_MAX_CODE_LEN) return KCZ_E_PAYLOAD;
    if (k > KCZ_MAX_CODEBOOK) return KCZ_E_WORKSPACE;
    if (entries > n || (gap_bits == 0 && entries != n)) return KCZ_E_PAYLOAD;
    codebook = take(&c, k * elem);
    vlen = take(&c, k + 1);
    if (!codebook || !vlen) return KCZ_E_PAYLOAD;
    if ((rc = (uint32_t)read_stream(&c, &vb))) return (int)rc;
    if (gap_bits) {
        glen = take(&c, 1u << gap_bits);
        if (!glen) return KCZ_E_PAYLOAD;
        if ((rc = (uint32_t)read_stream(&c, &gb))) return (int)rc;
    }
    if (c.pos != c.size) return KCZ_E_PAYLOAD;
    if (huff_build(ws->value_count, ws->value_symbol, vlen, k + 1, max_len)) return KCZ_E_HUFFMAN;
    if (gap_bits && huff_build(ws->gap_count, ws->gap_symbol, glen, 1u << gap_bits, max_len))
        return KCZ_E_HUFFMAN;
    for (i = 0; i < entries; i++) {
        int32_t v = huff_decode(ws->value_count, ws->value_symbol, &vb), g = 0;
        if (v < 0) return KCZ_E_HUFFMAN;
        if (gap_bits) {
            g = huff_decode(ws->gap_count, ws->gap_symbol, &gb);
            if (g < 0) return KCZ_E_HUFFMAN;
        }
        if (pos + (uint64_t)g >= n || ((uint32_t)v == k && !gap_bits)) return KCZ_E_PAYLOAD;
        if (emit_zeros(o, (uint64_t)g * elem)) return KCZ_E_WRITE;
        if ((uint32_t)v == k) {
            if (emit_zeros(o, elem)) return KCZ_E_WRITE;
        } else if (emit(o, codebook + (size_t)v * elem, elem)) {
            return KCZ_E_WRITE;
        }
        pos += (uint64_t)g + 1u;
    }
    if (vb.pos != vb.nbits || gb.pos != gb.nbits) return KCZ_E_HUFFMAN;
    return emit_zeros(o, (n - pos) * elem);
}

/* ------------------------------------------------------------------ whole file */

int kcz_decode(const uint8_t *side, size_t side_size, const uint8_t *skeleton,
               size_t skeleton_size, kcz_write_fn write, void *ctx, kcz_workspace *ws) {
    uint64_t model_size, skel_size, table_end, prev_end = 0, cut = 0, payload_at, model_pos = 0,
                                                skel_pos = 0;
    uint32_t count, i;
    uint8_t digest[32];
    sink o;
    int rc;
    if (side_size < HEADER_SIZE + 4u) return KCZ_E_TRUNCATED;
    if (memcmp(side, "KCZ1", 4) != 0) return KCZ_E_MAGIC;
    if (rd16(side + 4) != 1) return KCZ_E_VERSION;
    if (crc32(side, HEADER_SIZE - 4u) != rd32(side + HEADER_SIZE - 4u)) return KCZ_E_CRC;
    model_size = rd64(side + 8);
    skel_size = rd64(side + 16);
    count = rd32(side + 56);
    table_end = HEADER_SIZE + (uint64_t)count * ENTRY_SIZE;
    if (table_end + 4u > side_size) return KCZ_E_TRUNCATED;
    if (crc32(side + HEADER_SIZE, (size_t)(table_end - HEADER_SIZE)) != rd32(side + table_end))
        return KCZ_E_CRC;
    if (skel_size != skeleton_size) return KCZ_E_SKELETON;
    /* First pass: every entry is consistent before anything is written. */
    payload_at = table_end + 4u;
    for (i = 0; i < count; i++) {
        const uint8_t *e = side + HEADER_SIZE + (size_t)i * ENTRY_SIZE;
        uint64_t off = rd64(e), len = rd64(e + 8), poff = rd64(e + 16);
        uint32_t psize = rd32(e + 24), elem = e[29];
        if (e[28] != 1 || (elem != 1 && elem != 2 && elem != 4 && elem != 8) || rd16(e + 30))
            return KCZ_E_TABLE;
        if (off < prev_end || len > model_size || off > model_size - len) return KCZ_E_TABLE;
        if (poff != payload_at || (uint64_t)psize + 4u > side_size - poff) return KCZ_E_TABLE;
        prev_end = off + len;
        cut += len;
        payload_at = poff + psize + 4u;
    }
    if (payload_at != side_size || model_size - cut != skel_size) return KCZ_E_TABLE;
    /* Second pass: stream the model out. */
    o.ws = ws;
    o.write = write;
    o.ctx = ctx;
    ws->out_used = 0;
    sha_init(&ws->sha);
    for (i = 0; i < count; i++) {
        const uint8_t *e = side + HEADER_SIZE + (size_t)i * ENTRY_SIZE;
        uint64_t off = rd64(e), len = rd64(e + 8), poff = rd64(e + 16), keep = off - model_pos;
        uint32_t psize = rd32(e + 24);
        if (emit(&o, skeleton + skel_pos, (size_t)keep)) return KCZ_E_WRITE;
        skel_pos += keep;
        if (crc32(side + poff, psize) != rd32(side + poff + psize)) return KCZ_E_CRC;
        rc = decode_tensor(side + poff, psize, len, e[29], &o);
        if (rc) return rc;
        model_pos = off + len;
    }
    if (emit(&o, skeleton + skel_pos, (size_t)(skeleton_size - skel_pos))) return KCZ_E_WRITE;
    if (flush(&o)) return KCZ_E_WRITE;
    sha_final(&ws->sha, digest);
    return memcmp(digest, side + 24, 32) == 0 ? KCZ_OK : KCZ_E_HASH;
}

const char *kcz_error_name(int code) {
    static const char *const names[] = {
        "ok", "truncated", "bad magic", "unknown version", "CRC mismatch", "bad entry table",
        "skeleton size mismatch", "bad tensor payload", "bad Huffman stream",
        "codebook too large for the workspace", "SHA-256 mismatch", "write callback failed"};
    return code >= 0 && code <= KCZ_E_WRITE ? names[code] : "unknown error";
}
