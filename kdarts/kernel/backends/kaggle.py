"""The Kaggle backend: push bundles, follow versions, pull output and publish datasets on Kaggle.

Every call goes through the official `kaggle` client (tested with 2.2.5 and kagglesdk 0.1.38).
The backend adds what the client leaves out. Every call is retried with backoff (the client
retries only dataset and upload calls) and every request has a timeout. Status is pinned to the
pushed version, output downloads cover all pages and never write outside the target folder, and
a new dataset version is ready before anything uses it.

Credentials are read the way the client reads them: an access token in `KAGGLE_API_TOKEN` (or
`~/.kaggle/access_token`), `kaggle.json` in `KAGGLE_CONFIG_DIR` or `~/.kaggle`, or
`KAGGLE_USERNAME` and `KAGGLE_KEY`. Two variables of kdarts' own change where calls go:

    KDARTS_KAGGLE_ENDPOINT      send every call to this http:// or https:// URL (for example
                                the one `kdarts-kernel emulate` prints); `endpoint_url()` returns
                                the URL in use
    KDARTS_KAGGLE_POLL_SECONDS  seconds between status polls while waiting (default 15)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from kdarts.errors import BackendError
from kdarts.kernel.backends.base import Backend, DatasetVersion, KernelState, KernelStatus, PushResult, register_backend
from kdarts.kernel.backends.local import default_home
from kdarts.kernel.render import KAGGLE_SOURCE_LIMIT, METADATA_FILE, Bundle
from kdarts.kernel.retry import Failure, RetryPolicy, call_with_retry, classify

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENDPOINT_VARIABLE = "KDARTS_KAGGLE_ENDPOINT"
# The base URLs kagglesdk 0.1.38 sends calls to (kaggle_env._env_to_endpoint): KaggleEnv.PROD, and
# KaggleEnv.LOCAL, which the backend selects with KAGGLE_API_ENVIRONMENT=LOCALHOST.
KAGGLE_API_URL = "https://api.kaggle.com"
LOCALHOST_API_URL = "http://localhost"
POLL_VARIABLE = "KDARTS_KAGGLE_POLL_SECONDS"
TOKEN_PAGE = "https://www.kaggle.com/settings/api"
DATASET_METADATA_FILE = "dataset-metadata.json"
DATASET_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{4,48}[a-z0-9]$")
# The client's ValueError when a blob upload ends unfinished (kaggle 2.2.5). Its upload state
# stays in $TMPDIR/.kaggle-uploads-<uid>/, so another attempt resumes the upload.
UPLOAD_FAILED = "Upload unsuccessful"
# kagglesdk's KernelWorkerStatus names, mapped to kdarts states.
KERNEL_STATES: dict[str, KernelState] = {
    "QUEUED": "queued",
    "NEW_SCRIPT": "queued",
    "RUNNING": "running",
    "CANCEL_REQUESTED": "running",
    "COMPLETE": "complete",
    "ERROR": "error",
    "CANCEL_ACKNOWLEDGED": "cancelled",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FAILED_CELL = re.compile(r'Exception encountered at "In \[(\d+)\]"')
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure))(?::\s?(.*))?$")


class KaggleApiError(BackendError):
    """A Kaggle call failed; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@register_backend
class KaggleBackend(Backend):
    """Run bundles as Kaggle kernels and keep their datasets on Kaggle."""

    name = "kaggle"

    def __init__(
        self,
        *,
        owner: str | None = None,
        endpoint: str | None = None,
        poll_seconds: float | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        dataset_timeout: float = 1800.0,
        license_name: str = "other",
        page_size: int = 100,
    ):
        if endpoint:
            self.endpoint: str | None = check_endpoint(endpoint, "endpoint")
        else:
            configured = os.environ.get(ENDPOINT_VARIABLE)
            self.endpoint = check_endpoint(configured) if configured else None
        self.poll_seconds = poll_seconds if poll_seconds is not None else _float_variable(POLL_VARIABLE, 15.0)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.dataset_timeout = dataset_timeout
        self.license_name = license_name
        self.page_size = page_size
        self._diagnosed: dict[tuple[str, int], KernelStatus] = {}
        self._endpoint_url = self.endpoint or _client_endpoint()
        if self.endpoint:
            logger.info("sending Kaggle calls to %s (%s)", self.endpoint, ENDPOINT_VARIABLE)
        self.api = _new_api(self.endpoint, self.timeout)
        self._user, self.credential_source = _authenticate(self.api, self.endpoint)
        self._owner = owner or self._user

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def endpoint_url(self) -> str:
        """The base URL this backend sends calls to, in the form `endpoint_url()` returns."""
        return self._endpoint_url

    # Calls --------------------------------------------------------------------------------------

    def _call(self, action: str, func: Callable[[], T], *, before_retry: Callable[[Failure], T | None] | None = None) -> T:
        """Run a client call described by `action` with retries and timeouts; raise every failure as a KaggleApiError."""
        try:
            return call_with_retry(lambda: _quiet(func), action=action, policy=self.retry, classify_error=_classify, before_retry=before_retry)
        except requests.HTTPError as error:
            raise self._http_error(action, error) from error
        except (requests.RequestException, OSError) as error:
            raise KaggleApiError(f"{action} failed: {type(error).__name__}: {error}; check the network connection and try again") from error
        except ValueError as error:
            raise KaggleApiError(f"{action} failed: {error}") from error

    def _http_error(self, action: str, error: requests.HTTPError) -> KaggleApiError:
        status = error.response.status_code if error.response is not None else None
        message = _server_message(error)
        if status == 401:
            return KaggleApiError(
                f"{action} failed: Kaggle rejected {self.credential_source.description} for user {self._user} "
                f"(HTTP 401: {message}); {self.credential_source.fix}",
                status,
            )
        return KaggleApiError(f"{action} failed: HTTP {status}: {message}", status)

    def _client(self) -> Any:
        return self.api.build_kaggle_client()

    # Kernels ------------------------------------------------------------------------------------

    def push(self, bundle: Bundle, *, session_limit: float | None = None) -> PushResult:
        metadata = bundle.metadata or json.loads((bundle.folder / METADATA_FILE).read_text())
        ref = metadata["id"]
        if bundle.size >= KAGGLE_SOURCE_LIMIT:
            raise BackendError(
                f"{bundle.notebook} is {bundle.size:,} bytes, but Kaggle rejects kernel sources of "
                f"{KAGGLE_SOURCE_LIMIT:,} bytes or more; move large files into an attached dataset"
            )
        before = self.latest_version(ref) or 0
        timeout = str(int(session_limit)) if session_limit else None

        def recover(failure: Failure) -> Any:
            # A push is not idempotent. When its response was lost, Kaggle may have started the
            # version anyway, and pushing again would start a second one.
            try:
                current = self.latest_version(ref) or 0
            except BackendError:
                return None
            if current > before:
                logger.warning("the response to the push of %s was lost (%s), but version %d exists; adopting it", ref, failure.reason, current)
                return self._adopt_push(ref, current, metadata)
            return None

        response = self._call(
            f"push of {ref}", lambda: self.api.kernels_push(str(bundle.folder), timeout=timeout), before_retry=recover
        )
        if isinstance(response, PushResult):
            return response
        return self._check_push(ref, response)

    def _check_push(self, ref: str, response: Any) -> PushResult:
        if response is None:
            raise KaggleApiError(f"push of {ref} failed: the client returned no response")
        if response.error:
            raise KaggleApiError(f"Kaggle rejected the push of {ref}: {response.error}")
        pushed_ref = _ref_from_url(response.url) or ref
        version = response.version_number or self.latest_version(pushed_ref)
        invalid = {
            "dataset": response.invalid_dataset_sources,
            "kernel": response.invalid_kernel_sources,
            "competition": response.invalid_competition_sources,
            "model": response.invalid_model_sources,
        }
        rejected = "; ".join(f"{kind} sources {', '.join(sources)}" for kind, sources in invalid.items() if sources)
        if rejected:
            raise KaggleApiError(
                f"Kaggle started {pushed_ref} version {version} but rejected its {rejected}, so it runs without them; "
                "publish the missing datasets or fix the names in the kernel spec, then push again"
            )
        if pushed_ref != ref:
            logger.warning("Kaggle filed %s as %s (its title's slug); following %s", ref, pushed_ref, pushed_ref)
        if not version:
            raise KaggleApiError(f"push of {pushed_ref} failed: Kaggle returned no version number")
        logger.info("pushed %s as version %d to Kaggle (%s)", pushed_ref, version, response.url)
        return PushResult(ref=pushed_ref, version=int(version), url=response.url or None)

    def _adopt_push(self, ref: str, version: int, metadata: dict[str, Any]) -> PushResult:
        """Return a push whose response was lost, checking its sources as the response would have."""
        response = self._get_kernel(ref, version)
        attached = set(response.metadata.dataset_data_sources or [])
        missing = [source for source in metadata.get("dataset_sources", []) if source not in attached]
        if missing:
            raise KaggleApiError(
                f"Kaggle started {ref} version {version} without the dataset sources {', '.join(missing)}; "
                "publish them or fix the names in the kernel spec, then push again"
            )
        return PushResult(ref=ref, version=version, url=None)

    def _get_kernel(self, ref: str, version: int | None = None) -> Any:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

        owner, slug = _split_ref(ref)
        request = ApiGetKernelRequest()
        request.user_name = owner
        request.kernel_slug = slug
        if version is not None:
            request.version_label = f"v{version}"

        def get() -> Any:
            with self._client() as client:
                return client.kernels.kernels_api_client.get_kernel(request)

        return self._call(f"reading kernel {ref}", get)

    def latest_version(self, ref: str) -> int | None:
        try:
            response = self._get_kernel(ref)
        except KaggleApiError as error:
            # Kaggle returns 403 for a kernel that does not exist, as for one the user cannot see.
            if error.status in (403, 404):
                return None
            raise
        return response.metadata.current_version_number or None

    def status(self, ref: str, version: int | None = None) -> KernelStatus:
        if version is None:
            version = self.latest_version(ref)
            if version is None:
                raise BackendError(f"kernel {ref} was never pushed to Kaggle (or {self._user} cannot see it)")
        if (ref, version) in self._diagnosed:
            return self._diagnosed[(ref, version)]
        # Always ask for this version: right after a push, an unpinned status can still describe
        # the previous version, whose terminal state must not be taken for this one's.
        response = self._session_status(ref, version)
        # The session status (kagglesdk 0.1.38) contains only a state and a failure message, so
        # cells_done and cells_total stay None.
        status = KernelStatus(ref=ref, version=version, state=kernel_state(response.status), message=response.failure_message or None)
        if status.state == "error":
            status = self._diagnose(status)
            self._diagnosed[(ref, version)] = status
        return status

    def _session_status(self, ref: str, version: int) -> Any:
        from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusRequest

        owner, slug = _split_ref(ref)
        request = ApiGetKernelSessionStatusRequest()
        request.user_name = owner
        request.kernel_slug = slug
        request.version_label = f"v{version}"

        def get() -> Any:
            with self._client() as client:
                return client.kernels.kernels_api_client.get_kernel_session_status(request)

        return self._call(f"status of {ref} version {version}", get)

    def _diagnose(self, status: KernelStatus) -> KernelStatus:
        """Add the failing cell and error to an error status, read from the version's log."""
        try:
            log = self._output_page(status.ref, status.version, None).log or ""
            execution_count, name, value = find_failure(log_text(log))
            cell = None
            if execution_count is not None:
                source = self._get_kernel(status.ref, status.version).blob.source or ""
                cell = code_cell_index(source, execution_count)
        except BackendError as error:
            logger.warning("could not read the log of %s version %d: %s", status.ref, status.version, error)
            return status
        return status.model_copy(update={"failing_cell": cell, "error_name": name or status.error_name, "error_value": value or status.message})

    # Output -------------------------------------------------------------------------------------

    def _output_page(self, ref: str, version: int, token: str | None) -> Any:
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        owner, slug = _split_ref(ref)
        request = ApiListKernelSessionOutputRequest()
        request.user_name = owner
        request.kernel_slug = slug
        request.version_label = f"v{version}"
        request.page_size = self.page_size
        request.page_token = token or ""

        def list_page() -> Any:
            with self._client() as client:
                return client.kernels.kernels_api_client.list_kernel_session_output(request)

        return self._call(f"output listing of {ref} version {version}", list_page)

    def list_output(self, ref: str, version: int) -> tuple[list[tuple[str, str]], str]:
        """Return every output file (name, URL) of a version over all pages, and its log."""
        files: list[tuple[str, str]] = []
        log = ""
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = self._output_page(ref, version, token)
            if token is None:
                log = page.log or ""
            files += [(item.file_name or "", item.url or "") for item in page.files or []]
            token = page.next_page_token or None
            if token is None:
                return files, log
            if token in seen:
                raise KaggleApiError(f"output listing of {ref} version {version} repeats the page token {token!r}")
            seen.add(token)

    def download_output(self, ref: str, version: int, target: Path) -> list[Path]:
        files, log = self.list_output(ref, version)
        target = Path(target)
        # Check every name before writing anything, so a hostile listing leaves no partial download.
        destinations = [(name, url, output_path(target, name)) for name, url in files]
        target.mkdir(parents=True, exist_ok=True)
        written = []
        with requests.Session() as session:
            for name, url, destination in destinations:
                self._call(f"download of {name} from {ref} version {version}", lambda: _download(session, url, destination, self.timeout))
                written.append(destination)

        _, slug = _split_ref(ref)
        raw_log = target / f"{slug}.log"
        raw_log.write_text(log, encoding="utf-8")
        written.append(raw_log)
        if any(name == "log.txt" for name, _, _ in destinations):
            logger.warning("the output of %s version %d has its own log.txt; the kernel log is in %s", ref, version, raw_log)
        else:
            (target / "log.txt").write_text(log_text(log), encoding="utf-8")
            written.append(target / "log.txt")
        logger.info("downloaded %d output files of %s version %d into %s", len(destinations), ref, version, target)
        return written

    # Datasets -----------------------------------------------------------------------------------

    def dataset_status(self, ref: str) -> str | None:
        """Return the status of a dataset's newest version (`ready` once usable), or None when it does not exist."""
        _split_ref(ref)
        try:
            return str(self._call(f"status of dataset {ref}", lambda: self.api.dataset_status(ref))).lower()
        except KaggleApiError as error:
            if error.status in (403, 404):
                return None
            raise

    def dataset_exists(self, ref: str) -> bool:
        return self.dataset_status(ref) is not None

    def latest_dataset_version(self, ref: str) -> int | None:
        _split_ref(ref)
        try:
            payload = self._call(f"reading dataset {ref}", lambda: self.api.dataset_status(ref, format="json(current_version_number)"))
        except KaggleApiError as error:
            if error.status in (403, 404):
                return None
            raise
        number = json.loads(payload).get("current_version_number")
        return int(number) if number else None

    def wait_dataset_ready(self, ref: str, version: int | None = None, *, timeout: float | None = None) -> int:
        """Poll until the dataset's newest version is ready (and at least `version`); return its number."""
        timeout = self.dataset_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.5
        status: str | None = None
        while True:
            status = self.dataset_status(ref)
            if status in ("failed", "deleted"):
                raise KaggleApiError(f"Kaggle could not process dataset {ref} (status {status}); check it on kaggle.com and publish again")
            if status == "ready":
                current = self.latest_dataset_version(ref)
                if current is not None and (version is None or current >= version):
                    return current
            if time.monotonic() + delay > deadline:
                raise KaggleApiError(
                    f"timed out after {timeout:.0f} s waiting for dataset {ref}"
                    + (f" version {version}" if version else "")
                    + f" to become ready (last status: {status or 'not found'}); check it on kaggle.com and try again"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 30.0)

    def publish_dataset(self, ref: str, folder: Path, *, title: str, message: str = "") -> DatasetVersion:
        owner, slug = _split_ref(ref)
        check_dataset_fields(slug, title, self.license_name)
        source = Path(folder)
        entries = sorted(path for path in source.iterdir() if not path.name.startswith(".")) if source.is_dir() else []
        if not entries:
            raise BackendError(f"cannot publish {ref}: {source} is not a folder with files in it")
        if any(path.name == DATASET_METADATA_FILE for path in entries):
            raise BackendError(f"cannot publish {ref}: {source} contains {DATASET_METADATA_FILE}, which the client reads as metadata; rename it")

        # The client uploads a folder that contains dataset-metadata.json beside the files. A
        # staging folder of links keeps the source untouched. Its fixed path lets a later attempt
        # resume the uploads of top-level files, because the client keys their state by path.
        staging = default_home() / "kaggle" / "staging" / owner / slug
        _link_folder(staging, entries)
        metadata = {"id": ref, "title": title, "licenses": [{"name": self.license_name}]}
        (staging / DATASET_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")

        if self.dataset_exists(ref):
            before = self.wait_dataset_ready(ref)
            self._create(
                f"new version of dataset {ref}",
                lambda: self.api.dataset_create_version(str(staging), message or title, quiet=True, dir_mode="zip"),
                lambda: (self.latest_dataset_version(ref) or 0) > before,
            )
        else:
            self._create(
                f"creation of dataset {ref}",
                lambda: self.api.dataset_create_new(str(staging), public=False, quiet=True, dir_mode="zip"),
                lambda: self.dataset_exists(ref),
            )
        version = self.wait_dataset_ready(ref)
        logger.info("published dataset %s version %d from %s", ref, version, source)
        return DatasetVersion(ref=ref, version=version, status="ready")

    def _create(self, action: str, create: Callable[[], Any], created: Callable[[], bool]) -> None:
        def recover(failure: Failure) -> Any:
            # Like a push, a creation whose response was lost may still have happened.
            try:
                return "recovered" if created() else None
            except BackendError:
                return None

        response = self._call(action, create, before_retry=recover)
        if response == "recovered":
            logger.warning("the response to the %s was lost, but it went through", action)
            return
        if response is None or (response.status or "").lower() != "ok":
            error = getattr(response, "error", None) or "no response"
            raise KaggleApiError(f"Kaggle rejected the {action}: {error}")


# The client ---------------------------------------------------------------------------------------


class TimeoutAdapter(HTTPAdapter):
    """An HTTPAdapter that gives every request without a timeout a default one (connect, read)."""

    def __init__(self, *args: Any, timeout: tuple[float, float] = (10.0, 120.0), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default_timeout = timeout

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().send(request, *args, **kwargs)


@functools.cache
def _client_module() -> Any:
    """Import the client's `kaggle_api_extended` without what `import kaggle` does on the side.

    Importing it runs `kaggle/__init__.py`, which authenticates at once: it prints help and
    calls exit(1) (caught there) without credentials, and with an access token it sends the token
    to the token introspection endpoint of whichever environment is configured. The token is
    hidden for the import and the output is captured, so the import stays silent and offline.
    """
    hidden = {name: os.environ.pop(name) for name in ("KAGGLE_API_TOKEN",) if name in os.environ}
    try:
        with _captured_output() as output:
            module = importlib.import_module("kaggle.api.kaggle_api_extended")
    except ImportError as error:
        raise BackendError(f"the Kaggle backend needs the kaggle client: pip install 'kdarts[kaggle]' ({error})") from error
    finally:
        os.environ.update(hidden)
    if output.getvalue().strip():
        logger.debug("kaggle client import printed: %s", output.getvalue().strip())
    # Client 2.2.5 PUTs blob uploads through a session with this adapter and no timeout. The
    # subclass only adds a default timeout to requests that have none.
    if module.HTTPAdapter is HTTPAdapter:
        module.HTTPAdapter = TimeoutAdapter
    return module


def _new_api(endpoint: str | None, timeout: tuple[float, float]) -> Any:
    """Create a KaggleApi configured from the environment as it is now, not as it was at import."""
    module = _client_module()

    class ConfiguredKaggleApi(module.KaggleApi):  # type: ignore[name-defined,misc]
        """KaggleApi whose clients use a fixed endpoint and time out every request."""

        def build_kaggle_client(self) -> Any:
            client = super().build_kaggle_client()
            http = client.http_client()
            if endpoint:
                # kagglesdk 0.1.38 builds request URLs from this attribute (see KaggleHttpClient._get_request_url).
                http._endpoint = endpoint.rstrip("/")
            http._init_session()
            adapter = TimeoutAdapter(timeout=timeout)
            http._session.mount("http://", adapter)
            http._session.mount("https://", adapter)
            return client

    api = ConfiguredKaggleApi()
    config_dir = _config_dir()
    # The class reads KAGGLE_CONFIG_DIR and the environment once, when it is imported.
    api.config_dir = str(config_dir)
    api.config = str(config_dir / "kaggle.json")
    # Never "--verbose": the client then prints every request with its Authorization header.
    local = endpoint is not None or _client_endpoint() == LOCALHOST_API_URL
    api.args = ["--local"] if local else []
    return api


# Endpoint -----------------------------------------------------------------------------------------


def endpoint_url() -> str:
    """Return the base URL the Kaggle backend sends its calls to, without a trailing slash.

    That is KDARTS_KAGGLE_ENDPOINT when it is set, else the client's own: http://localhost with
    KAGGLE_API_ENVIRONMENT=LOCALHOST, else https://api.kaggle.com. Raises BackendError when
    KDARTS_KAGGLE_ENDPOINT is not an http:// or https:// URL.
    """
    configured = os.environ.get(ENDPOINT_VARIABLE)
    if configured:
        return check_endpoint(configured)
    return _client_endpoint()


def _client_endpoint() -> str:
    return LOCALHOST_API_URL if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else KAGGLE_API_URL


def check_endpoint(value: str, name: str = ENDPOINT_VARIABLE) -> str:
    """Return an endpoint URL without its trailing slash; raise BackendError unless it is http(s)://host[:port][/path]."""
    parts = urlsplit(value)
    try:
        # Reading the port raises ValueError for one that is not a number from 0 to 65535.
        port_valid = parts.port is None or parts.port >= 0
    except ValueError:
        port_valid = False
    reason = None
    if any(character.isspace() for character in value):
        reason = "it contains whitespace"
    elif parts.scheme not in ("http", "https"):
        reason = "it needs http:// or https:// in front"
    elif not parts.hostname:
        reason = "it names no host"
    elif not port_valid:
        reason = "its port is not a number from 0 to 65535"
    elif parts.username is not None or parts.password is not None:
        reason = "it contains a user name or password, which belong in kaggle.json or KAGGLE_API_TOKEN"
    elif parts.query or parts.fragment:
        reason = "the client appends paths to it, so it cannot have a query or fragment"
    if reason is not None:
        displayed_value = value.replace(parts.password, "***") if parts.password else value
        unset = f", or unset {name} to use Kaggle" if name == ENDPOINT_VARIABLE else ""
        raise BackendError(
            f"invalid {name}={displayed_value!r}: {reason}; set it to an http:// or https:// URL, for example "
            f"http://127.0.0.1:8089 (the address `kdarts-kernel emulate` prints){unset}"
        )
    # Scheme and host are case-insensitive, so one spelling lets callers compare endpoints as strings.
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path}".rstrip("/")


# Credentials --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialSource:
    """The place of the credential that the client sends, described without its value."""

    kind: Literal["token", "api key", "oauth"]
    # For example "the access token in KAGGLE_API_TOKEN" or "the user name and key in kaggle.json at <path>".
    description: str
    # The next step for the user when Kaggle rejects the credential.
    fix: str


@dataclass(frozen=True)
class KaggleJsonProblem:
    """A defect of a kaggle.json file."""

    path: Path
    # Completes "kaggle.json at <path> ...", for example "lacks 'key'".
    text: str
    # True for JSON other than an object. The client (2.2.5) fails with TypeError on most such
    # files (any truthy value, once a KAGGLE_* variable is set), so they stop authentication at once.
    fatal: bool = False

    def error(self) -> BackendError:
        return BackendError(
            f"kaggle.json at {self.path} {self.text}; write {{\"username\": \"<user>\", \"key\": \"<key>\"}} into it "
            f"with your user name and an API key from {TOKEN_PAGE}, or delete it and set KAGGLE_API_TOKEN"
        )


def kaggle_json_problem(path: Path) -> KaggleJsonProblem | None:
    """Return the defect of a kaggle.json file, or None when the file is absent or contains a user name and key."""
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return KaggleJsonProblem(path, f"cannot be read ({type(error).__name__}: {error})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        # The message names the position only, never the file's text, which may contain the key.
        return KaggleJsonProblem(path, f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})")
    if not isinstance(data, dict):
        return KaggleJsonProblem(path, f"contains a JSON {type(data).__name__} instead of an object", fatal=True)
    missing = [name for name in ("username", "key") if name not in data]
    if missing:
        return KaggleJsonProblem(path, "lacks " + " and ".join(repr(name) for name in missing))
    for name in ("username", "key"):
        if not isinstance(data[name], str):
            return KaggleJsonProblem(path, f"has a {type(data[name]).__name__} as {name!r} instead of a string")
        if not data[name].strip():
            return KaggleJsonProblem(path, f"has an empty {name!r}")
    return None


def _authenticate(api: Any, endpoint: str | None) -> tuple[str, CredentialSource]:
    """Authenticate the client; return the user name and the place of the credential that it sends.

    The client never gets to exit the process. A missing, malformed or rejected credential raises
    a BackendError that names its place (variable or file), never its value.
    """
    from kagglesdk.kaggle_env import get_access_token_from_env

    config = Path(api.config)
    problem = kaggle_json_problem(config)
    if problem is not None and problem.fatal:
        raise problem.error()
    # Only the token's origin is kept; the client reads the token again itself.
    _, token_origin = get_access_token_from_env()

    try:
        with _captured_output():
            api.authenticate()
    except SystemExit:
        if token_origin is not None:
            raise _token_rejected(token_origin, fallback=None) from None
        if problem is not None:
            raise problem.error() from None
        raise BackendError(f"no Kaggle credentials found; {_credential_places()} (create a token at {TOKEN_PAGE})") from None
    except (requests.RequestException, OSError) as error:
        where = endpoint or "Kaggle"
        raise BackendError(f"could not check the Kaggle access token with {where}: {type(error).__name__}: {error}; check the network connection") from error

    method = str(api.config_values.get("auth_method") or "")
    if token_origin is not None and method != "ACCESS_TOKEN":
        # The client moved on to other credentials after the token failed its check, but its HTTP
        # client (kagglesdk 0.1.38) still sends any token it finds, so every call would get HTTP 401.
        raise _token_rejected(token_origin, fallback=_credential_source(method, None, config))
    source = _credential_source(method, token_origin, config)
    if method == "LEGACY_API_KEY":
        _check_api_key(api.config_values, config, problem)
    file_used = method == "LEGACY_API_KEY" and not ("KAGGLE_USERNAME" in os.environ and "KAGGLE_KEY" in os.environ)
    if problem is not None and not file_used:
        logger.warning("ignoring kaggle.json at %s, which %s; using %s", config, problem.text, source.description)

    user = api.config_values.get("username")
    if not user:
        raise BackendError(f"{source.description} names no Kaggle user; {_credential_places()}")
    logger.debug("authenticated with Kaggle as %s with %s", user, source.description)
    return str(user), source


def _check_api_key(values: dict[str, Any], config: Path, problem: KaggleJsonProblem | None) -> None:
    """Raise when the user name or key that the client will send is empty or not a string."""
    for name in ("username", "key"):
        value = values.get(name)
        if isinstance(value, str) and value.strip():
            continue
        variable = f"KAGGLE_{name.upper()}"
        if variable in os.environ:
            raise BackendError(f"{variable} is empty; set it to your Kaggle {'user name' if name == 'username' else 'API key'}, or unset it")
        if problem is not None:
            raise problem.error()
        raise BackendError(f"kaggle.json at {config} has no usable {name!r}; {_credential_places()}")


def _credential_source(method: str, token_origin: str | None, config: Path) -> CredentialSource:
    """Describe the credential that the client authenticated with, by its place, never its value."""
    if method == "ACCESS_TOKEN":
        description, _ = _token_place(token_origin)
        return CredentialSource("token", description, f"create a new token at {TOKEN_PAGE} and replace {description}")
    if method == "OAUTH":
        path = Path(os.path.expanduser("~/.kaggle/credentials.json"))
        return CredentialSource("oauth", f"the OAuth credentials in {path}", "log in again with `kaggle auth login`")

    # The client reads kaggle.json first and lets KAGGLE_USERNAME and KAGGLE_KEY override its values.
    file = f"kaggle.json at {config}"
    user_variable = "KAGGLE_USERNAME" in os.environ
    key_variable = "KAGGLE_KEY" in os.environ
    key_hint = f"an API key from {TOKEN_PAGE}"
    if user_variable and key_variable:
        return CredentialSource("api key", "the user name and key in KAGGLE_USERNAME and KAGGLE_KEY", f"set KAGGLE_USERNAME to your user name and KAGGLE_KEY to {key_hint}")
    if key_variable:
        return CredentialSource("api key", f"the key in KAGGLE_KEY with the user name in {file}", f"set KAGGLE_KEY to {key_hint} and check the user name in {config}")
    if user_variable:
        return CredentialSource("api key", f"the key in {file} with the user name in KAGGLE_USERNAME", f"write {key_hint} into {config} and check KAGGLE_USERNAME")
    return CredentialSource("api key", f"the user name and key in {file}", f"write your user name and {key_hint} into {config}")


def _token_place(origin: str | None) -> tuple[str, str]:
    """Return where the client found its access token, and how to stop it from using that token."""
    if origin == "KAGGLE_API_TOKEN":
        value = os.environ.get("KAGGLE_API_TOKEN", "")
        # The client reads the variable as a file's path when such a file exists; a path is no secret.
        if os.path.exists(value):
            return f"the access token in {value} (the file KAGGLE_API_TOKEN names)", "unset KAGGLE_API_TOKEN"
        return "the access token in KAGGLE_API_TOKEN", "unset KAGGLE_API_TOKEN"
    if origin == "access_token":
        path = Path(os.path.expanduser("~/.kaggle/access_token"))
        if not path.is_file():
            path = path.with_name("access_token.txt")
        return f"the access token in {path}", f"delete {path}"
    if origin == "KAGGLE_API_V1_TOKEN":
        return f"the access token in {os.environ.get(origin, '')} (the file KAGGLE_API_V1_TOKEN names)", "unset KAGGLE_API_V1_TOKEN"
    return f"the access token from {origin or 'an unknown place'}", "remove it"


def _token_rejected(origin: str, fallback: CredentialSource | None) -> BackendError:
    description, removal = _token_place(origin)
    message = f"Kaggle rejected {description} (inactive or expired); create a new one at {TOKEN_PAGE}"
    if fallback is not None:
        message += f", or {removal} to use {fallback.description}"
    return BackendError(message)


def _credential_places() -> str:
    return (
        "set KAGGLE_API_TOKEN to an API token, or write kaggle.json with your username and key into "
        f"{_config_dir()} (KAGGLE_CONFIG_DIR chooses the folder), or set KAGGLE_USERNAME and KAGGLE_KEY"
    )


def _config_dir() -> Path:
    """Return the folder the client reads kaggle.json from (the client's own rule, applied now)."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


@contextlib.contextmanager
def _captured_output(stderr: bool = True) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer) if stderr else contextlib.nullcontext():
        yield buffer


def _quiet(func: Callable[[], T]) -> T:
    """Run a client call with what it prints to stdout sent to the log instead.

    Its retry notices on stderr stay visible; stderr is also where a progress display draws, and
    capturing it would swallow the display's frames.
    """
    with _captured_output(stderr=False) as output:
        try:
            return func()
        finally:
            for line in output.getvalue().splitlines():
                if line.strip():
                    logger.info("kaggle client: %s", line.strip())


def _classify(error: BaseException) -> Failure:
    if isinstance(error, ValueError) and str(error).startswith(UPLOAD_FAILED):
        return Failure(True, str(error))
    return classify(error)


def _server_message(error: requests.HTTPError) -> str:
    try:
        body = error.response.json() if error.response is not None else {}
    except ValueError:
        body = {}
    return str(body.get("message") or error) if isinstance(body, dict) else str(error)


def _float_variable(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise BackendError(f"invalid {name}={value!r}; expected seconds, for example 15") from None


# Helpers ------------------------------------------------------------------------------------------


def kernel_state(value: Any) -> KernelState:
    """Map a kernel status as any client spells it (enum, `KernelWorkerStatus.COMPLETE`, `complete`) to a state."""
    text = value.name if isinstance(value, Enum) else str(value)
    text = text.rsplit(".", 1)[-1].strip()
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).upper().removeprefix("KERNEL_WORKER_STATUS_")
    if text not in KERNEL_STATES:
        raise BackendError(f"unknown Kaggle kernel status {value!r}; update kdarts")
    return KERNEL_STATES[text]


def check_dataset_fields(slug: str, title: str, license_name: str) -> None:
    """Check what Kaggle checks of a new dataset before anything is uploaded."""
    if not DATASET_SLUG.match(slug):
        raise BackendError(f"invalid dataset slug {slug!r}: use 6 to 50 lowercase letters, digits and dashes, starting and ending with a letter or digit")
    if not 6 <= len(title) <= 50:
        raise BackendError(f"invalid dataset title {title!r}: Kaggle needs 6 to 50 characters, it has {len(title)}")
    if not license_name:
        raise BackendError("a Kaggle dataset needs exactly one license; pass license_name")


def output_path(target: Path, name: str) -> Path:
    """Return where an output file goes inside `target`; reject names that would leave it."""
    pure = PurePosixPath(name)
    unsafe = (
        not name
        or "\x00" in name
        or "\\" in name
        or pure.is_absolute()
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("..", ".") for part in pure.parts)
    )
    path = target.joinpath(*pure.parts) if not unsafe else target
    if unsafe or not path.resolve().is_relative_to(target.resolve()):
        raise BackendError(f"rejected the output file {name!r}: it would be written outside {target}")
    return path


def _download(session: requests.Session, url: str, destination: Path, timeout: tuple[float, float]) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with session.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        expected = response.headers.get("Content-Length")
        with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False) as file:
            partial = Path(file.name)
            try:
                size = 0
                for chunk in response.iter_content(1 << 20):
                    file.write(chunk)
                    size += len(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    if expected is not None and int(expected) != size:
        partial.unlink(missing_ok=True)
        raise requests.exceptions.ChunkedEncodingError(f"{destination.name}: got {size} of {expected} bytes")
    os.replace(partial, destination)


def log_text(log: str) -> str:
    """Return a Kaggle log (a JSON list of stream entries) as plain text; other text is kept as it is."""
    try:
        entries = json.loads(log)
    except ValueError:
        return log
    if not isinstance(entries, list):
        return log
    return "".join(str(entry.get("data", "")) for entry in entries if isinstance(entry, dict))


def find_failure(text: str) -> tuple[int | None, str | None, str | None]:
    """Return the execution count of the cell that failed, and the error's class and message.

    Kaggle runs notebooks with papermill, which ends a failed run with `Exception encountered at
    "In [N]":` followed by the cell's traceback.
    """
    text = _ANSI.sub("", text)
    matches = list(_FAILED_CELL.finditer(text))
    execution_count = int(matches[-1].group(1)) if matches else None
    tail = text[matches[-1].end() :] if matches else text
    name = value = None
    for line in tail.splitlines():
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            name, value = match.group(1), (match.group(2) or "").strip()
    return execution_count, name, value


def code_cell_index(source: str, execution_count: int) -> int | None:
    """Return the notebook index of the code cell that papermill ran as `In [execution_count]`."""
    try:
        cells = json.loads(source).get("cells", [])
    except (ValueError, AttributeError):
        return None
    code_cells = [index for index, cell in enumerate(cells) if cell.get("cell_type") == "code"]
    if 1 <= execution_count <= len(code_cells):
        return code_cells[execution_count - 1]
    return None


def _ref_from_url(url: str | None) -> str | None:
    """Return `owner/slug` from a kernel URL such as https://www.kaggle.com/code/owner/slug."""
    if not url:
        return None
    parts = [part for part in urlsplit(url).path.split("/") if part]
    for marker in ("code", "kernels"):
        if marker in parts:
            parts = parts[parts.index(marker) + 1 :]
            break
    return f"{parts[0]}/{parts[1]}" if len(parts) >= 2 else None


def _split_ref(ref: str) -> tuple[str, str]:
    parts = ref.split("/")
    if len(parts) != 2 or not all(parts):
        raise BackendError(f"invalid Kaggle reference {ref!r}; expected 'owner/slug'")
    return parts[0], parts[1]


def _link_folder(staging: Path, entries: list[Path]) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        if path.is_symlink() or path.is_file():
            path.unlink()
    for entry in entries:
        (staging / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
