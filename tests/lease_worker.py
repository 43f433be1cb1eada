"""One Lambda-like process that misses on an episode with no seek index (tests/test_indexing.py runs two).

    python -m tests.lease_worker BUCKET KEY EPISODE_ID RENDEZVOUS_DIR

S3 is wherever AWS_ENDPOINT_URL points. Whichever process holds the lease builds only once the other has been
seen waiting (a file in RENDEZVOUS_DIR), so the two overlap for certain. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(bucket: str, key: str, episode_id: str, rendezvous: str) -> None:
    from chalicelib import wiring
    from chalicelib.audio.cutting import Mp3Source
    from chalicelib.clips import seek_index as indexing
    from chalicelib.stores.keys import SEEK_INDEX_NAME
    from chalicelib.stores.source import SourceAudio

    me = str(os.getpid())
    scans = []
    real_pause, real_build = indexing._pause, indexing.build_index

    def pause(seconds: float) -> None:
        open(os.path.join(rendezvous, f"waiting-{me}"), "w").close()
        real_pause(min(seconds, 0.05))

    def build_once_the_other_waits(source, deadline):
        give_up = time.monotonic() + 20
        while not any(n.startswith("waiting-") and n != f"waiting-{me}" for n in os.listdir(rendezvous)):
            if time.monotonic() > give_up:
                raise AssertionError("the other process never waited")
            time.sleep(0.02)
        scans.append(1)
        return real_build(source, deadline)

    indexing._pause = pause
    indexing.build_index = build_once_the_other_waits
    current = wiring.current()
    source = Mp3Source.sniff(SourceAudio.open(current.s3, bucket, key))
    assert source is not None
    index, built = indexing.obtain_index(
        source, current.clip_store.artefact(episode_id, SEEK_INDEX_NAME), time.monotonic() + 30
    )
    print(
        json.dumps({"built": built, "scans": len(scans), "frames": index.frames, "bytes_read": source.audio.bytes_read})
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
