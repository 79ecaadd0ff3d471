"""Opening a model's files: regular files only, read with a bound.

Every file of a repository is untrusted. A `manifest.json` that is a FIFO blocked every later load forever
(open(2) waits for a writer), one symlinked to /dev/zero grew the server ~1 GB/s: so files are opened with
O_NONBLOCK (a FIFO opens at once instead of waiting), then fstat'ed, and anything but a regular file is
refused before a byte is read. The check is on the open descriptor, so a swap after it cannot slip in.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# The largest manifest.json read. Training writes a few KB (architecture, labels, per-epoch metrics); the
# largest legitimate ones hold a CSV's preprocessing (category vocabularies, feature names): 16 MiB is
# ~100x those, parses in well under a second and keeps a hostile file from growing the loader.
MAX_MANIFEST_BYTES = 16 << 20


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading; OSError (strerror says why) when it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a file"
            )
            raise OSError(errno.EINVAL, f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes`; OSError otherwise (read no further than the bound)."""
    with open_regular(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes")
    return data


def descriptor_path(handle: BinaryIO) -> str:
    """A path that opens the very file `handle` holds (Linux /proc), for readers that take only a path."""
    return f"/proc/self/fd/{handle.fileno()}"
