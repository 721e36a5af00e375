"""Writing output files all at once: never a half-written file, never a partial set."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_atomically(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write every file of ``files`` (path -> bytes), or none of them.

    Each file is written to a temporary file beside its target, flushed to disk, then renamed
    over the target once all are written; on any error the temporaries are removed and the
    targets keep what they held. Missing folders are created. The files get the permissions
    ``open`` would give them (``0o666`` less the umask), not ``mkstemp``'s owner-only ``0o600``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_atomically({folder / "a.bin": b"1", folder / "sub" / "b.bin": b"22"})
        >>> sorted(p.name for p in folder.rglob("*.bin"))
        ['a.bin', 'b.bin']
    """
    mode = 0o666 & ~_umask()
    temporary: dict[Path, str] = {}
    try:
        for final, data in files.items():
            final = Path(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
            temporary[final] = name
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, mode)
        for final, name in temporary.items():
            os.replace(name, final)
    finally:
        for name in temporary.values():
            if os.path.exists(name):
                os.remove(name)


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
