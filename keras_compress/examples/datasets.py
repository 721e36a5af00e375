"""Offline loaders for the data sets the examples, tests and benchmarks use.

Nothing here downloads: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package,
English-German message pairs from the gettext catalogs Debian packages install.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    numpy has no IDX reader, and the format is a 4-byte magic, one big-endian uint32 per
    dimension and the raw data, so it is read here by hand with full bounds checks.

    Args:
        path: the ``.idx*-ubyte`` or ``.idx*-ubyte.gz`` file.

    Returns:
        The array with the dtype and shape the header declares.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is malformed or the data is shorter or longer than declared;
            the message names the file and the byte offset.

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape
        (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic at byte offset 0)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x} at byte offset 2")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (need {header} bytes, got {len(raw)})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX data size mismatch: header at byte offset 4 declares shape {shape} "
            f"({expected} bytes in all), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist(
    path: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST from local IDX files, shaped like ``keras.datasets.fashion_mnist``.

    Args:
        path: folder holding ``train-images-idx3-ubyte(.gz)`` and the three other files.
            Defaults to ``$KERAS_COMPRESS_FASHION_MNIST`` or Debian's
            ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape ``(n, 28, 28)`` and
        uint8 labels 0-9 (60000 train, 10000 test).

    Raises:
        FileNotFoundError: a file is missing; the message says how to install the data.
        ValueError: a file is malformed, or image and label counts disagree.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = fashion_mnist()
        >>> x_train.shape, y_test.shape
        ((60000, 28, 28), (10000,))
    """
    folder = Path(
        path or os.environ.get("KERAS_COMPRESS_FASHION_MNIST", DEFAULT_FASHION_MNIST_PATH)
    )
    parts = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        candidates = [folder / f"{stem}.gz", folder / stem]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}(.gz) not found in {folder}. On Debian/Ubuntu install "
                "it with `apt-get install dataset-fashion-mnist`, or pass path= (or set "
                "KERAS_COMPRESS_FASHION_MNIST) to the folder holding the IDX files."
            )
        parts.append(read_idx(found))
    x_train, y_train, x_test, y_test = parts
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} split in {folder}: images {x.shape} and labels {y.shape} "
                "do not match"
            )
    return (x_train, y_train), (x_test, y_test)


DEFAULT_LOCALE_PATH = "/usr/share/locale"
#: The catalogs of the Debian packages that the setup installs (English source, German target).
GETTEXT_CATALOGS = ("git", "coreutils", "apt", "dpkg", "dpkg-dev", "gnupg2", "bash", "findutils",
                    "grep", "gettext-tools", "gettext-runtime", "tar", "diffutils", "sed", "wget",
                    "make", "shadow", "procps-ng", "util-linux", "e2fsprogs", "libc")  # fmt: skip


def gettext_pairs(
    locale_path: str | os.PathLike = DEFAULT_LOCALE_PATH,
    language: str = "de",
    catalogs: Sequence[str] = GETTEXT_CATALOGS,
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """English-to-``language`` message pairs from installed gettext catalogs, split by source hash.

    Each ``LOCALE/LANGUAGE/LC_MESSAGES/NAME.mo`` found is read with ``polib`` (which decodes
    the catalog's own charset, UTF-8 or not); fuzzy and untranslated entries are skipped, a
    plural entry gives its singular and its plural pair, a message context is dropped, and
    whitespace is collapsed. Pairs are deduplicated, and the split (90% train, 5% valid, 5%
    test) is decided by a hash of the English message, so the same source never lands in two
    splits and the split does not change when catalogs are added.

    Args:
        locale_path: the locale folder (``/usr/share/locale`` on Debian).
        language: the target language folder, e.g. ``"de"``.
        catalogs: catalog names (without ``.mo``); missing ones are skipped.

    Returns:
        ``({"train": [(en, de), ...], "valid": [...], "test": [...]}, {catalog: pairs})``,
        the second listing the catalogs used and how many pairs each gave.

    Raises:
        FileNotFoundError: no catalog of ``catalogs`` is installed under the path.

    Example:
        >>> splits, used = gettext_pairs()  # doctest: +SKIP
        >>> sorted(used)[:2], len(splits["train"]) > 1000  # doctest: +SKIP
        (['apt', 'bash'], True)
    """
    import polib  # only this loader needs it (the "nmt" extra)

    folder = Path(locale_path) / language / "LC_MESSAGES"
    found = [
        (name, folder / f"{name}.mo") for name in catalogs if (folder / f"{name}.mo").is_file()
    ]
    if not found:
        raise FileNotFoundError(
            f"no gettext catalog of {list(catalogs)} under {folder}; install the packages "
            "(apt-get install git coreutils apt dpkg gnupg2 bash findutils grep gettext) and "
            "make sure dpkg does not exclude /usr/share/locale"
        )
    seen: set[tuple[str, str]] = set()
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    used: dict[str, int] = {}
    for name, path in found:
        count = 0
        for source, target in _catalog_pairs(polib.mofile(str(path))):
            if (source, target) in seen:
                continue
            seen.add((source, target))
            splits[_split_of(source)].append((source, target))
            count += 1
        used[name] = count
    return splits, used


def _catalog_pairs(catalog) -> list[tuple[str, str]]:
    pairs = []
    for entry in catalog:
        if "fuzzy" in entry.flags or entry.obsolete or not entry.msgid:
            continue
        if entry.msgid_plural:
            forms = entry.msgstr_plural
            candidates = [(entry.msgid, forms.get(0, "")), (entry.msgid_plural, forms.get(1, ""))]
        else:
            candidates = [(entry.msgid, entry.msgstr)]
        for source, target in candidates:
            source, target = " ".join(source.split()), " ".join(target.split())
            if source and target:
                pairs.append((source, target))
    return pairs


def _split_of(source: str) -> str:
    bucket = int.from_bytes(hashlib.sha1(source.encode()).digest()[:4], "big") % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"
