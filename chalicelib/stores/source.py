"""The source audio: one version (ETag) of an episode's object, read by byte range, every byte counted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.deadlines import until
from chalicelib.errors import NotFound, Undecodable
from chalicelib.stores.s3 import MISSING, PRECONDITION, error_code, failure

READ_ATTEMPTS = 3
HEAD_BYTES = 16 * 1024  # read when a source is opened: ID3v2 tags, the first frame, its Xing/Info tag
MAX_READS = 32  # GETs of one source version, its head included; a clip needs a handful (README: "Bounded work")


class SourceChanged(Exception):
    """The source object was replaced while it was being read."""


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str = ""


class SourceAudio:
    """Reads one version (ETag) of a source object by byte range, counting every byte it is sent."""

    def __init__(self, s3, source: SourceObject, head: bytes = b"", deadline: Optional[float] = None):
        self._s3 = s3
        self.source = source
        self.deadline = deadline  # every read is bounded by it (set when opened: the request's deadline)
        self.head = head  # the first bytes of the object, read when it was opened
        self.bytes_read = len(head)
        self.requests = 1 if head else 0

    @classmethod
    def open(
        cls, s3, bucket: str, key: str, head_bytes: int = HEAD_BYTES, deadline: Optional[float] = None
    ) -> "SourceAudio":
        """One ranged GET of the object's head: its bytes, and from the same answer its size and ETag."""
        try:
            with until(deadline):
                response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
            head = response["Body"].read()
        except ClientError as error:
            if error_code(error) in MISSING:
                raise NotFound("The episode's source audio is missing from storage") from None
            if error_code(error) in ("InvalidRange", "416"):
                return cls(s3, SourceObject(bucket, key, 0, error.response.get("ETag", "")), deadline=deadline)
            raise failure("reading the source audio", error) from None
        except BotoCoreError as error:
            raise failure("reading the source audio", error) from None
        size = int(response.get("ContentRange", "/").rsplit("/", 1)[-1] or len(head))
        source = SourceObject(bucket, key, size, response["ETag"], response.get("ContentType", ""))
        return cls(s3, source, head, deadline)

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, clipped to its size; retried on transient faults."""
        end = min(end, self.source.size)
        if start >= end:
            return b""
        for attempt in range(READ_ATTEMPTS):
            try:
                return self._get(f"bytes={start}-{end - 1}")
            except ClientError as error:  # botocore has already retried throttling and 5xx answers
                if error_code(error) in MISSING:
                    raise NotFound("The episode's source audio is missing from storage") from None
                raise failure("reading the source audio", error) from None
            except BotoCoreError as error:  # a connection reset or timeout mid-body, which botocore does not retry
                pause = 0.1 * 3**attempt
                if attempt == READ_ATTEMPTS - 1 or (self.deadline and time.monotonic() + pause > self.deadline):
                    raise failure("reading the source audio", error) from None
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _get(self, byte_range: str) -> bytes:
        data = self._get_this_version(byte_range)["Body"].read()
        self.bytes_read += len(data)
        return data

    def stream(self, start: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object from ``start`` to its end, in chunks, never held whole."""
        try:
            for chunk in self._get_this_version(f"bytes={start}-")["Body"].iter_chunks(chunk_size):
                self.bytes_read += len(chunk)
                yield chunk
        except (ClientError, BotoCoreError) as error:
            raise failure("reading the source audio", error) from None

    def _get_this_version(self, byte_range: str) -> dict:
        """GetObject of a range of the version (ETag) this reader opened; SourceChanged if it was replaced.
        Past MAX_READS, the source is a 422: only a file built to cost work is laid out in so many pieces."""
        if self.requests >= MAX_READS:
            raise Undecodable(
                "The episode's source audio is laid out in more pieces than this service reads for one clip",
                detail=f"{self.requests} reads of {self.source.key}; at most {MAX_READS}",
            )
        try:
            with until(self.deadline):
                response = self._s3.get_object(
                    Bucket=self.source.bucket, Key=self.source.key, Range=byte_range, IfMatch=self.source.etag
                )
        except ClientError as error:
            if error_code(error) in PRECONDITION:
                raise SourceChanged(self.source.key) from None
            raise
        self.requests += 1
        return response

    def presigned_url(self, expires_in: int = 600) -> str:
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.source.bucket, "Key": self.source.key}, ExpiresIn=expires_in
        )
