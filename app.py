"""Audio clip service: the routes, events and schedule. The logic lives in chalicelib/."""

from chalice import Chalice, Rate

from chalicelib import wiring
from chalicelib.clips import cleanup
from chalicelib.ops import health, logs, tracing
from chalicelib.web import api, links, middleware, pages, params, pictures

app = Chalice(app_name="audio-clips")
logs.configure()
app.log.addFilter(middleware.unhandled_view_error)  # a view's exception reaches the middleware's catch-all
settings = wiring.current().declared  # read and validated at start: a bad variable fails here, by name


@app.middleware("http")
def contract_errors_cors_and_request_log(event, get_response):
    return middleware.serve(event, get_response, wiring.current().declared.cors_allow_origins)


@app.middleware("all")
def xray_tracing(event, get_response):  # TRACING=true (a stage option): the Tracer is imported on first use only
    return tracing.around(wiring.current().declared.tracing, tracing.event_name(event), lambda: get_response(event))


@app.route("/api/v1/audio_clips/{episode_id}", methods=["GET"])
def get_audio_clip(episode_id):
    request = params.parse_clip_request(
        episode_id, params.query_params(app.current_request), wiring.current().declared.max_clip_ms
    )
    result = wiring.current().clips.get_clip(request.clip, params.deadline(app.lambda_context))
    base = links.base_url(app.current_request, wiring.current().declared.public_base_url)
    return api.clip_response(result, request, base)


@app.route("/api/v1/audio_clips/{episode_id}", methods=["OPTIONS"])
def audio_clip_preflight(episode_id):
    return middleware.preflight()


@app.route("/api/v1/audio_clips/{episode_id}/waveform", methods=["GET"])
def get_clip_waveform(episode_id):
    return pictures.waveform_response(
        app.current_request, wiring.current(), episode_id, params.deadline(app.lambda_context)
    )


@app.route("/clips/{episode_id}", methods=["GET"])
def clip_share_page(episode_id):
    return pages.share_page(app.current_request, wiring.current(), episode_id, params.deadline(app.lambda_context))


@app.route("/clips/{episode_id}/card.png", methods=["GET"])
def clip_card(episode_id):
    return pictures.card_response(
        app.current_request, wiring.current(), episode_id, params.deadline(app.lambda_context)
    )


@app.route("/clips/{episode_id}/embed", methods=["GET"])
def clip_embed_page(episode_id):
    return pages.embed_page(app.current_request, wiring.current(), episode_id, params.deadline(app.lambda_context))


@app.route("/api/v1/oembed", methods=["GET"])
def clip_oembed():
    return pages.oembed(app.current_request, wiring.current(), params.deadline(app.lambda_context))


@app.route("/api/v1/openapi.json", methods=["GET"])
def openapi():
    return api.openapi_document()


@app.route("/api/v1/health", methods=["GET"])
def get_health():
    return api.health_response(wiring.current(), params.boolean(params.query_params(app.current_request), "deep"))


# SOURCE_EVENTS (a stage setting): an EventBridge rule on the source bucket's audio keys, or, for a bucket this
# service alone is notified of, a direct S3 notification. The one handler reads both shapes.
source_events = (
    app.on_cw_event(cleanup.event_pattern(settings.source_bucket), name="cleanup_clips")
    if settings.source_events == "eventbridge"
    else app.on_s3_event(
        bucket=settings.source_bucket, events=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], name="cleanup_clips"
    )
)


@source_events
def cleanup_clips(event):
    request_id = getattr(event.context, "aws_request_id", "-")
    cleanup.handle_source_event(
        event.to_dict(),
        wiring.current().cleanup,
        request_id,
        wiring.current().indexer.for_invocation(event.context),
        cleanup.invocation_deadline(event.context),
    )


cleanup_clips.event_class = cleanup.AnySourceEvent  # either shape reaches the handler, whichever trigger is deployed


@app.schedule(Rate(settings.health_check_rate_minutes, unit=Rate.MINUTES))
def health_check(event):
    return health.scheduled_run(wiring.current(), getattr(event.context, "aws_request_id", "-"))
