"""`mtfleet serve`: the REST API (FastAPI on uvicorn), beside or inside the Ray cluster."""

from __future__ import annotations

import hmac
import importlib.metadata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import ray
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as RequestCounter

from mtfleet.api.console import mount_console
from mtfleet.api.jobs import JobService
from mtfleet.api.metrics import FleetCollector
from mtfleet.api.paths import DataRoot
from mtfleet.api.shards import shard_routes
from mtfleet.api.views import ErrorBody, Health, JobRequest, JobSummary, JobView, Node
from mtfleet.cluster.runtime import connect
from mtfleet.errors import ApiError, JobError, MtfleetError, StoreError
from mtfleet.store import JobState

LOOPBACK = "127.0.0.1"
# module level: FastAPI reads the dependency from the annotation, which must resolve here
Credentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="The server's MTFLEET_API_TOKEN.")),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 422, 503)
}


REMOTE_CODE_REFUSED = (
    "Field trust_remote_code: this server runs no model's own code; "
    "start it with mtfleet serve --allow-remote-code to allow it."
)


@dataclass(frozen=True)
class ServerSettings:
    """What `mtfleet serve` is told: where jobs' files may be, the token, the store, the cluster."""

    data_root: Path
    token: str | None = None
    state_dir: Path = Path(".mtfleet")
    store_url: str | None = None
    address: str | None = None
    # jobs with trust_remote_code run a model's own code on every node: only when the server says so
    allow_remote_code: bool = False
    insecure_no_auth: bool = False

    def check(self) -> None:
        if not self.token and not self.insecure_no_auth:
            raise ApiError(
                "MTFLEET_API_TOKEN is not set; set it, or pass --insecure-no-auth "
                f"to serve on {LOOPBACK} without authentication."
            )


def create_app(settings: ServerSettings) -> FastAPI:
    """The API over the job store in `settings`; it connects to Ray when it starts."""
    settings.check()
    data_root = DataRoot(settings.data_root)
    service = JobService(settings.state_dir, settings.store_url)
    registry = CollectorRegistry()
    registry.register(FleetCollector(service))
    requests = RequestCounter(
        "mtfleet_api_requests",
        "API requests, by method, route and status.",
        ["method", "route", "status"],
        registry=registry,
    )

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

    app = FastAPI(
        title="mtfleet",
        version=importlib.metadata.version("mtfleet"),
        summary="Translate whole datasets with neural MT models on an elastic Ray cluster.",
        lifespan=lifespan,
    )
    app.add_exception_handler(MtfleetError, _mtfleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[..., Any]) -> Response:
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        return response

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorization(settings))], responses=ERRORS)

    @v1.post(
        "/jobs",
        status_code=201,
        summary="Submit a job (201), or find it to resume it (200)",
        responses={200: {"model": JobView, "description": "The job existed: found, resumed."}},
    )
    def submit(request: JobRequest, response: Response) -> JobView:
        if request.trust_remote_code and not settings.allow_remote_code:
            raise ApiError(REMOTE_CODE_REFUSED, 400)
        view, created = service.submit(data_root.contain(request.spec()), request.job_id)
        response.status_code = 201 if created else 200
        return view

    @v1.get("/jobs", summary="All jobs, oldest first")
    def jobs() -> list[JobSummary]:
        return service.jobs()

    @v1.get(
        "/jobs/{job_id}",
        summary="A job: state, progress, rate, ETA, failures, translators per node",
    )
    def job(job_id: str) -> JobView:
        return service.job(job_id)

    @v1.post("/jobs/{job_id}/pause", summary="No new leases; leased shards finish")
    def pause(job_id: str) -> JobView:
        return service.pause(job_id)

    @v1.post("/jobs/{job_id}/resume", summary="Lease shards again")
    def resume(job_id: str) -> JobView:
        return service.resume(job_id)

    @v1.post("/jobs/{job_id}/cancel", summary="Stop; finished parts are kept for a resubmission")
    def cancel(job_id: str) -> JobView:
        return service.cancel(job_id)

    @v1.get("/jobs/{job_id}/manifest", summary="The manifest of a succeeded job")
    def manifest(job_id: str) -> dict[str, Any]:
        return service.manifest(job_id)

    @v1.get("/nodes", summary="The Ray nodes: devices, health, translators")
    def nodes() -> list[Node]:
        return service.nodes()

    v1.include_router(shard_routes(service))
    app.include_router(v1)

    @app.get(
        "/healthz",
        summary="Alive, with the store and Ray reachable",
        responses={503: {"model": ErrorBody}},
    )
    def healthz() -> Health:
        running = service.store.list_jobs(JobState.RUNNING)
        nodes_alive = sum(bool(node.get("Alive")) for node in ray.nodes())
        return Health(status="ok", jobs_running=len(running), nodes_alive=nodes_alive)

    @app.get(
        "/metrics", summary="Prometheus metrics, names prefixed mtfleet_", response_class=Response
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    mount_console(app)
    return app


def serve(settings: ServerSettings, host: str = LOOPBACK, port: int = 8000) -> None:
    """Runs the API until interrupted; without a token (--insecure-no-auth) only on loopback."""
    settings.check()
    if settings.insecure_no_auth:
        host = LOOPBACK
    # Connecting here, not in the app, puts a wrong --address before the user as one sentence.
    started_here = connect(settings.address)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        if started_here:
            ray.shutdown()


def _authorization(settings: ServerSettings) -> Callable[..., None]:
    expected = (settings.token or "").encode()

    def authorized(credentials: Credentials) -> None:
        if not settings.token:
            return
        if credentials is None:
            raise ApiError(
                "This call needs the header 'Authorization: Bearer <MTFLEET_API_TOKEN>'.", 401
            )
        # constant time, so the answer's timing tells nothing of the token
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ApiError("The API token is wrong.", 401)

    return authorized


def _status(error: MtfleetError) -> int:
    if isinstance(error, ApiError):
        return error.status or 500
    if isinstance(error, JobError):
        return 409
    if isinstance(error, StoreError):
        return 503
    return 400


async def _mtfleet_error(_: Request, error: MtfleetError) -> JSONResponse:
    status = _status(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": str(error)}, status_code=status, headers=headers)


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    return JSONResponse(
        {"error": validation_message(problems), "detail": jsonable_encoder(problems)},
        status_code=422,
    )


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
    return f"Field {where}: {first['msg']}{more}."
