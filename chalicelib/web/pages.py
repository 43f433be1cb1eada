"""Pages for people: a clip's share page, its small embeddable player, the oEmbed answer describing them, and the
HTML error pages. Server-rendered, no script, no outside font or image (the share page's waveform is an inline
SVG; its card is for link previews, named in its head); every catalog string escaped where it goes.

A page looks the episode up in the catalog (titles, the link back) and asks the clip service for the clip, so that
an unknown episode, a bad range or a start past the end answer the clip route's statuses, and the clip is cached
by the time a listener presses play.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from chalice import Response

from chalicelib.audio.attribution import ClipStory, clock
from chalicelib.audio.waveform import pairs
from chalicelib.cards import HEIGHT as CARD_HEIGHT
from chalicelib.cards import WIDTH as CARD_WIDTH
from chalicelib.cards import bar_levels
from chalicelib.clips.service import ClipResult, clip_story
from chalicelib.deadlines import until
from chalicelib.errors import BadRequest, NotFound, ServiceError, Unavailable, UnsupportedFormat
from chalicelib.stores.catalog import Episode
from chalicelib.web import links
from chalicelib.web.middleware import note
from chalicelib.web.params import parse_clip_request

log = logging.getLogger(__name__)

PROVIDER_NAME = "Podcast clips"
EMBED_WIDTH = 480
EMBED_HEIGHT = 152
PAGE_CACHE_CONTROL = "public, max-age=300"  # shared caches may keep pages: their links never come from headers
_SIZE = re.compile(r"[0-9]{1,12}")  # as the OpenAPI document says: at most 999,999,999,999

STYLE = (
    ":root{color-scheme:light dark;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;line-height:1.4}"
    "body{margin:0;padding:1rem;background:Canvas;color:CanvasText}"
    "main{max-width:36rem;margin:0 auto}"
    "h1{font-size:1.35rem;margin:.25rem 0 .5rem;overflow-wrap:anywhere}"
    ".podcast{margin:0;font-size:.95rem;opacity:.75;overflow-wrap:anywhere}"
    ".range{margin:.25rem 0 1rem;font-variant-numeric:tabular-nums}"
    "audio{width:100%;margin:.25rem 0 1rem}"
    "a{color:LinkText}"
    ".embed body{padding:0}.embed main{padding:.5rem .75rem}.embed h1{font-size:1rem;margin:0}"
    ".embed audio{margin:.4rem 0 0}"
    ".wave{display:block;width:100%;height:auto;color:#0284c7;margin:.25rem 0 .5rem}"
    "@media (prefers-color-scheme:dark){.wave{color:#38bdf8}}"
)
_STYLE_SOURCE = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'"


@dataclass(frozen=True)
class ClipPage:
    """Everything a page says about one clip."""

    story: ClipStory
    share_url: str
    play_url: str
    embed_url: str
    oembed_url: str
    clip_origin: str  # where play_url redirects to: the pre-signed clip's scheme and host
    play_origin: str  # where play_url itself is when PUBLIC_BASE_URL sets it (not always this page's host); else ""
    card_url: str = ""  # the clip's share card (og:image)
    waveform: Optional[Sequence[Tuple[int, int]]] = None  # the clip's peaks, (min, max) per pixel, when known


def clip_page(
    request: Any,
    wiring: Any,
    episode_id: str,
    query: Optional[Mapping[str, str]],
    deadline: float,
    with_waveform: bool = False,
) -> ClipPage:
    parsed = parse_clip_request(episode_id, query, wiring.declared.max_clip_ms).clip
    result = wiring.clips.get_clip(parsed, deadline)  # first: a cached clip's page does not need MongoDB
    waveform = _waveform(wiring, result, deadline) if with_waveform else None
    episode = _catalog_entry(wiring, parsed.episode_id, deadline)
    note(
        episode_id=result.episode_id,
        cache_hit=result.cache_hit,
        method=result.method,
        source_bytes_read=result.source_bytes_read,
        start_time_ms=result.start_ms,
        duration_ms=result.duration_ms,
        clip_bytes=result.clip_bytes,
        timings_ms=result.timings_ms,
    )
    base = links.base_url(request, wiring.declared.public_base_url)
    args = (base, parsed.episode_id, parsed.start_ms, parsed.duration_ms, parsed.snap)  # as asked, as play_url
    share = links.share_url(*args)
    clip = urlsplit(result.clip_url)
    return ClipPage(
        story=clip_story(episode, result.start_ms, result.duration_ms)  # the range served (snapped or as asked)
        if episode is not None
        else ClipStory.of(result.start_ms, result.duration_ms, result.episode_title, result.podcast_title),
        share_url=share,
        play_url=links.play_url(*args),
        embed_url=links.embed_url(*args),
        oembed_url=links.oembed_url(base, share),
        clip_origin=f"{clip.scheme}://{clip.netloc}",
        play_origin=links.origin(base) if wiring.declared.public_base_url else "",  # else 'self' says it
        card_url=links.card_url(*args),
        waveform=waveform,
    )


def _waveform(wiring: Any, clip: ClipResult, deadline: float) -> Optional[Sequence[Tuple[int, int]]]:
    """The clip's peaks for the page's picture (cached beside the clip, or one decode of it); None when they
    cannot be had now: the page is still served, without the picture."""
    try:
        wave = wiring.pictures.waveform_of(clip, deadline)
    except Exception as error:
        log.warning("share page of %s without its waveform: %r", clip.episode_id, error)
        return None
    note(waveform_cache_hit=wave.cache_hit)
    return pairs(wave.document)


def _catalog_entry(wiring: Any, episode_id: str, deadline: float) -> Optional[Episode]:
    """The episode's catalog entry, for its titles and the link back, within the request's deadline; None when the
    catalog cannot answer now or no longer lists it: the page of a cached clip is still served, with the titles
    stored beside the clip."""
    try:
        with until(deadline):  # the catalog's first use may read its secret from SSM
            catalog = wiring.catalog
        return catalog.find_episode(episode_id, deadline=deadline)
    except (Unavailable, NotFound) as error:
        log.warning("share page of %s without its catalog entry: %s", episode_id, error.message)
        return None


# ---------------------------------------------------------------- the routes


def share_page(request: Any, wiring: Any, episode_id: str, deadline: float) -> Response:
    """``GET /clips/{episode_id}``: the share page, or an HTML error page with the clip route's status."""
    page = _page_or_error(request, wiring, episode_id, deadline, with_waveform=True)
    if isinstance(page, Response):
        return page
    return _html(render_share(page), _csp(page, frame_ancestors="'none'"), {"X-Frame-Options": "DENY"})


def embed_page(request: Any, wiring: Any, episode_id: str, deadline: float) -> Response:
    """``GET /clips/{episode_id}/embed``: the clip in a small frame, embeddable anywhere."""
    page = _page_or_error(request, wiring, episode_id, deadline)
    if isinstance(page, Response):
        return page
    return _html(render_embed(page), _csp(page, frame_ancestors="*"))


def _page_or_error(request: Any, wiring: Any, episode_id: str, deadline: float, with_waveform: bool = False) -> Any:
    """The clip's page, or the HTML error page a person should see instead (never a JSON error, never a trace)."""
    try:
        return clip_page(request, wiring, episode_id, request.query_params, deadline, with_waveform)
    except ServiceError as error:
        return error_page(error)
    except Exception as error:
        log.exception("share page failed")
        return error_page(ServiceError("Something went wrong on our side; try again later", detail=repr(error)))


def oembed(request: Any, wiring: Any, deadline: float) -> Response:
    """``GET /api/v1/oembed?url=&format=json``: oEmbed 1.0 (type ``rich``) for a share page of this service."""
    query = request.query_params or {}
    url = query.get("url")
    if not url:
        raise BadRequest("url is required: the address of a clip's share page (/clips/{episode_id}?start_time_ms=...)")
    if query.get("format", "json").lower() != "json":
        raise UnsupportedFormat(f"format {query['format'][:20]!r} is not supported: this service answers format=json")
    width, height = _bounded(query, "maxwidth", EMBED_WIDTH), _bounded(query, "maxheight", EMBED_HEIGHT)
    base = links.base_url(request, wiring.declared.public_base_url)
    episode_id, share_query = _share_page_of(url, base)
    try:
        page = clip_page(request, wiring, episode_id, share_query, deadline)
    except BadRequest:
        raise NotFound("url is not the address of a clip's share page on this service") from None
    story = page.story
    title = html.escape(story.title, quote=True)
    body: Dict[str, Any] = {
        "version": "1.0",
        "type": "rich",
        "title": story.title,
        "provider_name": PROVIDER_NAME,
        "provider_url": base + "/",
        "html": f'<iframe src="{html.escape(page.embed_url, quote=True)}" width="{width}" height="{height}" '
        f'title="{title}" style="border:0" loading="lazy"></iframe>',
        "width": width,
        "height": height,
        "cache_age": 300,
    }
    if story.podcast_title:
        body["author_name"] = story.podcast_title
    return Response(body=body, status_code=200, headers={"Cache-Control": PAGE_CACHE_CONTROL})


def _share_page_of(url: str, base: str) -> tuple:
    """(episode id, query) of a share page URL under ``base``; NotFound for any other URL."""
    foreign = NotFound("url is not the address of a clip's share page on this service")
    try:
        parts, home = urlsplit(url.strip()), urlsplit(base)
    except ValueError:
        raise foreign from None
    prefix = home.path.rstrip("/") + links.SHARE_ROUTE
    if (parts.scheme.lower(), parts.netloc.lower()) != (
        home.scheme.lower(),
        home.netloc.lower(),
    ) or not parts.path.startswith(prefix):
        raise foreign
    episode_id = unquote(parts.path[len(prefix) :])
    if not episode_id or "/" in episode_id:
        raise foreign
    return episode_id, dict(parse_qsl(parts.query))


def _bounded(query: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer of ASCII digits, at most ``default``. ``str.isdigit`` also takes '²', which ``int``
    refuses, and ``int`` refuses more than 4,300 digits: both are a 400, never reach it."""
    raw = query.get(name)
    if raw is None:
        return default
    if not _SIZE.fullmatch(raw) or int(raw) < 1:
        raise BadRequest(f"{name} must be a positive integer, got {raw[:20]!r}")
    return min(default, int(raw))


# ---------------------------------------------------------------- HTML


def _e(text: str) -> str:
    """Escaped for HTML text and for a double-quoted attribute alike."""
    return html.escape(text, quote=True)


def _head(title: str, extra: str = "") -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n{extra}<style>{STYLE}</style>\n</head>\n"
    )


def _range_line(story: ClipStory) -> str:
    seconds = story.duration_ms / 1000
    length = f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return (
        f'<p class="range">Clip from <time>{clock(story.start_ms)}</time> to '
        f"<time>{clock(story.start_ms + story.duration_ms)}</time> · {length}</p>\n"
    )


def _titles(story: ClipStory) -> str:
    podcast = f'<p class="podcast"><bdi>{_e(story.podcast_title)}</bdi></p>\n' if story.podcast_title else ""
    episode = _e(story.episode_title) if story.episode_title else "A podcast clip"
    return f"{podcast}<h1><bdi>{episode}</bdi></h1>\n"


def _meta(attribute: str, name: str, content: str) -> str:
    return f'<meta {attribute}="{name}" content="{_e(content)}">\n'


def render_share(page: ClipPage) -> str:
    story = page.story
    tags = [
        ("name", "description", story.description),
        ("property", "og:type", "website"),
        ("property", "og:site_name", PROVIDER_NAME),
        ("property", "og:title", story.title),
        ("property", "og:description", story.description),
        ("property", "og:url", page.share_url),
        ("property", "og:audio", page.play_url),
        ("property", "og:audio:type", "audio/mpeg"),
        ("name", "twitter:card", "player"),
        ("name", "twitter:title", story.title),
        ("name", "twitter:description", story.description),
        ("name", "twitter:player", page.embed_url),
        ("name", "twitter:player:width", str(EMBED_WIDTH)),
        ("name", "twitter:player:height", str(EMBED_HEIGHT)),
        ("name", "twitter:player:stream", page.play_url),
        ("name", "twitter:player:stream:content_type", "audio/mpeg"),
        ("property", "og:image", page.card_url),
        ("property", "og:image:type", "image/png"),
        ("property", "og:image:width", str(CARD_WIDTH)),
        ("property", "og:image:height", str(CARD_HEIGHT)),
        ("property", "og:image:alt", card_alt(story)),
        ("name", "twitter:image", page.card_url),
    ]
    if page.play_url.startswith("https:"):
        tags.insert(7, ("property", "og:audio:secure_url", page.play_url))
    head = "".join(_meta(*tag) for tag in tags) + (
        f'<link rel="canonical" href="{_e(page.share_url)}">\n'
        f'<link rel="alternate" type="application/json+oembed" href="{_e(page.oembed_url)}" '
        f'title="{_e(story.title)}">\n'
    )
    moment = ""
    if story.link_at_moment:
        moment = (
            f'<p><a href="{_e(story.link_at_moment)}" rel="noopener nofollow">'
            f"Listen to the full episode from {clock(story.start_ms)}</a></p>\n"
        )
    title = f"{story.title} · {story.podcast_title}" if story.podcast_title else story.title
    return (
        _head(title, head)
        + "<body>\n<main>\n"
        + _titles(story)
        + _range_line(story)
        + (waveform_svg(page.waveform) if page.waveform else "")
        + f'<audio controls preload="none" src="{_e(page.play_url)}"></audio>\n'
        + moment
        + "</main>\n</body>\n</html>\n"
    )


def card_alt(story: ClipStory) -> str:
    """What the share card shows, in words (``og:image:alt``); the titles it shows are in ``og:title`` already."""
    end = story.start_ms + story.duration_ms
    return f"The clip's card: its titles, {clock(story.start_ms)} to {clock(end)} in the episode, and its waveform"


SVG_WIDTH, SVG_HEIGHT, SVG_BARS = 720, 112, 90  # whole-number coordinates: a short path


def waveform_svg(peaks: Sequence[Tuple[int, int]]) -> str:
    """The clip's waveform as an inline SVG: SVG_BARS bars (each the loudest of its share of the peaks, scaled to
    the clip's loudest), one path, drawn in the text's accent colour. Numbers only: nothing from a catalog."""
    levels = bar_levels(peaks, SVG_BARS)
    middle, step = SVG_HEIGHT / 2, SVG_WIDTH / SVG_BARS
    strokes = []
    for bar, level in enumerate(levels):
        half = max(1, round(level * (SVG_HEIGHT / 2 - 4)))
        strokes.append(f"M{round(bar * step + step / 2)} {round(middle - half)}V{round(middle + half)}")
    return (
        f'<svg class="wave" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" role="img" aria-label="Waveform of the clip" '
        f'xmlns="http://www.w3.org/2000/svg"><path d="{"".join(strokes)}" stroke="currentColor" '
        f'stroke-width="{round(step * 0.6)}" stroke-linecap="round" fill="none"/></svg>\n'
    )


def render_embed(page: ClipPage) -> str:
    story = page.story
    name = _e(story.episode_title) if story.episode_title else "A podcast clip"
    return (
        _head(story.title).replace('<html lang="en">', '<html lang="en" class="embed">')
        + "<body>\n<main>\n"
        + f'<h1><a href="{_e(page.share_url)}" target="_blank" rel="noopener"><bdi>{name}</bdi></a></h1>\n'
        + _range_line(story).replace('class="range"', 'class="range podcast"')
        + f'<audio controls preload="none" src="{_e(page.play_url)}"></audio>\n'
        + "</main>\n</body>\n</html>\n"
    )


_HEADINGS = {
    400: "This clip link is not valid",
    404: "Clip not found",
    422: "This episode's audio cannot be played",
    501: "Not supported",
    503: "Temporarily unavailable",
}


def error_page(error: ServiceError) -> Response:
    """An HTML page with the clip route's status, its message, and the log fields the middleware would note."""
    note(error=error.code, message=error.message, detail=error.detail)
    heading = _HEADINGS.get(error.status, "Something went wrong")
    body = (
        _head(heading) + f"<body>\n<main>\n<h1>{_e(heading)}</h1>\n<p>{_e(error.message)}</p>\n"
        "</main>\n</body>\n</html>\n"
    )
    csp = f"default-src 'none'; style-src {_STYLE_SOURCE}; base-uri 'none'; form-action 'none'; frame-ancestors *"
    return _html(body, csp, {**error.headers, "Cache-Control": "no-store"}, status=error.status)


def _csp(page: ClipPage, frame_ancestors: str) -> str:
    """Only what the page uses: its inline style (by hash) and the audio: from this service (as reached, and where
    PUBLIC_BASE_URL puts play_url) and where play_url redirects."""
    media = " ".join(dict.fromkeys(source for source in ("'self'", page.play_origin, page.clip_origin) if source))
    return (
        f"default-src 'none'; style-src {_STYLE_SOURCE}; media-src {media}; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}"
    )


def _html(body: str, csp: str, headers: Optional[Dict[str, str]] = None, status: int = 200) -> Response:
    return Response(
        body=body,
        status_code=status,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Cache-Control": PAGE_CACHE_CONTROL,
            **(headers or {}),
        },
    )
