"""The Python client of the mtfleet API.

client = mtfleet.Client("http://mtfleet-api", token)
job = client.submit(input="alpaca.json", output="alpaca.de.json", model="models/opus-mt-en-de",
                    fields=["instruction", "input", "output"])
job.wait(progress=True)
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import quote

import httpx

from mtfleet.errors import ApiError, JobError
from mtfleet.store.states import TERMINAL


class Client:
    """Submits, follows and steers jobs on an mtfleet API server.

    `token` defaults to the environment's MTFLEET_API_TOKEN. Every error the server answers with
    is raised as `ApiError` with the server's one-sentence message and the HTTP status.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout_s: float = 60,
        name: str = "python client",
    ) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("MTFLEET_API_TOKEN")
        # `name` is who the jobs' history says submitted, paused, resumed or cancelled them
        headers = {"X-Mtfleet-Client": name}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, **spec: Any) -> Job:
        """Submits a job: `input`, `output`, `model`, `fields` and any setting of `mtfleet
        translate`, with paths under the server's data root (several target languages as a list,
        `tgt_lang=["mar_Deva", "hin_Deva"]`, with {tgt_lang} in `output`); `job_id` names it (default: derived
        from the spec and input, so submitting it again finds it). An output that exists and is
        not this job's own earlier output is refused unless `overwrite=True`; `keep_work=True`
        keeps the job's units and parts on the server once it has succeeded."""
        return Job(self, self.request("POST", "/v1/jobs", json=spec))

    def jobs(self) -> list[Job]:
        """Every job on the server, oldest first, with its state as of now."""
        return [Job(self, view) for view in self.request("GET", "/v1/jobs")]

    def job(self, job_id: str) -> Job:
        return Job(self, self.request("GET", f"/v1/jobs/{quote(job_id, safe='')}"))

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes: state, CPUs, GPUs, and the translators on each."""
        return self.request("GET", "/v1/nodes")

    def request(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as error:
            raise ApiError(f"Cannot reach the mtfleet API at {self.url}: {error}.") from None
        if response.is_error:
            raise ApiError(_message(response), status=response.status_code)
        return response.json()


class Job:
    """A job on the server. `last` is its status as last seen; `status()` asks again."""

    def __init__(self, client: Client, view: dict[str, Any]) -> None:
        self.client = client
        self.id: str = view["id"]
        self.last = view

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        return self.last["state"]

    def status(self) -> dict[str, Any]:
        """State, rows and segments done, rate, ETA, failures, and translators per node."""
        return self._update("GET", "")

    def pause(self) -> dict[str, Any]:
        """No new leases; shards already leased finish."""
        return self._update("POST", "/pause")

    def resume(self) -> dict[str, Any]:
        return self._update("POST", "/resume")

    def cancel(self) -> dict[str, Any]:
        """Stops the job; its finished parts stay, and submitting it again goes on from them."""
        return self._update("POST", "/cancel")

    def retry(self) -> dict[str, Any]:
        """Translates the failed rows of the succeeded job again, into its output; a job without
        failed rows, or whose parts were removed (no keep_work), is refused (409)."""
        return self._update("POST", "/retry")

    def delete(self) -> dict[str, Any]:
        """Deletes the finished job: its work files and its record on the server (never its
        output); an active job is refused (409)."""
        return self.client.request("DELETE", self._path())

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """The job's history, oldest first: submitted, paused, resumed, cancelled, finished."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.client.request("GET", f"{self._path()}/events?after={after}")
            found += page["events"]
            if page["next_after"] is None:
                return found
            after = page["next_after"]

    def logs(
        self, file: str | None = None, tail: int = 200, offset: int | None = None
    ) -> dict[str, Any]:
        """Lines of one of the job's log files (default its coordinator's): the last `tail`, or
        those from byte `offset` on (`next_offset` of the last answer follows the file)."""
        query = f"tail={tail}" + (f"&file={quote(file)}" if file else "")
        if offset is not None:
            query += f"&offset={offset}"
        return self.client.request("GET", f"{self._path()}/logs?{query}")

    def manifest(self) -> dict[str, Any]:
        """The manifest of a succeeded job: counts, failures, settings and versions."""
        return self.client.request("GET", f"{self._path()}/manifest")

    def wait(
        self, progress: bool = False, poll_s: float = 1.0, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Polls until the job succeeded, failed or was cancelled; returns its last status.

        With `progress`, a progress bar on stderr shows rows, rate and ETA.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with _progress(progress) as bar:
            while True:
                view = self.status()
                if bar is not None:
                    bar.update({**view, "job_id": self.id})
                if view["state"] in TERMINAL:
                    return view
                if deadline is not None and time.monotonic() > deadline:
                    raise JobError(f"Job {self.id} is still {view['state']} after {timeout_s} s.")
                time.sleep(poll_s)

    def _update(self, method: str, action: str) -> dict[str, Any]:
        self.last = self.client.request(method, f"{self._path()}{action}")
        return self.last

    def _path(self) -> str:
        return f"/v1/jobs/{quote(self.id, safe='')}"


def _progress(show: bool) -> AbstractContextManager[Any]:
    if not show:
        return nullcontext()
    from rich.console import Console

    from mtfleet.cli.progress import JobProgress

    return JobProgress(Console(stderr=True))


def _message(response: httpx.Response) -> str:
    """The server's one sentence, or the status line when the answer is not the API's."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    status = f"{response.status_code} {response.reason_phrase}"
    return f"The mtfleet API at {response.url} answered {status}."
