"""The clip route's answers (JSON or a redirect), the health answer and the OpenAPI document."""

from __future__ import annotations

import functools
import json
import os
import time
from datetime import datetime
from typing import Any, Dict, Optional

from chalice import Response

from chalicelib.audio.attribution import ClipStory
from chalicelib.clips.service import ClipResult
from chalicelib.errors import ServiceError
from chalicelib.web import links
from chalicelib.web.middleware import elapsed_ms, note
from chalicelib.web.params import ParsedClipRequest


def clip_response(result: ClipResult, request: ParsedClipRequest, base_url: str) -> Response:
    """The clip route's answer: a 302 to the clip with ``redirect=true``, else the JSON body, whose ``play_url``
    (under ``base_url``, see ``chalicelib.web.links``) is the lasting link a client should store."""
    generation_ms = elapsed_ms()
    note(
        episode_id=result.episode_id,
        cache_hit=result.cache_hit,
        method=result.method,
        start_time_ms=result.start_ms,
        duration_ms=result.duration_ms,
        source_bytes_read=result.source_bytes_read,
        source_requests=result.source_requests,
        clip_bytes=result.clip_bytes,
        regenerated_stale=result.regenerated_stale,
        index_built=result.index_built,
        timings_ms=result.timings_ms,
        snap=result.snap,
        levels=result.levels,
    )
    if request.redirect:
        return Response(body="", status_code=302, headers={"Location": result.clip_url, "Cache-Control": "no-store"})
    body = {
        "clip_url": result.clip_url,
        "expires_at": _iso(result.expires_at),
        "cache_hit": result.cache_hit,
        "episode_id": result.episode_id,
        "start_time_ms": result.start_ms,
        "duration_ms": result.duration_ms,
        "generation_time_ms": generation_ms,
    }
    asked = request.clip
    if asked.snap:  # start_time_ms and duration_ms above are the served ones
        body.update(requested_start_time_ms=asked.start_ms, requested_duration_ms=asked.duration_ms, snap=asked.snap)
    body["play_url"] = links.play_url(base_url, result.episode_id, asked.start_ms, asked.duration_ms, asked.snap)
    body.update(sharing_fields(result, base_url, asked.start_ms, asked.duration_ms, asked.snap))
    return Response(body=body, status_code=200, headers={"Cache-Control": "no-store"})


def sharing_fields(
    result: ClipResult, base: str, requested_start_ms: int, requested_duration_ms: int, snap: Optional[str] = None
) -> Dict[str, Any]:
    """``share_url`` (with ``base``, this service's absolute base; for the clip as requested, as ``play_url``), the
    titles the catalog has, and a Podcasting 2.0 ``soundbite`` of the clip served, for the episode's feed."""
    story = ClipStory.of(result.start_ms, result.duration_ms, result.episode_title, result.podcast_title)
    share_url = links.share_url(base, result.episode_id, requested_start_ms, requested_duration_ms, snap)
    fields: Dict[str, Any] = {"share_url": share_url}
    if story.episode_title:
        fields["episode_title"] = story.episode_title
    if story.podcast_title:
        fields["podcast_title"] = story.podcast_title
    fields["soundbite"] = story.soundbite()
    return fields


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def health_response(wiring: Any, deep: bool) -> Response:
    """Liveness: FFmpeg found (cheap); with ``deep``, MongoDB and S3 answer too."""
    from chalicelib.audio.ffmpeg import ffmpeg_version  # imported by the health route only

    body: Dict[str, Any] = {"status": "ok", "ffmpeg": None}
    problems = []
    path = wiring.ffmpeg
    if path:
        body["ffmpeg"] = {"path": path, "version": ffmpeg_version(path)}
    else:
        problems.append("FFmpeg not found (FFMPEG_PATH, /opt/bin/ffmpeg)")
    if deep:
        checks = body["checks"] = {}
        for name, check in (("mongodb", lambda: wiring.catalog.ping()), ("s3", lambda: wiring.clip_store.ping())):
            started = time.perf_counter()
            try:
                check()
                checks[name] = {"ok": True}
            except ServiceError as error:
                checks[name] = {"ok": False, "error": error.message}
                problems.append(f"{name}: {error.message}")
            checks[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if problems:
        body.update(status="unavailable", problems=problems)
        return Response(body=body, status_code=503, headers={"Retry-After": "30"})
    return Response(body=body, status_code=200)


@functools.lru_cache(maxsize=1)
def openapi_document() -> Dict[str, Any]:
    """The API's OpenAPI 3 description, kept beside this module (and checked against the service by schemathesis)."""
    with open(os.path.join(os.path.dirname(__file__), "openapi.json"), encoding="utf-8") as handle:
        return json.load(handle)
