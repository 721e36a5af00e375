/* kcz_decode.c - see kcz_decode.h. Written by hand for microcontrollers: no library there
 * decodes this format, and the pieces (CRC-32, canonical Huffman) are small. The DEFLATE
 * decoder of the skeleton is written from RFC 1951 rather than taken from zlib or a small
 * inflate library because it must produce one byte at a time between the tensors (zlib's
 * inflate wants its own allocations and whole buffers) and share the canonical Huffman decoder,
 * bounds checks and error codes of the rest; the encoder is zlib itself. */
#include "kcz_decode.h"

#include <string.h>

/* Field offsets, named as in tflite_export/FORMAT.md ("Layout" and "Entry"). */
#define H_MAGIC 0u          /* "KCZ1" */
#define H_VERSION 4u        /* 2 to 5 */
#define H_FLAGS 6u          /* v3: skeleton coding (low 4 bits, 1 = DEFLATE), window bits */
#define H_MODEL_SIZE 8u     /* bytes of the full .tflite */
#define H_SKELETON_SIZE 16u /* bytes of the (decoded) skeleton */
#define H_SKELETON_CRC 56u  /* CRC-32 of the skeleton as stored */
#define H_COUNT 60u         /* number of entries */
#define HEADER_SIZE 64u     /* header fields; its CRC-32 follows, then the entry table */
#define E_OFFSET 0u         /* where the tensor starts in the .tflite */
#define E_LENGTH 8u         /* its bytes */
#define E_PAYLOAD_OFFSET 16u
#define E_PAYLOAD_SIZE 24u
#define E_ENCODING 28u      /* 1: one codebook; 2 (v3): per channel; 3 (v4): arithmetic; 4 (v5): scaled copy */
#define E_ELEM_SIZE 29u     /* 1, 2, 4 or 8 */
#define E_RESERVED 30u      /* 0 */
#define ENTRY_SIZE 32u

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* A macro, not a function: gcc -Os does not inline even a one-instruction function here, and
 * each call costs code. The argument is evaluated four times: no side effects. */
#define rd32(p)                                                                                 \
    ((uint32_t)(p)[0] | ((uint32_t)(p)[1] << 8) | ((uint32_t)(p)[2] << 16) |                    \
     ((uint32_t)(p)[3] << 24))

/* A 64-bit size field as a size_t. Where size_t has 32 bits (microcontrollers) a value of 4 GiB
 * or more becomes SIZE_MAX, which no range check accepts. */
static size_t rdsz(const uint8_t *p) {
    uint32_t high = rd32(p + 4);
    if (sizeof(size_t) < 8) return high ? (size_t)-1 : (size_t)rd32(p);
    return (size_t)(((uint64_t)high << 32) | rd32(p));
}

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

/* Whether the CRC-32 stored (little-endian) right after n bytes at p does not match them:
 * the CRC-32 of data followed by its own CRC is always the constant 0x2144DF1C. */
#ifndef KCZ_FUZZ_NO_CRC
static int crc_bad(const uint8_t *p, size_t n) { return crc32(p, n + 4u) != 0x2144DF1Cu; }
#define SKELETON_CRC_BAD(p, n, want) (crc32((p), (n)) != (want))
#else
/* Fuzzing builds only (tflite_export/c/fuzz): with every CRC accepted, the fuzzer's changes
 * reach the payload and DEFLATE decoders instead of stopping at the first checksum. */
#define crc_bad(p, n) ((void)(p), (void)(n), 0)
#define SKELETON_CRC_BAD(p, n, want) ((void)(p), (void)(n), (void)(want), 0)
#endif

/* ------------------------------------------------------------------ output */

/* Appends n bytes from p (or n zero bytes when p is NULL) to the output chunk, handing each
 * full chunk to the callback. */
static int put(kcz_workspace *ws, const uint8_t *p, size_t n) {
    while (n) {
        uint32_t room = KCZ_CHUNK - ws->out_used, take = n < room ? (uint32_t)n : room;
        if (p) {
            memcpy(ws->out + ws->out_used, p, take);
            p += take;
        } else {
            memset(ws->out + ws->out_used, 0, take);
        }
        ws->out_used += take;
        n -= take;
        if (ws->out_used == KCZ_CHUNK) {
            if (ws->write(ws->ctx, ws->out, KCZ_CHUNK)) return KCZ_E_WRITE;
            ws->out_used = 0;
        }
    }
    return KCZ_OK;
}

/* ------------------------------------------------------------------ canonical Huffman */

/* With KCZ_LUT_BITS > 0 (kcz_decode.h) each stream also decodes through a lookup table kept on
 * the stack, and short runs are written into the output chunk in place. */
#if KCZ_LUT_BITS > 0
#define LUT_BITS ((uint32_t)KCZ_LUT_BITS)
#endif

typedef kcz_bits bits;

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
    offs[1] = 0;
    for (i = 1; i <= KCZ_MAX_CODE_LEN; i++) {
        left = left * 2 - count[i];
        if (left < 0) return KCZ_E_HUFFMAN;
        offs[i + 1] = (uint16_t)(offs[i] + count[i]);
    }
    for (i = 0; i < n; i++)
        if (len[i]) symbol[offs[len[i]]++] = (uint16_t)i;
    count[0] = 0;
    return KCZ_OK;
}

/* One symbol, or -1 for a bit pattern that is no code or runs past the end of the stream. */
static int32_t huff_decode(const uint16_t *count, const uint16_t *symbol, bits *b) {
    int32_t code = 0, first = 0, index = 0;
    uint32_t len;
    for (len = 1; len <= KCZ_MAX_CODE_LEN && b->pos < b->nbits; len++) {
        int32_t c = count[len];
        code |= (b->p[b->pos >> 3] >> ((b->pos & 7u) ^ b->flip)) & 1;
        b->pos++;
        if (code - c < first) return symbol[index + (code - first)];
        index += c;
        first = (first + c) << 1;
        code <<= 1;
    }
    return -1;
}

#if KCZ_LUT_BITS > 0
/* The table (symbol << 5 | length per prefix, 0 for a longer code): each LUT_BITS-bit prefix
 * decoded once, bit by bit. */
static void lut_build(uint32_t *lut, const uint16_t *count, const uint16_t *symbol) {
    uint32_t prefix;
    for (prefix = 0; prefix < 1u << LUT_BITS; prefix++) {
        uint8_t code[2] = {(uint8_t)(prefix >> (LUT_BITS - 8u)), (uint8_t)(prefix << (16u - LUT_BITS))};
        bits probe = {code, LUT_BITS, 0, 7};
        int32_t v = huff_decode(count, symbol, &probe);
        lut[prefix] = v < 0 ? 0u : (uint32_t)v << 5 | probe.pos;
    }
}

/* One symbol through the table, or bit by bit for long codes and near the end. */
static int32_t lut_decode(const uint16_t *count, const uint16_t *symbol, const uint32_t *lut,
                          bits *b) {
    uint32_t at = b->pos >> 3, hit;
    if (b->nbits - b->pos >= 24u) {
        uint32_t next = (uint32_t)b->p[at] << 16 | (uint32_t)b->p[at + 1] << 8 | b->p[at + 2];
        hit = lut[(next >> (24u - LUT_BITS - (b->pos & 7u))) & ((1u << LUT_BITS) - 1u)];
        if (hit) {
            b->pos += hit & 31u;
            return (int32_t)(hit >> 5);
        }
    }
    return huff_decode(count, symbol, b);
}
/* Symbol of stream i (0: values, 1: gaps) in decode_tensor. */
#define DECODE(i) \
    lut_decode(ws->t.h.count[i], ws->t.h.symbol + (i) * (KCZ_MAX_CODEBOOK + 1u), lut[i], st + (i))
#else
#define DECODE(i) huff_decode(ws->t.h.count[i], ws->t.h.symbol + (i) * (KCZ_MAX_CODEBOOK + 1u), st + (i))
#endif

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

/* ------------------------------------------------------------------ arithmetic coding */

/* Context slots (FORMAT.md, "Arithmetic-coded payload"): row flags, significance, the first
 * three index-tree nodes by neighbour classes, deeper nodes. */
#define A_ROW 0u
#define A_SIG 2u
#define A_TOP 6u
#define A_DEEP 29u /* + node, nodes 4..255 */

/* Bits needed for x (2 <= x <= 32): one instruction where the compiler has it. */
#if defined(__GNUC__)
#define BIT_LENGTH(x) (32u - (uint32_t)__builtin_clz(x))
#else
static uint32_t BIT_LENGTH(uint32_t x) {
    uint32_t n = 0;
    while (x >> n) n++;
    return n;
}
#endif

/* One bit from the binary range decoder with adaptive context ctx. Reading past the stream
 * feeds zero bytes and leaves pos at size + 1 (checked once at the end, not per bit). */
static uint32_t rc_bit(kcz_range *r, uint32_t ctx) {
    /* prob holds p ^ 0x8000, so that the all-zero state is p = 1/2 (one memset resets it). */
    uint32_t p = r->prob[ctx] ^ 0x8000u, bound = (r->range >> 16) * p, bit = r->code >= bound;
    uint32_t seen = r->seen[ctx], shift = BIT_LENGTH(seen + 2u); /* 2 to 6: seen <= 30 */
    if (bit) {
        r->code -= bound;
        r->range -= bound;
        p -= p >> shift;
    } else {
        r->range = bound;
        p += (65536u - p) >> shift;
    }
    r->prob[ctx] = (uint16_t)(p ^ 0x8000u);
    if (seen < 30u) r->seen[ctx] = (uint8_t)(seen + 1u);
    while (r->range < (1u << 24)) {
        r->code = r->code << 8 | (r->pos < r->size ? r->p[r->pos] : 0u);
        r->pos += r->pos <= r->size; /* stops at size + 1: read past the end */
        r->range <<= 8;
    }
    return bit;
}

/* Encoding 3 after the channel layout: k, row width, stride, codebooks, the stream. Element i
 * of row r, column j (i = r * width + j) has context classes left (column j - 1) and up
 * (column j - stride) of the same row: 0 zero, 1 top bit clear, 2 top bit set. */
static int decode_arithmetic(cursor *c, size_t n, uint32_t elem, uint32_t channels, uint32_t inner,
                             uint32_t tables, const uint8_t *group, kcz_workspace *ws) {
    const uint8_t *head = take(c, 12), *codebook, *size;
    kcz_range *r = &ws->t.a;
    uint32_t k, width, stride, depth = 0, dead = 0, left = 0, up, at = 0, j, node;
    size_t i;
    if (!head) return KCZ_E_PAYLOAD;
    k = rd32(head);
    width = rd32(head + 4);
    stride = rd32(head + 8);
    if (!k || k > 256u || !width || n % width || !stride || stride > 256u) return KCZ_E_PAYLOAD;
    if (k > KCZ_MAX_CODEBOOK) return KCZ_E_WORKSPACE;
    if (tables > (c->size - c->pos) / (k * elem)) return KCZ_E_PAYLOAD; /* no overflow */
    codebook = take(c, tables * k * elem);
    size = take(c, 4);
    if (!codebook || !size) return KCZ_E_PAYLOAD;
    r->p = take(c, rd32(size));
    r->size = rd32(size);
    if (!r->p || r->size < 4u || c->pos != c->size) return KCZ_E_PAYLOAD;
    r->code = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->range = 0xFFFFFFFFu;
    r->pos = 4;
    memset(r->prob, 0, sizeof r->prob + sizeof r->seen); /* adjacent in kcz_range */
    while ((1u << depth) < k) depth++;
    for (i = 0, j = width; i < n; i++, j++) {
        const uint8_t *value = NULL;
        if (j == width) { /* a new row: its all-zero flag, no neighbours yet */
            dead = rc_bit(r, A_ROW + dead);
            j = at = left = 0;
        }
        up = j >= stride ? r->ring[at] : 0u;
        if (!dead && rc_bit(r, A_SIG + (left > 0) + 2u * (up > 0))) {
            size_t table = i / inner % channels;
            uint32_t b;
            for (node = 1, b = 0; b < depth; b++)
                node = 2u * node + rc_bit(r, node < 4u ? A_TOP + 9u * (node - 1u) + 3u * left + up
                                                       : A_DEEP + node);
            node -= 1u << depth;
            if (node >= k) return KCZ_E_PAYLOAD;
            value = codebook + ((group ? group[table] : table) * k + node) * elem;
            for (b = 0; b < elem && !value[b]; b++) {
            }
            if (b == elem) return KCZ_E_PAYLOAD; /* a table's padding zero */
        }
        left = value ? 1u + (value[elem - 1u] >> 7) : 0u;
        r->ring[at] = (uint8_t)left;
        at = at + 1u == stride ? 0u : at + 1u;
#if KCZ_LUT_BITS > 0
        if (elem < KCZ_CHUNK - ws->out_used) { /* fits without filling the chunk: in place */
            if (value)
                memcpy(ws->out + ws->out_used, value, elem);
            else
                memset(ws->out + ws->out_used, 0, elem);
            ws->out_used += elem;
        } else
#endif
        if (put(ws, value, elem)) return KCZ_E_WRITE; /* NULL: a zero */
    }
    return r->pos != r->size ? KCZ_E_PAYLOAD : KCZ_OK;
}

/* One tensor: its payload decoded to length bytes of output. enc 2: codebooks of k slots shared
 * by groups of channels, element i in channel (i / inner) % channels, whose table is the
 * channel's byte in the group map (or the channel itself when there is a table per channel). */
static int decode_tensor(const uint8_t *payload, uint32_t size, size_t length, uint32_t elem,
                         uint32_t enc, kcz_workspace *ws) {
    cursor c = {payload, size, 0};
    const uint8_t *head = take(&c, enc >= 2 ? 12u : 0u), *codebook, *group = NULL;
    uint32_t k, gap_bits, max_len, entries, i, channels = 1, inner = 1, tables = 1;
    size_t n = length / elem, pos = 0;
    bits st[2] = {{NULL, 0, 0, 7}, {NULL, 0, 0, 7}}; /* the value and gap streams */
#if KCZ_LUT_BITS > 0
    uint32_t lut[2][1u << LUT_BITS];
#endif
    if (!head || (length & (elem - 1u))) return KCZ_E_PAYLOAD; /* elem: 1, 2, 4 or 8 */
    if (enc >= 2) {
        channels = rd32(head);
        inner = rd32(head + 4);
        tables = rd32(head + 8);
        if (!channels || !inner || channels > n || n % channels || (n / channels) % inner ||
            !tables || tables > channels || (tables < channels && tables > 256u))
            return KCZ_E_PAYLOAD;
        if (tables < channels) {
            group = take(&c, channels);
            if (!group) return KCZ_E_PAYLOAD;
            for (i = 0; i < channels; i++)
                if (group[i] >= tables) return KCZ_E_PAYLOAD;
        }
    }
    if (enc == 3) return decode_arithmetic(&c, n, elem, channels, inner, tables, group, ws);
    head = take(&c, 10);
    if (!head) return KCZ_E_PAYLOAD;
    k = rd32(head);
    gap_bits = head[4];
    max_len = head[5];
    entries = rd32(head + 6);
    if (gap_bits > KCZ_MAX_GAP_BITS || max_len < 1 || max_len > KCZ_MAX_CODE_LEN) return KCZ_E_PAYLOAD;
    if (k > KCZ_MAX_CODEBOOK) return KCZ_E_WORKSPACE;
    if (entries > n || (gap_bits == 0 && entries != n)) return KCZ_E_PAYLOAD;
    if (k && tables > (size - c.pos) / (k * elem)) return KCZ_E_PAYLOAD; /* no overflow */
    codebook = take(&c, tables * k * elem);
    if (!codebook) return KCZ_E_PAYLOAD;
    /* Each stream: code lengths, bit count, byte count, bytes (no gap stream if dense). */
    for (i = 0; i < 1u + (gap_bits != 0); i++) {
        uint32_t symbols = i ? 1u << gap_bits : k + 1u;
        const uint8_t *lengths = take(&c, symbols), *sizes = take(&c, 8);
        if (!lengths || !sizes) return KCZ_E_PAYLOAD;
        st[i].nbits = rd32(sizes);
        if ((st[i].nbits >> 3) + ((st[i].nbits & 7u) != 0) != rd32(sizes + 4)) return KCZ_E_HUFFMAN;
        st[i].p = take(&c, rd32(sizes + 4));
        if (!st[i].p) return KCZ_E_PAYLOAD;
        if (huff_build(ws->t.h.count[i], ws->t.h.symbol + i * (KCZ_MAX_CODEBOOK + 1u), lengths, symbols,
                       max_len))
            return KCZ_E_HUFFMAN;
#if KCZ_LUT_BITS > 0
        lut_build(lut[i], ws->t.h.count[i], ws->t.h.symbol + i * (KCZ_MAX_CODEBOOK + 1u));
#endif
    }
    if (c.pos != c.size) return KCZ_E_PAYLOAD;
    for (i = 0; i < entries; i++) {
        int32_t v = DECODE(0), g = 0;
        const uint8_t *value;
        if (v < 0) return KCZ_E_HUFFMAN;
        if (gap_bits) {
            g = DECODE(1);
            if (g < 0) return KCZ_E_HUFFMAN;
        }
        if ((size_t)g >= n - pos || ((uint32_t)v == k && !gap_bits)) return KCZ_E_PAYLOAD;
        pos += (size_t)g;
        /* The gap's zeros, then the value (symbol k: a filler zero). */
        if ((uint32_t)v == k) {
            value = NULL;
        } else {
            size_t table = pos / inner % channels;
            value = codebook + ((group ? group[table] : table) * k + (uint32_t)v) * elem;
        }
#if KCZ_LUT_BITS > 0
        if (((size_t)g + 1u) * elem < KCZ_CHUNK - ws->out_used) { /* fits: write in place */
            uint8_t *q = ws->out + ws->out_used;
            memset(q, 0, (size_t)g * elem);
            if (value)
                memcpy(q + (size_t)g * elem, value, elem);
            else
                memset(q + (size_t)g * elem, 0, elem);
            ws->out_used += ((uint32_t)g + 1u) * elem;
        } else
#endif
        if (put(ws, NULL, (size_t)g * elem) || put(ws, value, elem))
            return KCZ_E_WRITE;
        pos++;
    }
    if (st[0].pos != st[0].nbits || st[1].pos != st[1].nbits) return KCZ_E_HUFFMAN;
    return put(ws, NULL, (n - pos) * elem);
}

/* ------------------------------------------------------------------ DEFLATE skeleton */

#if KCZ_WINDOW_BITS > 0
#define WMASK ((1u << KCZ_WINDOW_BITS) - 1u)
enum { Z_HEADER, Z_STORED, Z_CODES };

/* n (at most 16) bits, least significant first, or -1 past the end of the stream. */
static int32_t zbits(kcz_inflate *z, uint32_t n) {
    int32_t v = 0;
    uint32_t i;
    if (n > z->in.nbits - z->in.pos) return -1;
    for (i = 0; i < n; i++, z->in.pos++) v |= ((z->in.p[z->in.pos >> 3] >> (z->in.pos & 7u)) & 1) << i;
    return v;
}

/* The codes of a fixed (RFC 1951, 3.2.6) or dynamic (3.2.7) block; 0, or -1 if malformed. */
static int32_t zcodes(kcz_inflate *z, int32_t type) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t len[288 + 32];
    int32_t nlen = 288, ndist = 30, i, sym, rep, v = 0;
    if (type == 1) {
        for (i = 0; i < 288; i++) len[i] = (uint8_t)(i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8);
        for (; i < 288 + 30; i++) len[i] = 5;
    } else {
        int32_t ncode;
        nlen = zbits(z, 5) + 257;
        ndist = zbits(z, 5) + 1;
        ncode = zbits(z, 4) + 4;
        if (nlen > 286 || ndist > 30 || ncode < 4) return -1;
        memset(len, 0, 19);
        for (i = 0; i < ncode; i++) {
            sym = zbits(z, 3);
            if (sym < 0) return -1;
            len[order[i]] = (uint8_t)sym;
        }
        if (huff_build(z->lcount, z->lsym, len, 19, 7)) return -1; /* the code-length code */
        for (i = 0; i < nlen + ndist; i += rep) {
            sym = huff_decode(z->lcount, z->lsym, &z->in);
            rep = 1;
            if (sym < 0) return -1;
            if (sym < 16) {
                v = sym;
            } else if (sym == 16) {
                if (!i) return -1;
                v = len[i - 1];
                rep = 3 + zbits(z, 2);
            } else {
                v = 0;
                rep = sym == 17 ? 3 + zbits(z, 3) : 11 + zbits(z, 7);
            }
            if (rep < 1 || rep > nlen + ndist - i) return -1;
            memset(len + i, v, (size_t)rep);
        }
        if (!len[256]) return -1; /* no end-of-block code */
    }
    if (huff_build(z->lcount, z->lsym, len, (uint32_t)nlen, 15) ||
        huff_build(z->dcount, z->dsym, len + nlen, (uint32_t)ndist, 15))
        return -1;
    return 0;
}

/* The skeleton's next byte, -1 for a malformed stream, -2 after its final block. */
static int32_t zbyte(kcz_inflate *z) {
    int32_t v, sym, extra;
    for (;;) {
        if (z->copy) { /* a match in progress */
            z->copy--;
            v = z->window[(z->wpos - z->dist) & WMASK];
            break;
        }
        if (z->mode == Z_STORED && z->stored) {
            z->stored--;
            v = zbits(z, 8);
            if (v < 0) return -1;
            break;
        }
        if (z->mode == Z_CODES) {
            sym = huff_decode(z->lcount, z->lsym, &z->in);
            if (sym < 0 || sym > 285) return -1;
            if (sym < 256) {
                v = sym;
                break;
            }
            if (sym == 256) {
                z->mode = Z_HEADER;
                continue;
            }
            /* Length 3..258 (codes 257..285), then a distance 1..32768 (codes 0..29). */
            sym -= 257;
            extra = sym < 8 || sym == 28 ? 0 : sym / 4 - 1;
            z->copy = sym < 8 ? (uint32_t)sym + 3u : sym == 28 ? 258u
                                : ((4u + (uint32_t)sym % 4u) << extra) + 3u + (uint32_t)zbits(z, (uint32_t)extra);
            sym = huff_decode(z->dcount, z->dsym, &z->in);
            if (sym < 0 || sym > 29) return -1;
            extra = sym < 4 ? 0 : sym / 2 - 1;
            v = zbits(z, (uint32_t)extra);
            z->dist = sym < 4 ? (uint32_t)sym + 1u : ((2u + (uint32_t)sym % 2u) << extra) + 1u + (uint32_t)v;
            if (v < 0 || z->copy > 258u || z->dist > z->filled || z->dist > z->wsize) return -1;
            continue;
        }
        if (z->last) return -2;
        z->last = (uint32_t)zbits(z, 1);
        sym = zbits(z, 2);
        if (sym == 0) { /* stored: from the next byte boundary, LEN and its complement */
            z->in.pos = (z->in.pos + 7u) & ~7u;
            z->stored = (uint32_t)zbits(z, 16);
            if ((int32_t)z->stored < 0 || (uint32_t)zbits(z, 16) != (~z->stored & 0xFFFFu)) return -1;
            z->mode = Z_STORED;
        } else if (sym == 1 || sym == 2) {
            if (zcodes(z, sym)) return -1;
            z->mode = Z_CODES;
        } else {
            return -1;
        }
    }
    z->window[z->wpos++ & WMASK] = (uint8_t)v;
    if (z->filled < z->wsize) z->filled++;
    return v;
}

/* The next n bytes of the skeleton to the output. */
static int put_skeleton(kcz_workspace *ws, const uint8_t *raw, size_t n) {
    uint8_t b;
    if (raw) return put(ws, raw, n);
    while (n--) {
        int32_t v = zbyte(&ws->z);
        if (v < 0) return KCZ_E_DEFLATE;
        b = (uint8_t)v;
        if (put(ws, &b, 1)) return KCZ_E_WRITE;
    }
    return KCZ_OK;
}
#define SKELETON(p, n) put_skeleton(ws, deflated ? NULL : (p), (n))
#else
#define SKELETON(p, n) put(ws, (p), (n))
#endif

/* ------------------------------------------------------------------ scaled copies (v5) */

#if KCZ_SCALED_COPY
/* The IEEE 754 binary32 product of two normal numbers rounded to nearest (ties to even), or 0
 * when the exact product is below 2^-126 in magnitude or the rounded one is not finite. In
 * integers, so that no FPU, soft-float library, rounding mode or flush-to-zero setting can
 * change a byte of the model. */
static uint32_t fmul_normal(uint32_t a, uint32_t b) {
    uint32_t ea = a >> 23 & 255u, eb = b >> 23 & 255u, hi, lo, r;
    uint64_t m;
    int32_t e;
    if (!ea || ea == 255u || !eb || eb == 255u) return 0;
    m = (uint64_t)(a << 8 | 0x80000000u) * (b << 8 | 0x80000000u); /* [2^62, 2^64) */
    hi = (uint32_t)(m >> 32);
    lo = (uint32_t)m;
    e = (int32_t)(ea + eb) - 126;
    if (!(hi >> 31)) { /* normalise: the top bit set */
        hi = hi << 1 | lo >> 31;
        lo <<= 1;
        e--;
    }
    if (e <= 0 || e >= 255) return 0;
    /* 24 significant bits; round up above half, or at half to even. Adding the significand
     * to the exponent field carries a rounding to 2^24 into the exponent. */
    r = ((uint32_t)e << 23) + (hi >> 8) - 0x800000u + ((hi & 0x80u) && ((hi & 0x17Fu) || lo));
    return r >> 23 == 255u ? 0 : ((a ^ b) & 0x80000000u) | r;
}

/* A scaled copy: the length bytes that start distance bytes back in the skeleton (the raw
 * skeleton, or the DEFLATE window), each little-endian binary32 times the factor; a zero
 * stays zero. skel_pos: the skeleton bytes written so far. */
static int scaled_copy(const uint8_t *payload, uint32_t size, size_t length, uint32_t elem,
                       const uint8_t *raw, size_t skel_pos, kcz_workspace *ws) {
    uint32_t distance, factor, v, k;
    uint8_t four[4];
    size_t i;
    if (size != 8u || elem != 4u || (length & 3u)) return KCZ_E_PAYLOAD;
    distance = rd32(payload);
    factor = rd32(payload + 4);
    if (distance < length || distance > skel_pos) return KCZ_E_PAYLOAD;
#if KCZ_WINDOW_BITS > 0
    if (!raw && distance > ws->z.wsize) return KCZ_E_PAYLOAD; /* beyond the file's window */
#endif
    for (i = skel_pos - distance; length; length -= 4u) {
        for (v = 0, k = 0; k < 4u; k++, i++)
#if KCZ_WINDOW_BITS > 0
            v |= (uint32_t)(raw ? raw[i] : ws->z.window[i & WMASK]) << 8u * k;
#else
            v |= (uint32_t)raw[i] << 8u * k;
#endif
        if (v && !(v = fmul_normal(v, factor))) return KCZ_E_PAYLOAD;
        for (k = 0; k < 4u; k++) four[k] = (uint8_t)(v >> 8u * k);
        if (put(ws, four, 4)) return KCZ_E_WRITE;
    }
    return KCZ_OK;
}
#define MAX_VERSION 5u
#else
#define MAX_VERSION 4u
#endif

/* ------------------------------------------------------------------ whole file */

int kcz_decode(const uint8_t *skeleton, size_t skeleton_size, const uint8_t *side,
               size_t side_size, kcz_write_fn write, void *ctx, kcz_workspace *ws) {
    size_t model_size, table_end, prev_end = 0, cut = 0, payload_at, model_pos = 0, skel_pos = 0,
           count, i, stored_skeleton = skeleton_size;
    uint32_t version, flags, deflated;
    const uint8_t *e;
    int rc;
    if (side_size < HEADER_SIZE + 8u) return KCZ_E_TRUNCATED; /* header, its CRC, table CRC */
    if (rd32(side + H_MAGIC) != 0x315A434Bu) return KCZ_E_MAGIC; /* "KCZ1" */
    version = rd16(side + H_VERSION);
    if (version < 2 || version > MAX_VERSION) return KCZ_E_VERSION;
    if (crc_bad(side, HEADER_SIZE)) return KCZ_E_CRC;
    flags = rd16(side + H_FLAGS);
    deflated = flags != 0;
    if (flags && (version < 3 || (flags & 15u) != 1u || (flags >> 4) < 9u || (flags >> 4) > 15u))
        return KCZ_E_VERSION;
    if ((flags >> 4) > KCZ_WINDOW_BITS) return KCZ_E_WORKSPACE; /* window too large for us */
    model_size = rdsz(side + H_MODEL_SIZE);
    if (model_size == (size_t)-1) return KCZ_E_TABLE;
    count = rd32(side + H_COUNT);
    if (count > (side_size - HEADER_SIZE - 8u) / ENTRY_SIZE) return KCZ_E_TRUNCATED;
    table_end = HEADER_SIZE + 4u + count * ENTRY_SIZE;
    if (crc_bad(side + HEADER_SIZE + 4u, count * ENTRY_SIZE)) return KCZ_E_CRC;
    if (deflated) skeleton_size = rdsz(side + H_SKELETON_SIZE); /* its size once decoded */
    if (rdsz(side + H_SKELETON_SIZE) != skeleton_size || (stored_skeleton >> 29) ||
        SKELETON_CRC_BAD(skeleton, stored_skeleton, rd32(side + H_SKELETON_CRC)))
        return KCZ_E_SKELETON;
    /* First pass: every entry is consistent and every payload's CRC matches before anything is
     * written, so corrupted input never reaches the callback. */
    payload_at = table_end + 4u;
    for (e = side + HEADER_SIZE + 4u, i = 0; i < count; i++, e += ENTRY_SIZE) {
        size_t off = rdsz(e + E_OFFSET), len = rdsz(e + E_LENGTH);
        uint32_t psize = rd32(e + E_PAYLOAD_SIZE), elem = e[E_ELEM_SIZE];
        if (e[E_ENCODING] < 1 || e[E_ENCODING] > version - 1u ||
            (elem != 1 && elem != 2 && elem != 4 && elem != 8) || rd16(e + E_RESERVED))
            return KCZ_E_TABLE;
        if (off < prev_end || len > model_size || off > model_size - len) return KCZ_E_TABLE;
        if (rdsz(e + E_PAYLOAD_OFFSET) != payload_at || side_size - payload_at < 4u ||
            psize > side_size - payload_at - 4u)
            return KCZ_E_TABLE;
        if (crc_bad(side + payload_at, psize)) return KCZ_E_CRC;
        prev_end = off + len;
        cut += len;
        payload_at += psize + 4u;
    }
    if (payload_at != side_size || model_size - cut != skeleton_size) return KCZ_E_TABLE;
    /* Second pass: stream the model out, skeleton pieces between the decoded tensors. */
    ws->write = write;
    ws->ctx = ctx;
    ws->out_used = 0;
#if KCZ_WINDOW_BITS > 0
    memset(&ws->z, 0, sizeof ws->z - sizeof ws->z.window);
    ws->z.in.p = skeleton;
    ws->z.in.nbits = (uint32_t)stored_skeleton * 8u;
    ws->z.wsize = 1u << (flags >> 4);
#endif
    for (e = side + HEADER_SIZE + 4u, i = 0; i < count; i++, e += ENTRY_SIZE) {
        size_t keep = rdsz(e + E_OFFSET) - model_pos;
        if ((rc = SKELETON(skeleton + skel_pos, keep))) return rc;
        skel_pos += keep;
#if KCZ_SCALED_COPY
        if (e[E_ENCODING] == 4u)
            rc = scaled_copy(side + rdsz(e + E_PAYLOAD_OFFSET), rd32(e + E_PAYLOAD_SIZE),
                             rdsz(e + E_LENGTH), e[E_ELEM_SIZE], deflated ? NULL : skeleton,
                             skel_pos, ws);
        else
#endif
        rc = decode_tensor(side + rdsz(e + E_PAYLOAD_OFFSET), rd32(e + E_PAYLOAD_SIZE),
                           rdsz(e + E_LENGTH), e[E_ELEM_SIZE], e[E_ENCODING], ws);
        if (rc) return rc;
        model_pos = rdsz(e + E_OFFSET) + rdsz(e + E_LENGTH);
    }
    if ((rc = SKELETON(skeleton + skel_pos, skeleton_size - skel_pos))) return rc;
#if KCZ_WINDOW_BITS > 0
    /* The DEFLATE stream ends right here: its final block, then at most 7 padding bits. */
    if (deflated && (zbyte(&ws->z) != -2 || (ws->z.in.nbits - ws->z.in.pos) > 7u))
        return KCZ_E_DEFLATE;
#endif
    return ws->out_used && write(ctx, ws->out, ws->out_used) ? KCZ_E_WRITE : KCZ_OK;
}

const char *kcz_error_name(int code) {
    static const char *const names[] = {
        "ok", "truncated", "bad magic", "unknown version", "CRC mismatch", "bad entry table",
        "skeleton size or CRC mismatch", "bad tensor payload", "bad Huffman stream",
        "codebook or window too large for the workspace", "write callback failed",
        "bad DEFLATE skeleton"};
    return code >= 0 && code <= KCZ_E_DEFLATE ? names[code] : "unknown error";
}
