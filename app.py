"""Audio clip service: the routes, events and schedule. The logic lives in chalicelib/."""
from chalice import Chalice, Rate

from chalicelib import api, cleanup, health, logs, wiring

app = Chalice(app_name="audio-clips")
logs.configure()
settings = wiring.current().declared  # read and validated at start: a bad variable fails here, by name


@app.middleware("http")
def contract_errors_cors_and_request_log(event, get_response):
    return api.serve(event, get_response, wiring.current().declared.cors_allow_origins)


@app.route("/api/v1/audio_clips/{episode_id}", methods=["GET"])
def get_audio_clip(episode_id):
    request = api.parse_clip_request(episode_id, api.query_params(app.current_request),
                                     wiring.current().declared.max_clip_ms)
    result = wiring.current().clips.get_clip(request.clip, api.deadline(app.lambda_context))
    return api.clip_response(result, request.redirect)


@app.route("/api/v1/audio_clips/{episode_id}", methods=["OPTIONS"])
def audio_clip_preflight(episode_id):
    return api.preflight()


@app.route("/api/v1/openapi.json", methods=["GET"])
def openapi():
    return api.openapi_document()


@app.route("/api/v1/health", methods=["GET"])
def get_health():
    return api.health_response(wiring.current(), api.boolean(api.query_params(app.current_request), "deep"))


@app.on_s3_event(bucket=settings.source_bucket, events=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"])
def cleanup_clips(event):
    request_id = getattr(event.context, "aws_request_id", "-")
    cleanup.handle_s3_event(event.to_dict(), wiring.current().cleanup, request_id)


@app.schedule(Rate(settings.health_check_rate_minutes, unit=Rate.MINUTES))
def health_check(event):
    return health.scheduled_run(wiring.current(), getattr(event.context, "aws_request_id", "-"))
