"""``assistant index`` as a subprocess of the kill tests: the real job, end to end, with fast
crawler retries and an optional pause point.

With ``PAUSE_AT_CHUNK=n``, the n-th chunk handed to the engine's write (inside the embedded
engine's transaction, or between Elasticsearch bulk requests of ``BULK_BATCH`` chunks) touches
``PAUSE_MARKER`` and sleeps: the test kills the process there, in the middle of the update.

    python -m tests.index_job_driver index --quiet
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _pause_at(n: int, marker: Path):
    seen = [0]

    def wrap(make):
        def wrapper(*args, **kwargs):
            seen[0] += 1
            if seen[0] == n:
                marker.touch()
                time.sleep(3600)  # until SIGKILL
            return make(*args, **kwargs)
        return wrapper

    from assistant.engines import elasticsearch, embedded

    embedded.EmbeddedEngine._row = staticmethod(wrap(embedded.EmbeddedEngine._row))
    elasticsearch.chunk_document = wrap(elasticsearch.chunk_document)
    elasticsearch.BULK_BATCH = int(os.environ.get("BULK_BATCH", "2"))


def main() -> None:
    if os.environ.get("PAUSE_AT_CHUNK"):
        _pause_at(int(os.environ["PAUSE_AT_CHUNK"]), Path(os.environ["PAUSE_MARKER"]))
    from indexing.crawler import crawl_site

    crawl_site.__kwdefaults__.update(backoff=0.01, retries=1, timeout=3.0)
    from assistant.cli import cli

    cli(["--env-file", "/nonexistent/.env", *sys.argv[1:]], prog_name="assistant")


if __name__ == "__main__":
    main()
