"""A local fake of the Copernicus Climate Data Store retrieve API, for tests without internet.

``cdsapi`` >= 0.7 hands every ``Client(url, key)`` whose key has no ``":"`` to
``ecmwf.datastores.legacy_client.LegacyClient``, which talks the CADS "OGC API - Processes"
dialect. Traced from cdsapi 0.7.7 / ecmwf-datastores-client 0.5.3, ``retrieve(name, request,
target)`` makes exactly these calls (``ROOT`` is the ``url`` given to the client):

* ``GET  ROOT/catalogue/v1/messages`` — once, in ``Client.__init__`` (a failure there is only
  a warning);
* ``GET  ROOT/retrieve/v1/processes/{dataset}`` — the process description;
* ``POST ROOT/retrieve/v1/processes/{dataset}/execution`` — body ``{"inputs": request}``; the
  reply's ``rel="monitor"`` link is the job URL;
* ``GET  ROOT/retrieve/v1/jobs/{id}?log=True&request=True`` — each status poll;
* ``GET  ROOT/retrieve/v1/jobs/{id}`` — once ready, to find the ``rel="results"`` link;
* ``GET  ROOT/retrieve/v1/jobs/{id}/results`` — ``{"asset": {"value": {"href", "file:size",
  "type"}}}``;
* ``HEAD`` then ``GET`` on the asset href — the download, by ``multiurl`` with plain
  ``requests`` (no token, no session); the file size is checked against ``file:size``.

Every API call carries the key in the ``PRIVATE-TOKEN`` header (the download does not). The fake
also answers ``DELETE ROOT/retrieve/v1/jobs/{id}`` (``Client(delete=True)``),
``POST ROOT/profiles/v1/account/verification/pat`` (``check_authentication()``) and
``GET ROOT/profiles/v1/account/licences``. Anything else gets a JSON 404.

Timing, from the client code (not configurable beyond this):

* ``sleep_max`` is both the cap on the sleep between status polls and the fixed pause between
  HTTP retries (``retry_after``); ``retry_max`` is the total number of tries per HTTP call
  (``retry_max=1``: no retry at all). Retried statuses: 408, 429, 500, 502, 503, 504.
* the first sleep between polls is a hard-coded 1.0 s, the next ones ``min(1.5 * previous,
  sleep_max)``, so a job queued for N >= 1 polls costs ``1.0 + (N - 1) * sleep_max`` seconds
  (for ``sleep_max <= 1.5``).
  Keep ``queued_polls`` at 0 in most tests and small (1–2) where polling itself is tested.

Errors, as the caller sees them (``requests.HTTPError`` from ``cads_raise_for_status``):

* 4xx with a JSON body: ``"401 Client Error: Unauthorized for url: <url>\\n<title>\\n<detail>"``;
* 5xx, once the client's own retries are spent:
  ``"500 Server Error: Internal Server Error for url: <url>"`` (the JSON body is not included);
* a responder that raises marks the job ``failed``; the results call then answers 400 and the
  caller gets an ``HTTPError`` carrying the exception text as the traceback.

The key is never in these messages (nor in the fake's bodies), but it is in
``exc.response.request.headers["PRIVATE-TOKEN"]``, and ``cdsapi.Client(debug=True)`` logs it.

Fault injection (``faults={stage: [fault, ...]}``), one fault consumed per call at that stage:
``"submit"`` (``POST .../execution``), ``"poll"`` (``GET .../jobs/{id}``: status polls and the
results-link look-up) or ``"download"`` (the asset ``GET``; ``HEAD`` is never faulted, multiurl
ignores its failures anyway). A fault is an HTTP error status (answered with a JSON problem body),
``"stall"`` (hang for ``stall_seconds``, then close without an answer: the client times out), or,
for downloads, ``"truncate"`` (the full ``Content-Length`` but only half the bytes, then the
connection closes). ``echo_key=True`` makes every error body quote the key it was sent (or its
own, for downloads): a hostile or careless server, to test that callers redact what servers say.

The fake binds to 127.0.0.1 only, and every URL it hands out points back at itself.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["FakeCDS", "FAST_CLIENT_KWARGS"]

#: ``cdsapi.Client`` keyword arguments that keep tests fast: no retries, 0.1 s pauses, no
#: progress bar or log chatter, a short socket timeout.
FAST_CLIENT_KWARGS: dict[str, Any] = {
    "quiet": True,
    "progress": False,
    "retry_max": 1,
    "sleep_max": 0.1,
    "timeout": 10,
}

_HOST = "127.0.0.1"
_STAGES = ("submit", "poll", "download")
_API = "/api"

_STATUS_TITLES = {
    400: "bad request",
    401: "permission denied",
    403: "permission denied",
    404: "not found",
    408: "request timeout",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _result_name(job_id: str, request: dict[str, Any]) -> tuple[str, str]:
    """File name and MIME type of the result asset, from the request's format keys."""
    if str(request.get("download_format", "unarchived")) == "zip":
        return f"{job_id}.zip", "application/zip"
    fmt = str(request.get("data_format", request.get("format", "grib")))
    if fmt in ("netcdf", "netcdf4", "netcdf_legacy"):
        return f"{job_id}.nc", "application/netcdf"
    return f"{job_id}.grib", "application/x-grib"


class _Job:
    def __init__(self, job_id: str, dataset: str, request: dict[str, Any]) -> None:
        self.id = job_id
        self.dataset = dataset
        self.request = request
        self.created = _now()
        self.polls = 0
        self.content: bytes | None = None
        self.error: str | None = None
        self.dismissed = False
        self.filename, self.mime = _result_name(job_id, request)


class FakeCDS:
    """A local fake of the CDS retrieve API (the one cdsapi >= 0.7 talks to through
    ecmwf.datastores' LegacyClient), on 127.0.0.1 with a free port, in a background thread.

    with FakeCDS(responder, key="00000000-fake-token", fail_first=0, queued_polls=0) as cds:
        client = cdsapi.Client(url=cds.url, key=cds.key, quiet=True, progress=False,
                               retry_max=1, sleep_max=0.1)
        client.retrieve("reanalysis-era5-land", {...}, "out.nc")

    ``responder(dataset, request)`` returns the bytes of the result file; it is called once per
    accepted submission (in the server thread). If it raises, the job ends ``failed``.

    ``fail_first=N``: the first N job submissions (``POST .../execution``) answer
    ``fail_status`` with a JSON error body. ``queued_polls=N``: a job answers ``accepted`` on
    the first status poll and ``running`` on the next ones until N polls have been answered,
    then ``successful`` (an attribute: set it to 0 to let queued jobs finish). ``faults``,
    ``stall_seconds`` and ``echo_key``: see the module docstring. ``reject_wrong_key``: API calls whose ``PRIVATE-TOKEN`` is missing or
    differs from ``key`` get 401 (the catalogue and the process description stay public, as on
    the real service).

    Attributes for assertions: ``requests`` — (dataset, request) of every job created, in order
    (rejected/failed submissions are not jobs); ``submissions`` — every submission attempt,
    including those answered with an error; ``tokens_seen`` — every ``PRIVATE-TOKEN`` value
    received; ``calls`` — (method, path) of every HTTP request, in order; ``faults`` — the faults
    not served yet; ``deleted`` — ids of the jobs deleted by the client.
    """

    url: str
    key: str
    requests: list[tuple[str, dict]]
    tokens_seen: set[str]

    def __init__(
        self,
        responder: Callable[[str, dict], bytes],
        key: str = "00000000-fake-token",
        fail_first: int = 0,
        fail_status: int = 500,
        queued_polls: int = 0,
        reject_wrong_key: bool = True,
        faults: dict[str, list[int | str]] | None = None,
        stall_seconds: float = 2.0,
        echo_key: bool = False,
    ) -> None:
        if ":" in key:
            # cdsapi sends "UID:KEY" keys to the retired pre-2024 API, which this fake is not.
            raise ValueError("the key must not contain ':' (cdsapi would use the legacy API)")
        if not 400 <= fail_status <= 599:
            raise ValueError(f"fail_status must be an HTTP error status, got {fail_status}")
        if fail_first < 0 or queued_polls < 0:
            raise ValueError("fail_first and queued_polls must be >= 0")
        self.responder = responder
        self.key = key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.queued_polls = queued_polls
        self.reject_wrong_key = reject_wrong_key
        self.faults = {stage: list(items) for stage, items in (faults or {}).items()}
        for stage, items in self.faults.items():
            if stage not in _STAGES:
                raise ValueError(f"unknown fault stage {stage!r}; valid: {', '.join(_STAGES)}")
            for item in items:
                if not (item == "stall" or item == "truncate" and stage == "download"
                        or isinstance(item, int) and 400 <= item <= 599):
                    raise ValueError(f"bad fault {item!r} for stage {stage!r}")
        self.stall_seconds = stall_seconds
        self.echo_key = echo_key
        self.deleted: list[str] = []
        self._stopping = threading.Event()
        self.requests = []
        self.submissions = 0
        self._failures_left = fail_first
        self.tokens_seen = set()
        self.calls: list[tuple[str, str]] = []
        self.url = ""
        self.port = 0
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeCDS:
        if self._server is not None:
            raise RuntimeError("FakeCDS already started")
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer((_HOST, 0), handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://{_HOST}:{self.port}{_API}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"FakeCDS:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeCDS:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def client(self, **overrides: Any) -> Any:
        """A real ``cdsapi.Client`` pointed at this fake, with ``FAST_CLIENT_KWARGS``."""
        import cdsapi

        kwargs = {**FAST_CLIENT_KWARGS, **overrides}
        return cdsapi.Client(url=self.url, key=self.key, **kwargs)

    # -- state used by the handler ---------------------------------------------------------------

    def _job_doc(self, job: _Job, status: str, base: str, query: dict[str, list[str]]
                 ) -> dict[str, Any]:
        job_url = f"{base}/retrieve/v1/jobs/{job.id}"
        doc: dict[str, Any] = {
            "processID": job.dataset,
            "type": "process",
            "jobID": job.id,
            "status": status,
            "created": job.created,
            "updated": _now(),
            "links": [{"href": job_url, "rel": "self", "type": "application/json"}],
        }
        if status in ("running", "successful", "failed"):
            doc["started"] = job.created
        if status in ("successful", "failed"):
            doc["finished"] = doc["updated"]
            doc["links"].append({"href": f"{job_url}/results", "rel": "results",
                                 "type": "application/json"})
        metadata: dict[str, Any] = {}
        if _truthy(query.get("request")):
            metadata["request"] = {"ids": job.request}
        if _truthy(query.get("log")):
            metadata["log"] = []
        if metadata:
            doc["metadata"] = metadata
        return doc

    def _next_fault(self, stage: str) -> int | str | None:
        """Consume and return the next fault of ``stage`` (None: answer normally)."""
        with self._lock:
            items = self.faults.get(stage)
            return items.pop(0) if items else None

    def _poll_status(self, job: _Job) -> str:
        """Advance the job by one poll and return its status."""
        with self._lock:
            job.polls += 1
            polls = job.polls
        if job.dismissed:
            return "dismissed"
        if polls <= self.queued_polls:
            return "accepted" if polls == 1 else "running"
        return "failed" if job.error is not None else "successful"

    def _ready_status(self, job: _Job) -> str:
        if job.polls <= self.queued_polls:
            return "running"
        return "failed" if job.error is not None else "successful"


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _error_body(status: int, detail: str | None = None, title: str | None = None,
                instance: str | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 7807 problem document, as the CADS processing API returns."""
    title = title or _STATUS_TITLES.get(status, "error")
    body: dict[str, Any] = {"type": title, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body["trace_id"] = uuid.uuid4().hex
    body.update(extra)
    return body


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCDS  # set on the per-instance subclass
    server_version = "FakeCDS/1.0"
    error_content_type = "application/json"

    # -- plumbing --------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def _base(self) -> str:
        return f"http://{_HOST}:{self.fake.port}{_API}"

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error_json(self, status: int, detail: str | None = None, **kw: Any) -> None:
        if self.fake.echo_key:  # the key sent, or (downloads send none) the one it expects
            key = self.headers.get("PRIVATE-TOKEN") or self.fake.key
            detail = f"{detail or 'error'} (request made with key {key})"
        self._send_json(status, _error_body(status, detail, instance=self._full_url(), **kw))

    def _full_url(self) -> str:
        return f"http://{_HOST}:{self.fake.port}{self.path}"

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _authorised(self) -> bool:
        token = self.headers.get("PRIVATE-TOKEN")
        if not self.fake.reject_wrong_key:
            return True
        if not token:
            self._send_error_json(401, "Authentication required")
            return False
        if token != self.fake.key:
            # never echo the token back
            self._send_error_json(401, "Authentication failed")
            return False
        return True

    def _fault(self, stage: str) -> bool:
        """Serve the next fault of ``stage``, if any; True when that answered the request."""
        fault = self.fake._next_fault(stage)
        self._truncate = fault == "truncate"
        if fault is None or fault == "truncate":
            return False
        if fault == "stall":
            self.fake._stopping.wait(self.fake.stall_seconds)
            self.close_connection = True  # no answer at all
            return True
        self._send_error_json(int(fault), f"simulated {stage} failure (FakeCDS)")
        return True

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        query = parse_qs(parts.query)
        token = self.headers.get("PRIVATE-TOKEN")
        with self.fake._lock:
            self.fake.calls.append((self.command, parts.path))
            if token:
                self.fake.tokens_seen.add(token)
        try:
            self._route(self.command, path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # a bug in the fake: answer like the real service would
            self._send_error_json(500, traceback.format_exc(limit=3))

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _dispatch

    # -- routes ----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        if path.startswith("/download/"):
            return self._download(method, path)
        if not path.startswith(_API + "/"):
            return self._send_error_json(404, f"no such resource: {path}")
        seg = [unquote(s) for s in path[len(_API) + 1:].split("/")]

        if seg == ["catalogue", "v1", "messages"] and method == "GET":
            return self._send_json(200, {"messages": []})

        if seg[:2] == ["profiles", "v1"]:
            if not self._authorised():
                return None
            if seg[2:] == ["account", "verification", "pat"] and method == "POST":
                return self._send_json(200, {"id": 1, "sub": "fake-user", "role": "user"})
            if seg[2:] == ["account", "licences"] and method == "GET":
                return self._send_json(200, {"licences": []})
            return self._send_error_json(404, f"no such resource: {path}")

        if seg[:2] != ["retrieve", "v1"]:
            return self._send_error_json(404, f"no such resource: {path}")
        rest = seg[2:]

        if len(rest) == 2 and rest[0] == "processes" and method == "GET":
            return self._process_description(rest[1])
        if len(rest) == 3 and rest[0] == "processes" and rest[2] == "execution" \
                and method == "POST":
            return self._submit(rest[1])
        if len(rest) >= 2 and rest[0] == "jobs":
            if not self._authorised():
                return None
            job = self.fake._jobs.get(rest[1])
            if job is None:
                return self._send_error_json(404, f"job {rest[1]} not found",
                                             title="job not found")
            if len(rest) == 2 and method == "GET":
                if self._fault("poll"):
                    return None
                status = self.fake._poll_status(job)
                return self._send_json(200, self.fake._job_doc(job, status, self._base(), query))
            if len(rest) == 2 and method == "DELETE":
                # ``Client(delete=True)`` deletes the job as soon as its Remote is garbage, i.e.
                # before the download: the job is dismissed, its cached asset stays downloadable.
                with self.fake._lock:
                    job.dismissed = True
                    self.fake.deleted.append(job.id)
                return self._send_json(200, self.fake._job_doc(job, "dismissed", self._base(), {}))
            if len(rest) == 3 and rest[2] == "results" and method == "GET":
                return self._results(job)
        return self._send_error_json(404, f"no such resource: {method} {path}")

    def _process_description(self, dataset: str) -> None:
        base = self._base()
        self._send_json(200, {
            "id": dataset,
            "title": f"Retrieve of {dataset}",
            "version": "1.0.0",
            "jobControlOptions": ["async-execute"],
            "outputTransmission": ["reference"],
            "inputs": {},
            "outputs": {"asset": {"title": "Asset", "schema": {"type": "object"}}},
            "links": [
                {"href": f"{base}/retrieve/v1/processes/{quote(dataset)}", "rel": "self",
                 "type": "application/json"},
            ],
            "messages": [],
        })

    def _submit(self, dataset: str) -> None:
        fake = self.fake
        body = self._read_json()  # always drain the body before answering
        with fake._lock:
            fake.submissions += 1
        if not self._authorised():
            return None
        with fake._lock:
            fake._failures_left, failing = max(fake._failures_left - 1, 0), fake._failures_left > 0
        if failing:
            return self._send_error_json(fake.fail_status, "simulated failure (FakeCDS)")
        if self._fault("submit"):
            return None
        request = body.get("inputs", {}) if isinstance(body, dict) else {}
        job = _Job(str(uuid.uuid4()), dataset, request)
        try:
            content = fake.responder(dataset, request)
            if not isinstance(content, (bytes, bytearray, memoryview)):
                raise TypeError(f"responder returned {type(content).__name__}, not bytes")
            job.content = bytes(content)
        except Exception as exc:  # the job fails, as a real one would
            job.error = f"{type(exc).__name__}: {exc}"
        with fake._lock:
            fake._jobs[job.id] = job
            fake.requests.append((dataset, request))
        doc = fake._job_doc(job, "accepted", self._base(), {})
        doc["links"] = [{"href": f"{self._base()}/retrieve/v1/jobs/{job.id}", "rel": "monitor",
                         "type": "application/json", "title": "job status info"}]
        self._send_json(201, doc)

    def _results(self, job: _Job) -> None:
        if job.dismissed:
            return self._send_error_json(404, f"job {job.id} not found", title="job not found")
        status = self.fake._ready_status(job)
        if status == "failed":
            return self._send_error_json(400, "the job has failed", title="The job has failed",
                                         traceback=job.error)
        if status != "successful" or job.content is None:
            return self._send_error_json(404, f"status of {job.id} is {status!r}",
                                         title="results not ready")
        href = f"http://{_HOST}:{self.fake.port}/download/{job.id}/{job.filename}"
        self._send_json(200, {"asset": {"value": {
            "type": job.mime,
            "href": href,
            "file:size": len(job.content),
            "file:checksum": uuid.uuid5(uuid.NAMESPACE_OID, job.id).hex,
            "file:local_path": f"s3://fake-cds-cache/{job.filename}",
        }}})

    def _download(self, method: str, path: str) -> None:
        seg = path.split("/")  # ["", "download", job_id, filename]
        job = self.fake._jobs.get(seg[2]) if len(seg) == 4 else None
        if job is None or job.content is None or seg[3] != job.filename \
                or method not in ("GET", "HEAD"):
            return self._send_error_json(404, "no such asset")
        if method == "GET" and self._fault("download"):
            return None
        data = job.content
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng[6:].endswith("-") \
                and rng[6:-1].isdigit() and int(rng[6:-1]) < len(data):
            start = int(rng[6:-1])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", job.mime)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if method == "GET":
            body = data[start:]
            if getattr(self, "_truncate", False):  # promise everything, send half, hang up
                body = body[:len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)
