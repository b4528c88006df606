"""Archive search: index recorded video once, then ask "when and where does X appear?".

Stages, each a module:

- :mod:`plan`: the files named by ``--source`` probed and cut into time chunks,
  the units of work;
- :mod:`index`: a :class:`~realtime.archive.index.ChunkIndexer` decodes one chunk
  with the live app's OpenCV reader, samples it, runs the detector's prompt-free
  vision pass and writes the chunk's Parquet files;
- :mod:`store`: the on-disk format (``manifest.jsonl`` and the Parquet files),
  atomic writes, resume decisions and the model/layout check;
- :mod:`ray_backend`: the same units on a Ray cluster (optional extra);
- :mod:`search`: prompts scored against every stored frame, segments, boxes;
- :mod:`report`: the self-contained HTML page;
- :mod:`jobs`: the two commands, with progress bars, signals and exit codes.

The format is documented in docs/archive.md.  pyarrow and Ray are optional
extras (requirements-archive.txt), imported only where they are needed.
"""

from __future__ import annotations

import importlib

EXTRA_REQUIREMENTS = "requirements-archive.txt"


class MissingExtra(ImportError):
    """An optional package the archive needs is not installed; the message says what to do."""


def require(module: str, what: str):
    """Import an optional extra, or fail with one line that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"{what} needs the {module.split('.')[0]} package: pip install -r "
                           f"{EXTRA_REQUIREMENTS}") from None
