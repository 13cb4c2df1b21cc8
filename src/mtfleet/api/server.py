"""`mtfleet serve`: the REST API (FastAPI on uvicorn), beside or inside the Ray cluster."""

from __future__ import annotations

import hmac
import importlib.metadata
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import ray
import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi import Path as PathParameter
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as RequestCounter
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from mtfleet.api.console import mount_console
from mtfleet.api.flags import flag_routes
from mtfleet.api.history import history_routes
from mtfleet.api.inspection import inspection_routes
from mtfleet.api.jobs import MAX_JOBS, JobService
from mtfleet.api.metrics import FleetCollector, method_label
from mtfleet.api.shards import shard_routes
from mtfleet.api.views import (
    JOB_ID_PATTERN,
    ErrorBody,
    Health,
    JobRequest,
    JobSummary,
    JobView,
    Node,
)
from mtfleet.cluster.runtime import connect
from mtfleet.errors import (
    ApiError,
    DatasetError,
    FieldPathError,
    JobError,
    ModelError,
    MtfleetError,
    OutputError,
    StoreError,
)
from mtfleet.spec import DEFAULT_KEEP_WARM_S, DEFAULT_STATE_DIR, MAX_GPUS
from mtfleet.store import JobState
from mtfleet.wording import NEEDS_TOKEN, WRONG_TOKEN, api_wording

LOOPBACK = "127.0.0.1"
# A token short enough to guess is no token.
MIN_TOKEN_CHARS = 32
DOCS_ASSETS = "/docs/assets"
MAX_BODY_BYTES = 1024 * 1024
# uvicorn waits this long for requests in flight once told to stop (SIGTERM, SIGINT)
GRACEFUL_SHUTDOWN_S = 5
# A 422 names each problem's place; a key a client made up is cut to this length there.
LOCATION_CHARS = 64
# A client names itself in this header (the CLI, the console, the Python client), for the
# history of the jobs it steers.
CLIENT_HEADER = "X-Mtfleet-Client"
ACTOR_CHARS = 100
# module level: FastAPI reads the dependency from the annotation, which must resolve here
Credentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="The server's MTFLEET_API_TOKEN.")),
]
JobId = Annotated[str, PathParameter(pattern=JOB_ID_PATTERN)]
# A job's body is checked in the route, on a worker thread: compiling its patterns never holds
# up the event loop, and so /healthz and every other request.
JobBody = Annotated[dict[str, Any], Body()]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)
}


REMOTE_CODE_REFUSED = (
    "Field trust_remote_code: this server runs no model's own code; "
    "start it with mtfleet serve --allow-remote-code to allow it."
)


@dataclass(frozen=True)
class ServerSettings:
    """What `mtfleet serve` is told: where jobs' files may be, the token, the store, the cluster,
    and the limits that keep a careless or hostile client from hurting the server or the fleet."""

    data_root: Path
    token: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    store_url: str | None = None
    address: str | None = None
    # jobs with trust_remote_code run a model's own code on every node: only when the server says so
    allow_remote_code: bool = False
    # an input with other hard links may be a file outside the data root: only when the server says so
    allow_hardlinks: bool = False
    insecure_no_auth: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    max_jobs: int = MAX_JOBS
    max_gpus: int = MAX_GPUS
    # a job that does not say how long its translators stay warm gets this
    keep_warm_s: float = DEFAULT_KEEP_WARM_S
    # finished jobs that have not changed for this long are deleted; None keeps them
    retain_s: float | None = None

    def check(self) -> None:
        if not self.token and not self.insecure_no_auth:
            raise ApiError(
                "MTFLEET_API_TOKEN is not set; set it, or pass --insecure-no-auth "
                f"to serve on {LOOPBACK} without authentication."
            )
        if self.token and len(self.token) < MIN_TOKEN_CHARS:
            raise ApiError(
                f"MTFLEET_API_TOKEN must be at least {MIN_TOKEN_CHARS} characters, not "
                f"{len(self.token)}; unset, the server generates one."
            )
        for name in ("max_body_bytes", "max_jobs"):
            if getattr(self, name) < 1:
                raise ApiError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.keep_warm_s < 0:
            raise ApiError("--keep-warm must be 0 or more seconds.")
        if self.retain_s is not None and self.retain_s <= 0:
            raise ApiError("--retain must be a positive age, such as 30d.")
        if not 0 <= self.max_gpus <= MAX_GPUS:
            raise ApiError(f"--max-gpus must be between 0 and {MAX_GPUS}.")


class Gate:
    """Refuses a request before its body is read: a /v1 call without the right token (401), a
    body over `max_body_bytes` by its Content-Length or by the bytes that came (413). A body within
    the limit is read whole here and handed on, so no later part reads more than the limit."""

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        if scope["path"].startswith("/v1"):
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            refusal = token_refusal(self.token, authorization)
            if refusal is not None:
                await _answer(send, 401, refusal, {"WWW-Authenticate": "Bearer"})
                return
        too_big = (
            f"The request body is larger than this server's limit of {self.max_body_bytes} bytes "
            "(mtfleet serve --max-body-bytes)."
        )
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            await _answer(send, 413, too_big)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _answer(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _answer(
    send: Send, status: int, error: str, headers: dict[str, str] | None = None
) -> None:
    content = json.dumps({"error": error}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
        *((name.lower().encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": content})


def generate_token() -> str:
    """A random token of MIN_TOKEN_CHARS characters or more, for a server started without one."""
    return secrets.token_urlsafe(MIN_TOKEN_CHARS)


def token_refusal(token: str | None, authorization: str | None) -> str | None:
    """Why a request with this Authorization header may not call /v1; None when it may."""
    if not token:
        return None
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return NEEDS_TOKEN
    # constant time, so the answer's timing tells nothing of the token
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return WRONG_TOKEN
    return None


def create_app(settings: ServerSettings) -> FastAPI:
    """The API over the job store in `settings`; it connects to Ray when it starts."""
    settings.check()
    service = JobService(
        settings.data_root,
        settings.state_dir,
        settings.store_url,
        max_jobs=settings.max_jobs,
        max_gpus=settings.max_gpus,
        keep_warm_s=settings.keep_warm_s,
        allow_hardlinks=settings.allow_hardlinks,
        retain_s=settings.retain_s,
    )
    app = FastAPI(
        title="mtfleet",
        version=importlib.metadata.version("mtfleet"),
        summary="Translate whole datasets with neural MT models on an elastic Ray cluster.",
        lifespan=_lifespan(settings, service),
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs(app)
    _document_job_request(app)
    _handle_errors(app, service)
    app.add_middleware(Gate, token=settings.token, max_body_bytes=settings.max_body_bytes)
    requests = _count_requests(app)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorization(settings))], responses=ERRORS)
    v1.include_router(_job_routes(settings, service))
    v1.include_router(shard_routes(service))
    v1.include_router(flag_routes(service))
    v1.include_router(history_routes(service))
    v1.include_router(inspection_routes(service, allow_remote_code=settings.allow_remote_code))
    app.include_router(v1)
    app.include_router(_health_routes(settings, service, requests))
    mount_console(app)
    return app


def _lifespan(
    settings: ServerSettings, service: JobService
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Connects to Ray (starting a local cluster when there is none) and starts the service;
    stops both when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        started_here = connect(settings.address)
        service.start()
        try:
            yield
        finally:
            service.stop()
            if started_here:
                ray.shutdown()

    return lifespan


def _document_job_request(app: FastAPI) -> None:
    """Adds JobRequest to the OpenAPI document's schemas: the route reads it as a plain body."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate_openapi().setdefault("components", {}).setdefault("schemas", {})
            schemas["JobRequest"] = JobRequest.model_json_schema()
        return app.openapi_schema or generate_openapi()

    app.openapi = openapi  # type: ignore[method-assign]


def _handle_errors(app: FastAPI, service: JobService) -> None:
    """Every error answers one JSON sentence, with paths as the API's clients name them."""

    async def mtfleet_error(_: Request, error: MtfleetError) -> JSONResponse:
        status = _status(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        message = api_wording(service.root.relative(str(error)))
        body: dict[str, Any] = {"error": message}
        if isinstance(error, ApiError) and error.refused:
            body |= {"field": error.field, "problems": [{"field": error.field, "message": message}]}
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(MtfleetError, mtfleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


def _count_requests(app: FastAPI) -> RequestCounter:
    """The counter of the app's requests by method, route and status, kept by a middleware."""
    requests = RequestCounter(
        "mtfleet_api_requests",
        "API requests, by method, route and status.",
        ["method", "route", "status"],
        registry=None,
    )

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[..., Any]) -> Response:
        response = await call_next(request)
        route = _route_template(request)
        requests.labels(method_label(request.method), route, str(response.status_code)).inc()
        return response

    return requests


def _route_template(request: Request) -> str:
    """The request's route as written, `/v1/jobs/{job_id}`, or "unmatched"."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    # a router included in another keeps its own paths (FastAPI 0.165): its prefixes are what
    # the request's path holds before the segments the route matched
    segments = request.scope["path"].split("/")
    return "/".join(segments[: len(segments) - template.count("/")]) + template


def _job_routes(settings: ServerSettings, service: JobService) -> APIRouter:
    """Submit, read, steer and delete jobs; list the nodes. Under /v1, behind the token."""
    router = APIRouter()

    @router.post(
        "/jobs",
        status_code=201,
        summary="Submit a job (201), or find it to resume it (200)",
        responses={
            200: {"model": JobView, "description": "The job existed: found, resumed."},
            429: {"model": ErrorBody, "description": "As many jobs are active as --max-jobs."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}
                },
            }
        },
    )
    def submit(body: JobBody, response: Response, actor: Actor) -> JobView:
        request = job_request(body)
        if request.trust_remote_code and not settings.allow_remote_code:
            raise ApiError(REMOTE_CODE_REFUSED, 400, field="trust_remote_code")
        try:
            view, created = service.submit(request.spec(), request.job_id, actor)
        except MtfleetError as error:
            status = _status(error)
            raise ApiError(
                str(error), status, field=refused_field(error, request), refused=True
            ) from None
        response.status_code = 201 if created else 200
        return view

    @router.get("/jobs", summary="All jobs, oldest first")
    def jobs() -> list[JobSummary]:
        return service.jobs()

    @router.get(
        "/jobs/{job_id}",
        summary="A job: state, progress, rate, ETA, failures, translators per node",
    )
    def job(job_id: JobId) -> JobView:
        return service.job(job_id)

    @router.delete(
        "/jobs/{job_id}",
        summary="Delete a finished job: its work files and record (never its output); 409 if active",
    )
    def delete(job_id: JobId) -> JobSummary:
        return service.delete(job_id)

    _steering_routes(router, service)

    @router.get("/jobs/{job_id}/manifest", summary="The manifest of a succeeded job")
    def manifest(job_id: JobId) -> dict[str, Any]:
        return service.manifest(job_id)

    @router.get("/nodes", summary="The Ray nodes: devices, health, translators")
    def nodes() -> list[Node]:
        return service.nodes()

    return router


def _steering_routes(router: APIRouter, service: JobService) -> None:
    """Pause, resume, cancel and retry a job, each written down with who asked."""

    @router.post("/jobs/{job_id}/pause", summary="No new leases; leased shards finish")
    def pause(job_id: JobId, actor: Actor) -> JobView:
        return service.pause(job_id, actor)

    @router.post("/jobs/{job_id}/resume", summary="Lease shards again")
    def resume(job_id: JobId, actor: Actor) -> JobView:
        return service.resume(job_id, actor)

    @router.post(
        "/jobs/{job_id}/cancel", summary="Stop; finished parts are kept for a resubmission"
    )
    def cancel(job_id: JobId, actor: Actor) -> JobView:
        return service.cancel(job_id, actor)

    @router.post(
        "/jobs/{job_id}/retry",
        summary="Translate a succeeded job's failed rows again into its output; 409 if none",
    )
    def retry(job_id: JobId, actor: Actor) -> JobView:
        return service.retry(job_id, actor)


def _health_routes(
    settings: ServerSettings, service: JobService, requests: RequestCounter
) -> APIRouter:
    """/healthz and /metrics, outside /v1: a probe and a scrape need no token."""
    # Job ids only for a scrape that carries the token: one registry without them, one with.
    public, private = CollectorRegistry(), CollectorRegistry()
    public.register(FleetCollector(service, per_job=False))
    private.register(FleetCollector(service, per_job=True))
    for registry in (public, private):
        registry.register(requests)
    router = APIRouter()

    @router.get(
        "/healthz",
        summary="Alive, with the store reachable and a Ray node alive",
        responses={413: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    def healthz() -> Health:
        nodes_alive = sum(bool(node.get("Alive")) for node in service.cluster_nodes())
        if not nodes_alive:
            raise ApiError("No node of the Ray cluster is alive.", 503)
        running = service.store.jobs.all(JobState.RUNNING)
        return Health(status="ok", jobs_running=len(running), nodes_alive=nodes_alive)

    @router.get(
        "/metrics",
        summary="Prometheus metrics, names prefixed mtfleet_; job ids only with the token",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
            413: {"model": ErrorBody},
        },
    )
    def metrics(request: Request) -> Response:
        authorized = token_refusal(settings.token, request.headers.get("authorization")) is None
        registry = private if authorized else public
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def serve(settings: ServerSettings, host: str = LOOPBACK, port: int = 8000) -> None:
    """Runs the API until interrupted; without a token (--insecure-no-auth) only on loopback."""
    settings.check()
    if settings.insecure_no_auth:
        host = LOOPBACK
    # Connecting here, not in the app, puts a wrong --address before the user as one sentence.
    started_here = connect(settings.address)
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    finally:
        if started_here:
            ray.shutdown()


def client_actor(request: Request) -> str:
    """Who makes the request, for a job's history: the name its client gives (CLIENT_HEADER,
    printable, cut to ACTOR_CHARS) and the address it comes from."""
    named = "".join(char for char in request.headers.get(CLIENT_HEADER, "") if char.isprintable())
    peer = request.client.host if request.client else "unknown address"
    return f"{named.strip()[:ACTOR_CHARS] or 'api client'} at {peer}"


Actor = Annotated[str, Depends(client_actor)]


def _authorization(settings: ServerSettings) -> Callable[..., None]:
    """The token check as a dependency, so the OpenAPI document shows it; the Gate has already
    refused a request without it, before its body was read."""

    def authorized(credentials: Credentials) -> None:
        header = None if credentials is None else f"Bearer {credentials.credentials}"
        refusal = token_refusal(settings.token, header)
        if refusal is not None:
            raise ApiError(refusal, 401)

    return authorized


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its script and stylesheet served from the pinned swagger-ui-bundle
    package: the page loads nothing from another origin."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def job_request(body: dict[str, Any]) -> JobRequest:
    """The body as a job request, or the 422 a body declared as JobRequest would have had."""
    try:
        return JobRequest.model_validate(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors()]
        ) from None


def _status(error: MtfleetError) -> int:
    if isinstance(error, ApiError):
        return error.status or 500
    if isinstance(error, JobError):
        return 409
    if isinstance(error, StoreError):
        return 503
    return 400


async def _http_error(_: Request, error: HTTPException) -> Response:
    """Starlette's own answers (no such route, method not allowed) in the API's error shape."""
    if error.status_code in (204, 304):
        return Response(status_code=error.status_code, headers=error.headers)
    return JSONResponse(
        {"error": f"{error.detail}."}, status_code=error.status_code, headers=error.headers
    )


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """A 422 names each problem's place and kind, never the value sent: it may be huge, or a
    secret pasted into the wrong field."""
    problems = [
        {
            "type": problem["type"],
            "loc": [_location(part) for part in problem["loc"]],
            "msg": _text(problem["msg"]),
        }
        for problem in error.errors()
    ]
    return JSONResponse(
        {
            "error": validation_message(problems),
            "field": _field_of(problems[0]),
            "problems": [
                {"field": _field_of(problem), "message": validation_message([problem])}
                for problem in problems
            ],
            "detail": problems,
        },
        status_code=422,
    )


def _field_of(problem: dict[str, Any]) -> str | None:
    """The body's field a validation problem is about: `beam` of ["body", "beam"]."""
    loc = problem["loc"]
    return str(loc[1]) if len(loc) > 1 and loc[0] == "body" else None


_FIELD_NAMED = re.compile(r"Fields? ([A-Za-z_]+)\b")
_LANGUAGE_CODE = re.compile(r"language code '([^']*)'")


def refused_field(error: MtfleetError, request: JobRequest) -> str | None:
    """The job request's field a refusal of it is about, so that a form shows it there: the one
    its sentence names ("Field output: ..."), else the one its kind of error is about."""
    if isinstance(error, ApiError) and error.field is not None:
        return error.field
    if isinstance(error, FieldPathError):
        return "fields"
    text = str(error)
    named = _FIELD_NAMED.match(text)
    if named and named.group(1) in JobRequest.model_fields:
        return named.group(1)
    code = _LANGUAGE_CODE.search(text)
    if code:
        return "src_lang" if code.group(1) == request.src_lang else "tgt_lang"
    if isinstance(error, OutputError):
        return "output"
    if isinstance(error, DatasetError):
        return "input"
    if isinstance(error, ModelError):
        return "model"
    return None


def _location(part: object) -> str | int:
    if isinstance(part, int):
        return part
    text = _text(str(part))
    return text if len(text) <= LOCATION_CHARS else text[:LOCATION_CHARS] + "..."


def _text(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate a client sent as a key is escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_message(problems: list[dict[str, Any]]) -> str:
    """The first problem of a 422 as one sentence naming the field."""
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"][1:])
    more = f" ({len(problems) - 1} more problems)" if len(problems) > 1 else ""
    if not where:
        return f"The request body is not a job spec: {first['msg']}{more}."
    if first["type"] == "missing":
        return f"Field {where} is required{more}."
    if first["type"] == "extra_forbidden":
        return f"Field {where} is not a job setting{more}."
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"Field {where}: {message}{more}."
