"""Context-adaptive binary arithmetic coding of pruned, shared tensors (sidecar encoding 3).

Huffman codes each symbol on its own and cannot go below the element-wise entropy of a
tensor. Weights are not independent: a pixel that carries nothing leaves its weights dead in
every output row, neighbouring pixels of an input-side kernel share sign and magnitude. Like
DeepCABAC (Wiedemann et al., IEEE JSTSP 2020) this module binarizes each element (a
*significance* bit, then the bits of its codebook index) and codes every bit with an
adaptive probability chosen by a context of already coded neighbours; all-zero rows cost one
bit. The design was chosen by measurement on LeNet-300-100 and LeNet-5 (``benchmarks/README.md``
has the numbers); the coder is written here from the papers' description because no library
offers a binary adaptive coder with a byte-exact C and Java twin. The range coder is the
classic carry-propagating binary one (a 32-bit ``range`` and ``low``, bytes out when ``range``
falls below ``2**24``, as in Martin 1979 and LZMA's rc).

Model (``tflite_export/FORMAT.md``, "Arithmetic-coded payload", is the normative text). The
tensor is ``n / width`` rows of ``width`` elements in file order. Each element has a *class*:
0 for zero, 1 for a non-zero whose bit pattern has its top bit clear (a positive float or
int), 2 otherwise. Contexts (probability slots):

- ``ROW + d``: "this row is all zeros", ``d`` = the previous row's flag (a dead row is skipped).
- ``SIG + (left > 0) + 2 * (up > 0)``: significance, with ``left`` the class of the element
  before it and ``up`` the class ``stride`` elements before it, both in the same row (0 when
  outside it). ``stride`` is chosen per tensor by the encoder: 28 for a Dense kernel fed by
  28x28 images finds the pixel above.
- the ``depth = bit_length(k - 1)`` bits of the codebook index, most significant first, down a
  binary tree: tree nodes 1 to 3 in ``TOP + 9 * (node - 1) + 3 * left + up``, deeper nodes in
  ``DEEP + node``. Codebooks sort bit patterns, so the first index bits carry the sign.

Probabilities are 16-bit estimates of P(bit = 0) that start at one half and move towards each
coded bit by ``p >> shift``, ``shift = min(bit_length(seen + 2), 6)`` for a context that has
coded ``seen`` bits (counted up to 30): fast while a context is new, like a count, then a
1/64 moving average. Measured: 2-4% smaller than a fixed 1/32 on the LeNets.
"""

from __future__ import annotations

import numpy as np

PROB_ONE = 1 << 16
HALF = 1 << 15
MAX_SHIFT = 6  # adaptation rate once a context has seen 30 bits: 1/64
WARM = 30  # bits after which a context's rate stops slowing down
TOP_VALUE = 1 << 24
ROW, SIG, TOP, DEEP = 0, 2, 6, 29  # DEEP + node for tree nodes 4..255
CONTEXTS = DEEP + 256
MAX_CODEBOOK = 256  # index bits down a tree of at most 8 levels
MAX_STRIDE = 256  # the decoder keeps the classes of the last `stride` elements of a row


class StreamError(ValueError):
    """An arithmetic-coded stream that does not decode (truncated, or symbols out of range)."""


def classes(units: np.ndarray) -> np.ndarray:
    """Context class of each element: 0 zero, 1 top bit clear, 2 top bit set.

    Example:
        >>> classes(np.float32([0.0, 0.5, -0.5]).view(np.uint32)).tolist()
        [0, 1, 2]
    """
    top = np.right_shift(units, units.dtype.itemsize * 8 - 1).astype(np.int64)
    return np.where(units != 0, 1 + top, 0)


def choose_stride(
    cls: np.ndarray, width: int, candidates: list[int] | None = None
) -> tuple[int, float]:
    """The neighbour distance that best predicts each element's class (empirical estimate).

    For each candidate ``s`` the conditional entropy of an element's class given the classes
    1 and ``s`` elements before it in its row is computed with numpy; the smallest wins.

    Returns:
        ``(stride, bits)``: the stride and that conditional entropy over the non-zero rows, in
        bits (about what the coder spends on significance and signs).
    """
    rows = cls.reshape(-1, width)
    rows = rows[rows.any(axis=1)]
    if rows.size == 0 or width < 2:
        return 1, float(rows.size * 1.6)
    scale = 1.0
    if rows.size > 1 << 18:  # large tensors: estimate on evenly spaced rows
        keep = max(1, (1 << 18) // width)
        scale = len(rows) / keep
        rows = rows[np.linspace(0, len(rows) - 1, keep).astype(np.int64)]
    if candidates is None:
        candidates = sorted(
            set(range(1, min(width, 64) + 1))
            | {d for d in range(2, min(width, MAX_STRIDE) + 1) if width % d == 0}
        )
    left = np.zeros_like(rows)
    left[:, 1:] = rows[:, :-1]
    best, best_bits = 1, np.inf
    for s in candidates:
        if not 1 <= s <= MAX_STRIDE:
            continue
        up = np.zeros_like(rows)
        if s < width:
            up[:, s:] = rows[:, :-s]
        joint = np.bincount((rows * 9 + left * 3 + up).ravel(), minlength=27).reshape(3, 9)
        given = joint.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            bits = -np.nansum(joint * np.log2(joint / given))
        if bits < best_bits - 1e-9:
            best, best_bits = s, bits
    return best, float(best_bits) * scale


def encode(symbols: np.ndarray, cls: np.ndarray, k: int, width: int, stride: int) -> bytes:
    """Code a tensor's codebook indices (``-1`` for a zero) given each element's class.

    Args:
        symbols: per element, its index in its codebook, or -1 for a zero.
        cls: per element, ``classes`` of its bit pattern (0 exactly where ``symbols`` is -1).
        k: codebook size, 1 to ``MAX_CODEBOOK`` (0 for an all-zero tensor).
        width: row length, a divisor of the element count.
        stride: the ``up`` neighbour's distance, 1 to ``MAX_STRIDE``.

    Example:
        >>> s = np.array([-1, 0, -1, 1, -1, 0]); c = np.where(s < 0, 0, s + 1)
        >>> stream = encode(s, c, 2, 3, 1)
        >>> decode(stream, 6, 3, 1, 2, lambda i, v: 1 + v).tolist()
        [-1, 0, -1, 1, -1, 0]
    """
    _check(symbols.size, k, width, stride)
    enc = _Encoder()
    probs = [HALF] * CONTEXTS + [0] * CONTEXTS  # estimates, bits seen
    depth = max(k - 1, 0).bit_length()
    rows = symbols.reshape(-1, width)
    row_cls = cls.reshape(-1, width)
    live = (rows >= 0).any(axis=1).tolist()
    previous_dead = 0
    for r, is_live in enumerate(live):
        enc.bit(probs, ROW + previous_dead, 0 if is_live else 1)
        previous_dead = 0 if is_live else 1
        if not is_live:
            continue
        c = row_cls[r].tolist()
        s = rows[r].tolist()
        left = 0
        for j in range(width):
            up = c[j - stride] if j >= stride else 0
            v = s[j]
            enc.bit(probs, SIG + (left > 0) + 2 * (up > 0), 1 if v >= 0 else 0)
            if v >= 0:
                node = 1
                for d in range(depth - 1, -1, -1):
                    bit = (v >> d) & 1
                    ctx = TOP + 9 * (node - 1) + 3 * left + up if node < 4 else DEEP + node
                    enc.bit(probs, ctx, bit)
                    node = 2 * node + bit
            left = c[j]
    return enc.finish()


def decode(stream: bytes, n: int, width: int, stride: int, k: int, class_of) -> np.ndarray:
    """Invert ``encode``: each element's codebook index, -1 for a zero.

    ``class_of(i, v)`` gives the class (1 or 2) of element ``i`` decoded as index ``v`` (it
    depends on the element's codebook).

    Raises:
        StreamError: the stream ends early, has bytes left over, or names an index >= k.
    """
    _check(n, k, width, stride)
    dec = _Decoder(stream)
    probs = [HALF] * CONTEXTS + [0] * CONTEXTS  # estimates, bits seen
    depth = max(k - 1, 0).bit_length()
    out = np.full(n, -1, np.int64)
    previous_dead = 0
    for r in range(n // width):
        previous_dead = dec.bit(probs, ROW + previous_dead)
        if previous_dead:
            continue
        base = r * width
        c = [0] * width
        row = [-1] * width
        left = 0
        for j in range(width):
            up = c[j - stride] if j >= stride else 0
            if dec.bit(probs, SIG + (left > 0) + 2 * (up > 0)):
                node = 1
                for _ in range(depth):
                    node = 2 * node + dec.bit(
                        probs, TOP + 9 * (node - 1) + 3 * left + up if node < 4 else DEEP + node
                    )
                v = node - (1 << depth)
                if v >= k:
                    raise StreamError(f"element {base + j}: index {v} beyond codebook of {k}")
                row[j] = v
                c[j] = class_of(base + j, v)
            left = c[j]
        out[base : base + width] = row
    dec.finish()
    return out


def _adapt(probs: list, ctx: int, bit: int) -> None:
    """Move context ``ctx`` towards ``bit``; ``probs[CONTEXTS + ctx]`` counts its bits."""
    seen = probs[CONTEXTS + ctx]
    shift = min((seen + 2).bit_length(), MAX_SHIFT)
    p = probs[ctx]
    probs[ctx] = p - (p >> shift) if bit else p + ((PROB_ONE - p) >> shift)
    if seen < WARM:
        probs[CONTEXTS + ctx] = seen + 1


def _check(n: int, k: int, width: int, stride: int) -> None:
    if width < 1 or n % width:
        raise StreamError(f"row width {width} does not divide {n} elements")
    if not 1 <= stride <= MAX_STRIDE or not 0 <= k <= MAX_CODEBOOK:
        raise StreamError(f"stride {stride} or codebook size {k} out of range")


class _Encoder:
    """Binary range encoder; ``low`` may carry into bytes already produced (kept pending)."""

    def __init__(self):
        self.low, self.range, self.cache, self.pending = 0, 0xFFFFFFFF, 0, 0
        self.out = bytearray()

    def bit(self, probs: list, ctx: int, bit: int) -> None:
        p = probs[ctx]
        bound = (self.range >> 16) * p
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        _adapt(probs, ctx, bit)
        while self.range < TOP_VALUE:
            self.range <<= 8
            self._shift_low()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            self.out.extend(bytes([(0xFF + carry) & 0xFF]) * self.pending)
            self.pending = 0
            self.cache = (self.low >> 24) & 0xFF
        else:
            self.pending += 1
        self.low = (self.low << 8) & 0xFFFFFFFF

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        # The first byte is the initial cache, always 0 (the coded value is below 1): dropped.
        assert self.out[0] == 0
        return bytes(self.out[1:])


class _Decoder:
    def __init__(self, stream: bytes):
        if len(stream) < 4:
            raise StreamError(f"stream of {len(stream)} bytes, at least 4 needed")
        self.data, self.pos = stream, 4
        self.code, self.range = int.from_bytes(stream[:4], "big"), 0xFFFFFFFF

    def bit(self, probs: list, ctx: int) -> int:
        bound = (self.range >> 16) * probs[ctx]
        if self.code < bound:
            self.range = bound
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        _adapt(probs, ctx, bit)
        while self.range < TOP_VALUE:
            if self.pos >= len(self.data):
                raise StreamError(f"stream ends early at byte {self.pos}")
            self.code = ((self.code << 8) | self.data[self.pos]) & 0xFFFFFFFF
            self.range <<= 8
            self.pos += 1
        return bit

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise StreamError(f"{len(self.data) - self.pos} stream bytes left over")
