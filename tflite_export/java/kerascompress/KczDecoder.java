/*
 * KczDecoder: rebuilds a .tflite from its skeleton and keras-compress .kcz sidecar (format v2
 * to v5, tflite_export/FORMAT.md), byte for byte, on Android (API 21+) or any JVM. One class, java.*
 * only. The result is a direct ByteBuffer in native order, ready for the TFLite/LiteRT
 * Interpreter:
 *
 *   ByteBuffer model = KczDecoder.decodeToBuffer(skeletonBytes, sidecarBytes);
 *   Interpreter interpreter = new Interpreter(model);
 *
 * Any malformed input raises an IOException naming the section and byte offset; a rebuilt
 * model whose skeleton CRC-32 or SHA-256 differs from the recorded one is never returned.
 * Copy this file into an app's sources under kerascompress/ (its package) and import
 * kerascompress.KczDecoder.
 */
package kerascompress;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

public final class KczDecoder {
    // Field offsets, named as in FORMAT.md ("Layout" and "Entry").
    private static final int H_VERSION = 4;
    private static final int H_FLAGS = 6;
    private static final int H_MODEL_SIZE = 8;
    private static final int H_SKELETON_SIZE = 16;
    private static final int H_SKELETON_CRC = 56;
    private static final int H_COUNT = 60;
    private static final int HEADER = 68; // header fields and their CRC-32; the table follows
    private static final int E_OFFSET = 0;
    private static final int E_LENGTH = 8;
    private static final int E_PAYLOAD_OFFSET = 16;
    private static final int E_PAYLOAD_SIZE = 24;
    private static final int E_ENCODING = 28;
    private static final int E_ELEM_SIZE = 29;
    private static final int E_RESERVED = 30;
    private static final int ENTRY = 32;
    private static final int MAX_CODEBOOK = 4096;
    private static final int MAX_GAP_BITS = 8;
    private static final int MAX_LEN = 16;

    private KczDecoder() {}

    /** Decodes into a direct, native-order ByteBuffer for the TFLite Interpreter. */
    public static ByteBuffer decodeToBuffer(byte[] skeleton, byte[] sidecar) throws IOException {
        byte[] model = decode(skeleton, sidecar);
        ByteBuffer out = ByteBuffer.allocateDirect(model.length).order(ByteOrder.nativeOrder());
        out.put(model);
        out.rewind();
        return out;
    }

    /** Decodes into a byte array holding the original .tflite. */
    public static byte[] decode(byte[] skeleton, byte[] side) throws IOException {
        if (side.length < HEADER + 4) fail("header", 0, "file has " + side.length + " bytes");
        ByteBuffer b = ByteBuffer.wrap(side).order(ByteOrder.LITTLE_ENDIAN);
        if (side[0] != 'K' || side[1] != 'C' || side[2] != 'Z' || side[3] != '1')
            fail("header", 0, "bad magic");
        int version = b.getShort(H_VERSION), flags = b.getShort(H_FLAGS) & 0xFFFF;
        if (version < 2 || version > 5) fail("header", H_VERSION, "unknown version " + version);
        checkCrc(side, 0, HEADER - 4, "header");
        if (flags != 0 && (version < 3 || (flags & 15) != 1 || (flags >> 4) < 9 || (flags >> 4) > 15))
            fail("header", H_FLAGS, "unknown flags " + flags);
        long modelSize = b.getLong(H_MODEL_SIZE), skeletonSize = b.getLong(H_SKELETON_SIZE);
        long count = b.getInt(H_COUNT) & 0xFFFFFFFFL;
        long tableEnd = HEADER + count * ENTRY;
        if (tableEnd + 4 > side.length) fail("entry table", HEADER, "runs past the end of the file");
        checkCrc(side, HEADER, (int) (tableEnd - HEADER), "entry table");
        CRC32 skeletonCrc = new CRC32();
        skeletonCrc.update(skeleton, 0, skeleton.length);
        if (skeletonCrc.getValue() != (b.getInt(H_SKELETON_CRC) & 0xFFFFFFFFL))
            fail("skeleton", 0, "CRC-32 differs from the sidecar's (wrong skeleton?)");
        if (modelSize > Integer.MAX_VALUE - 8 || skeletonSize < 0 || skeletonSize > modelSize)
            fail("header", H_MODEL_SIZE, "model too large for one array");
        if (flags != 0) skeleton = inflate(skeleton, (int) skeletonSize);
        if (skeleton.length != skeletonSize)
            fail("skeleton", 0, skeleton.length + " bytes, expected " + skeletonSize);
        long previousEnd = 0, cut = 0, payloadAt = tableEnd + 4;
        for (int i = 0; i < count; i++) {
            int e = HEADER + i * ENTRY;
            long off = b.getLong(e + E_OFFSET), len = b.getLong(e + E_LENGTH);
            long poff = b.getLong(e + E_PAYLOAD_OFFSET);
            long psize = b.getInt(e + E_PAYLOAD_SIZE) & 0xFFFFFFFFL;
            int elem = side[e + E_ELEM_SIZE];
            int encoding = side[e + E_ENCODING];
            if (encoding < 1 || encoding > version - 1 || (elem != 1 && elem != 2 && elem != 4 && elem != 8)
                    || b.getShort(e + E_RESERVED) != 0) fail("entry table", e, "unknown encoding");
            if (off < previousEnd || len < 0 || len > modelSize || off > modelSize - len)
                fail("entry table", e, "tensor range overlaps or exceeds the model");
            if (poff != payloadAt || psize + 4 > side.length - poff)
                fail("entry table", e, "payload not at byte offset " + payloadAt);
            previousEnd = off + len;
            cut += len;
            payloadAt = poff + psize + 4;
        }
        if (payloadAt != side.length) fail("payloads", payloadAt, "unexpected trailing bytes");
        if (modelSize - cut != skeletonSize) fail("header", H_SKELETON_SIZE, "sizes disagree");
        byte[] model = new byte[(int) modelSize];
        int skelPos = 0, modelPos = 0;
        for (int i = 0; i < count; i++) {
            int e = HEADER + i * ENTRY;
            int off = (int) b.getLong(e + E_OFFSET), len = (int) b.getLong(e + E_LENGTH);
            int poff = (int) b.getLong(e + E_PAYLOAD_OFFSET), psize = b.getInt(e + E_PAYLOAD_SIZE);
            int keep = off - modelPos;
            System.arraycopy(skeleton, skelPos, model, modelPos, keep);
            skelPos += keep;
            checkCrc(side, poff, psize, "tensor payload " + i);
            if (side[e + E_ENCODING] == 4) {
                int reach = flags == 0 ? skelPos : Math.min(skelPos, 1 << (flags >> 4));
                scaledCopy(side, poff, psize, skeleton, skelPos, reach, model, off, len,
                        side[e + E_ELEM_SIZE], i);
            } else {
                decodeTensor(side, poff, psize, model, off, len, side[e + E_ELEM_SIZE],
                        side[e + E_ENCODING], i);
            }
            modelPos = off + len;
        }
        System.arraycopy(skeleton, skelPos, model, modelPos, skeleton.length - skelPos);
        byte[] digest;
        try {
            digest = MessageDigest.getInstance("SHA-256").digest(model);
        } catch (NoSuchAlgorithmException err) {
            throw new IOException("SHA-256 unavailable", err);
        }
        if (!Arrays.equals(digest, Arrays.copyOfRange(side, 24, 56)))
            fail("model", 0, "SHA-256 of the rebuilt .tflite differs (wrong skeleton?)");
        return model;
    }

    /**
     * A scaled copy (encoding 4, v5): len bytes starting distance bytes before skelPos in the
     * skeleton (within reach: the bytes before it, and the DEFLATE window), each little-endian
     * float times the factor; zero stays zero. The product must be defined as FORMAT.md says
     * (normal factor and elements, exact product at least 2^-126, finite once rounded).
     */
    private static void scaledCopy(byte[] side, int start, int size, byte[] skeleton, int skelPos,
                                   int reach, byte[] out, int outOff, int len, int elem, int index)
            throws IOException {
        String section = "tensor payload " + index;
        if (size != 8 || elem != 4 || len % 4 != 0)
            fail(section, start, "a scaled copy needs 4-byte elements and an 8-byte payload");
        ByteBuffer b = ByteBuffer.wrap(side).order(ByteOrder.LITTLE_ENDIAN);
        long distance = b.getInt(start) & 0xFFFFFFFFL;
        int factor = b.getInt(start + 4);
        if (distance < len || distance > reach)
            fail(section, start, "distance " + distance + " outside " + len + ".." + reach);
        ByteBuffer src = ByteBuffer.wrap(skeleton).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer dst = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        int from = skelPos - (int) distance;
        for (int i = 0; i < len; i += 4) {
            int v = src.getInt(from + i);
            if (v != 0) {
                v = product(v, factor);
                if (v == 0) fail(section, start, "a product or its operands are not normal");
            }
            dst.putInt(outOff + i, v);
        }
    }

    /** The binary32 product of two normal numbers (bit patterns), or 0 where undefined. */
    private static int product(int a, int b) {
        int ea = (a >>> 23) & 255, eb = (b >>> 23) & 255;
        if (ea == 0 || ea == 255 || eb == 0 || eb == 255) return 0;
        // Exact in double (two 24-bit significands); the cast rounds to nearest, ties to even.
        double exact = (double) Float.intBitsToFloat(a) * Float.intBitsToFloat(b);
        float rounded = (float) exact;
        if (Math.abs(exact) < 0x1p-126 || Float.isInfinite(rounded)) return 0;
        return Float.floatToRawIntBits(rounded);
    }

    /** The skeleton from its raw DEFLATE stream, which must end exactly with the file. */
    private static byte[] inflate(byte[] coded, int size) throws IOException {
        Inflater inflater = new Inflater(true);
        byte[] out = new byte[size + 1];
        int n;
        try {
            inflater.setInput(coded);
            n = inflater.inflate(out);
            if (!inflater.finished() || inflater.getRemaining() != 0)
                fail("skeleton", coded.length - inflater.getRemaining(),
                        "DEFLATE stream does not end exactly at the end of the file");
        } catch (DataFormatException err) {
            throw new IOException("skeleton: bad DEFLATE stream: " + err.getMessage(), err);
        } finally {
            inflater.end();
        }
        return Arrays.copyOf(out, n);
    }

    private static void decodeTensor(byte[] side, int start, int size, byte[] out, int outOff,
                                     int length, int elem, int encoding, int index)
            throws IOException {
        String section = "tensor payload " + index;
        ByteBuffer b = ByteBuffer.wrap(side, start, size).order(ByteOrder.LITTLE_ENDIAN);
        int end = start + size, head = encoding >= 2 ? 12 : 0;
        if (size < 10 + head || length % elem != 0) fail(section, start, "bad tensor header");
        int n = length / elem;
        long channels = 1, inner = Math.max(n, 1), tables = 1;
        int groups = -1; // offset of the channel -> table map, if there is one
        if (encoding >= 2) {
            channels = b.getInt(start) & 0xFFFFFFFFL;
            inner = b.getInt(start + 4) & 0xFFFFFFFFL;
            tables = b.getInt(start + 8) & 0xFFFFFFFFL;
            if (channels < 1 || inner < 1 || channels > n || n % channels != 0
                    || (n / channels) % inner != 0 || tables < 1 || tables > channels
                    || (tables < channels && tables > 256))
                fail(section, start, "bad channel layout");
            if (tables < channels) {
                groups = start + 12;
                need(groups, (int) channels, end, section);
                for (int c = 0; c < channels; c++)
                    if ((side[groups + c] & 0xFF) >= tables)
                        fail(section, groups + c, "a channel names a missing table");
                head += (int) channels;
            }
        }
        start += head;
        if (encoding == 3) {
            decodeArithmetic(side, b, start, end, out, outOff, n, elem, channels, inner, tables,
                    groups, section);
            return;
        }
        if (10 > end - start) fail(section, start, "bad tensor header");
        long k = b.getInt(start) & 0xFFFFFFFFL;
        int gapBits = side[start + 4] & 0xFF, maxLen = side[start + 5] & 0xFF;
        long entries = b.getInt(start + 6) & 0xFFFFFFFFL;
        if (k > MAX_CODEBOOK || gapBits > MAX_GAP_BITS || maxLen < 1 || maxLen > MAX_LEN)
            fail(section, start, "bad tensor header");
        if (entries > n || (gapBits == 0 && entries != n)) fail(section, start, "bad entry count");
        int p = start + 10;
        int codebook = p;
        p = need(p, (int) Math.min(tables * k * elem, Integer.MAX_VALUE), end, section);
        int valueLengths = p;
        p = need(p, (int) k + 1, end, section);
        int[] valueStream = stream(b, p, end, section);
        p = valueStream[2];
        int[] gapStream = null;
        int gapLengths = 0;
        if (gapBits > 0) {
            gapLengths = p;
            p = need(p, 1 << gapBits, end, section);
            gapStream = stream(b, p, end, section);
            p = gapStream[2];
        }
        if (p != end) fail(section, p, "unexpected bytes at the end");
        int[][] values = build(side, valueLengths, (int) k + 1, maxLen, section);
        int[][] gaps = gapBits > 0 ? build(side, gapLengths, 1 << gapBits, maxLen, section) : null;
        int[] vPos = {valueStream[0] * 8}, gPos = gapBits > 0 ? new int[] {gapStream[0] * 8} : null;
        long vEnd = valueStream[0] * 8L + (valueStream[1] & 0xFFFFFFFFL);
        long gEnd = gapBits > 0 ? gapStream[0] * 8L + (gapStream[1] & 0xFFFFFFFFL) : 0;
        long pos = 0;
        for (long i = 0; i < entries; i++) {
            int v = symbol(side, values, vPos, vEnd, section);
            int g = gapBits > 0 ? symbol(side, gaps, gPos, gEnd, section) : 0;
            if (pos + g >= n || (v == k && gapBits == 0)) fail(section, start, "entry out of range");
            pos += g;
            if (v < k) {
                long channel = pos / inner % channels;
                long table = groups < 0 ? channel : side[groups + (int) channel] & 0xFF;
                long slot = table * k + v;
                System.arraycopy(side, codebook + (int) slot * elem, out, outOff + (int) pos * elem,
                        elem);
            }
            pos++;
        }
        if (vPos[0] != vEnd || (gapBits > 0 && gPos[0] != gEnd))
            fail(section, start, "Huffman stream does not end where declared");
        // Positions not written stay zero: the array was zero-initialised.
    }

    // Context slots of the arithmetic coder (FORMAT.md, "Arithmetic-coded payload").
    private static final int A_ROW = 0, A_SIG = 2, A_TOP = 6, A_DEEP = 29, A_CONTEXTS = 285;

    /** Encoding 3 after the channel layout: k, row width, stride, codebooks, the stream. */
    private static void decodeArithmetic(byte[] side, ByteBuffer b, int start, int end,
                                         byte[] out, int outOff, int n, int elem, long channels,
                                         long inner, long tables, int groups, String section)
            throws IOException {
        need(start, 12, end, section);
        long k = b.getInt(start) & 0xFFFFFFFFL, width = b.getInt(start + 4) & 0xFFFFFFFFL;
        long stride = b.getInt(start + 8) & 0xFFFFFFFFL;
        if (k < 1 || k > 256 || width < 1 || n % width != 0)
            fail(section, start, "bad arithmetic header");
        if (stride < 1 || stride > 256) fail(section, start + 8, "stride out of range");
        int codebook = start + 12;
        int p = need(codebook, (int) Math.min(tables * k * elem, Integer.MAX_VALUE), end, section);
        need(p, 4, end, section);
        long streamSize = b.getInt(p) & 0xFFFFFFFFL;
        int stream = p + 4;
        if (streamSize < 4 || streamSize != end - stream)
            fail(section, p, "stream size does not match the payload");
        Range r = new Range(side, stream, end);
        int depth = 0;
        while ((1 << depth) < k) depth++;
        int[] ring = new int[(int) stride];
        int dead = 0;
        for (long row = 0; row < n / width; row++) {
            dead = r.bit(A_ROW + dead);
            if (dead == 1) continue; // zeros: the array was zero-initialised
            int left = 0, at = 0;
            for (int j = 0; j < width; j++) {
                int up = j >= stride ? ring[at] : 0, cls = 0;
                if (r.bit(A_SIG + (left > 0 ? 1 : 0) + (up > 0 ? 2 : 0)) == 1) {
                    long i = row * width + j, channel = i / inner % channels;
                    long table = groups < 0 ? channel : side[groups + (int) channel] & 0xFF;
                    int node = 1;
                    for (int d = 0; d < depth; d++)
                        node = 2 * node + r.bit(node < 4 ? A_TOP + 9 * (node - 1) + 3 * left + up
                                : A_DEEP + node);
                    node -= 1 << depth;
                    if (node >= k) fail(section, start, "index beyond the codebook at element " + i);
                    int value = codebook + (int) (table * k + node) * elem;
                    boolean zero = true;
                    for (int e = 0; e < elem; e++) zero &= side[value + e] == 0;
                    if (zero) fail(section, start, "a table's padding zero named at element " + i);
                    System.arraycopy(side, value, out, outOff + (int) i * elem, elem);
                    cls = 1 + ((side[value + elem - 1] >> 7) & 1);
                }
                ring[at] = cls;
                left = cls;
                at = at + 1 == stride ? 0 : at + 1;
            }
        }
        if (r.pastEnd || r.pos != end) fail(section, stream, "arithmetic stream does not end where declared");
    }

    /** Binary range decoder with adaptive contexts (the C decoder's rc_bit). */
    private static final class Range {
        final byte[] data;
        final int end;
        int pos;
        long code, range = 0xFFFFFFFFL;
        boolean pastEnd;
        final int[] prob = new int[A_CONTEXTS], seen = new int[A_CONTEXTS];

        Range(byte[] data, int start, int end) {
            this.data = data;
            this.end = end;
            for (int i = 0; i < 4; i++) code = code << 8 | (data[start + i] & 0xFF);
            pos = start + 4;
            Arrays.fill(prob, 32768);
        }

        int bit(int ctx) {
            long p = prob[ctx], bound = (range >>> 16) * p;
            int bit = code >= bound ? 1 : 0;
            int shift = Math.min(32 - Integer.numberOfLeadingZeros(seen[ctx] + 2), 6);
            if (bit == 1) {
                code -= bound;
                range -= bound;
                p -= p >> shift;
            } else {
                range = bound;
                p += (65536 - p) >> shift;
            }
            prob[ctx] = (int) p;
            if (seen[ctx] < 30) seen[ctx]++;
            while (range < (1L << 24)) {
                int next = 0;
                if (pos < end) next = data[pos] & 0xFF;
                else pastEnd = true;
                pos++;
                code = (code << 8 | next) & 0xFFFFFFFFL;
                range = (range << 8) & 0xFFFFFFFFL;
            }
            return bit;
        }
    }

    /** [first byte, bit count, position after] of a stream; checks its declared sizes. */
    private static int[] stream(ByteBuffer b, int p, int end, String section) throws IOException {
        need(p, 8, end, section);
        long bits = b.getInt(p) & 0xFFFFFFFFL, bytes = b.getInt(p + 4) & 0xFFFFFFFFL;
        if ((bits + 7) / 8 != bytes) fail(section, p, "stream size mismatch");
        int after = need(p + 8, (int) Math.min(bytes, Integer.MAX_VALUE), end, section);
        return new int[] {p + 8, (int) bits, after};
    }

    private static int need(int p, int n, int end, String section) throws IOException {
        if (n < 0 || n > end - p) fail(section, p, "needs " + n + " bytes");
        return p + n;
    }

    /** Canonical Huffman tables: {counts per length, symbols in code order}. */
    private static int[][] build(byte[] side, int at, int n, int maxLen, String section)
            throws IOException {
        int[] count = new int[MAX_LEN + 1], offs = new int[MAX_LEN + 2], symbols = new int[n];
        for (int i = 0; i < n; i++) {
            int len = side[at + i] & 0xFF;
            if (len > maxLen) fail(section, at + i, "code length exceeds the limit");
            count[len]++;
        }
        count[0] = 0;
        long left = 1;
        for (int len = 1; len <= MAX_LEN; len++) {
            left = left * 2 - count[len];
            if (left < 0) fail(section, at, "code lengths are not a prefix code");
        }
        for (int len = 1; len <= MAX_LEN; len++) offs[len + 1] = offs[len] + count[len];
        for (int i = 0; i < n; i++) {
            int len = side[at + i] & 0xFF;
            if (len != 0) symbols[offs[len]++] = i;
        }
        return new int[][] {count, symbols};
    }

    private static int symbol(byte[] side, int[][] table, int[] bitPos, long end, String section)
            throws IOException {
        int code = 0, first = 0, index = 0;
        for (int len = 1; len <= MAX_LEN; len++) {
            if (bitPos[0] >= end) fail(section, bitPos[0] >> 3, "Huffman stream ends early");
            int bit = (side[bitPos[0] >> 3] >> (7 - (bitPos[0] & 7))) & 1;
            bitPos[0]++;
            code |= bit;
            int c = table[0][len];
            if (code - c < first) return table[1][index + (code - first)];
            index += c;
            first = (first + c) << 1;
            code <<= 1;
        }
        fail(section, bitPos[0] >> 3, "invalid Huffman code");
        return -1;
    }

    private static void checkCrc(byte[] data, int start, int size, String section)
            throws IOException {
        CRC32 crc = new CRC32();
        crc.update(data, start, size);
        long stored = ByteBuffer.wrap(data, start + size, 4).order(ByteOrder.LITTLE_ENDIAN)
                .getInt(start + size) & 0xFFFFFFFFL;
        if (crc.getValue() != stored) fail(section, start + size, "CRC-32 mismatch");
    }

    private static void fail(String section, long offset, String what) throws IOException {
        throw new IOException(section + ": " + what + " at byte offset " + offset);
    }

    private static byte[] readAll(String path) throws IOException {
        InputStream in = new FileInputStream(path);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[65536];
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
            return out.toByteArray();
        } finally {
            in.close();
        }
    }

    /**
     * java kerascompress.KczDecoder SKELETON SIDECAR OUT: exit 0, or 2 with the error on stderr
     * (64 if OUT is an input, 74 if it cannot be written).
     */
    public static void main(String[] args) throws IOException {
        if (args.length != 3) {
            System.err.println("usage: java kerascompress.KczDecoder SKELETON SIDECAR OUT");
            System.exit(64);
        }
        byte[] model;
        try {
            model = decode(readAll(args[0]), readAll(args[1]));
        } catch (IOException err) {
            System.err.println("error: " + err.getMessage());
            System.exit(2);
            return;
        }
        File target = new File(args[2]);
        for (int i = 0; i < 2; i++) {
            if (target.exists() && target.getCanonicalFile().equals(new File(args[i]).getCanonicalFile())) {
                System.err.println("error: output " + args[2] + " would overwrite an input");
                System.exit(64);
            }
        }
        // Written beside the target and renamed over it once complete: an I/O error leaves the
        // target as it was. (java.io, not java.nio.file: apps on Android before API 26 copy this.)
        File part = new File(args[2] + ".part");
        FileOutputStream out = new FileOutputStream(part);
        try {
            out.write(model);
        } finally {
            out.close();
        }
        if (!part.renameTo(target)) {
            part.delete();
            System.err.println("error: cannot write " + args[2]);
            System.exit(74);
        }
    }
}
