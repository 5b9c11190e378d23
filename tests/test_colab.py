"""The Colab side: Drive uploads against a local fake of the Drive API, and the notebook's Drive helpers.

The fake serves the OAuth token endpoint and the Drive v3 endpoints kdarts uses on 127.0.0.1. It
checks the bearer token on every Drive call, verifies the service account's signed JWT, and parses
each multipart body into its metadata and media parts.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import socket
import sys
import tarfile
import threading
import types
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import nbformat
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kdarts import runtime
from kdarts.errors import BackendError
from kdarts.kernel import drive as drive_module
from kdarts.kernel.backends.colab import ColabBackend, colab_link
from kdarts.kernel.jobs import push_kernel
from kdarts.kernel.specs import load_spec

ACCESS_TOKEN = "fake-access-token-" + uuid.uuid4().hex
REFRESH_TOKEN = "fake-refresh-token-" + uuid.uuid4().hex
CLIENT_SECRET = "fake-client-secret-" + uuid.uuid4().hex
ROOT_FOLDER = "root-folder-id"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class FakeDrive:
    """State of the fake Drive: files by id, and every request and problem it saw."""

    def __init__(self, public_key_pem: bytes):
        self.public_key_pem = public_key_pem
        self.files: dict[str, dict] = {ROOT_FOLDER: {"id": ROOT_FOLDER, "name": "kdarts", "mimeType": drive_module.FOLDER_MIME_TYPE, "parents": [], "trashed": False}}
        self.sessions: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.token_grants: list[str] = []
        self.expected_token = ACCESS_TOKEN
        self.base = ""

    def children(self, parent: str) -> list[dict]:
        return [item for item in self.files.values() if parent in item["parents"] and not item["trashed"]]


def make_handler(state: FakeDrive):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, body: dict | None = None, headers: dict | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.expected_token}":
                state.problems.append(f"bad Authorization on {self.command} {self.path}")
                self._send(401, {"error": {"message": "invalid credentials"}})
                return False
            return True

        def do_POST(self):
            url = urlparse(self.path)
            state.requests.append(("POST", url.path))
            body = self._body()
            if url.path == "/token":
                return self._token(parse_qs(body.decode()))
            if not self._authorized():
                return
            query = parse_qs(url.query)
            if url.path == "/upload/drive/v3/files" and query.get("uploadType") == ["multipart"]:
                return self._multipart(body)
            if url.path == "/upload/drive/v3/files" and query.get("uploadType") == ["resumable"]:
                session = uuid.uuid4().hex
                state.sessions[session] = {"metadata": json.loads(body), "data": b"", "size": int(self.headers["X-Upload-Content-Length"])}
                return self._send(200, {}, {"Location": f"{state.base}/upload/session/{session}"})
            if url.path == "/drive/v3/files":
                return self._send(200, self._store(json.loads(body), b""))
            self._send(404, {"error": {"message": f"no route {url.path}"}})

        def do_PUT(self):
            url = urlparse(self.path)
            state.requests.append(("PUT", url.path))
            if not self._authorized():
                return
            session = state.sessions[url.path.rsplit("/", 1)[1]]
            body = self._body()
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != len(session["data"]) or int(match.group(2)) - int(match.group(1)) + 1 != len(body):
                state.problems.append(f"bad Content-Range {self.headers.get('Content-Range')}")
                return self._send(400, {"error": {"message": "bad range"}})
            session["data"] += body
            if len(session["data"]) < session["size"]:
                return self._send(308, None, {"Range": f"bytes=0-{len(session['data']) - 1}"})
            self._send(200, self._store(session["metadata"], session["data"]))

        def do_GET(self):
            url = urlparse(self.path)
            state.requests.append(("GET", url.path))
            if not self._authorized():
                return
            q = parse_qs(url.query)["q"][0]
            parent = re.search(r"'([^']+)' in parents", q).group(1)
            name = re.search(r"name = '([^']+)'", q)
            mime = re.search(r"mimeType = '([^']+)'", q)
            items = [
                item
                for item in state.children(parent)
                if (name is None or item["name"] == name.group(1)) and (mime is None or item["mimeType"] == mime.group(1))
            ]
            self._send(200, {"files": [{key: item[key] for key in ("id", "name", "mimeType")} for item in items]})

        def do_PATCH(self):
            url = urlparse(self.path)
            state.requests.append(("PATCH", url.path))
            if not self._authorized():
                return
            state.files[url.path.rsplit("/", 1)[1]].update(json.loads(self._body()))
            self._send(200, {})

        def _token(self, form: dict) -> None:
            grant = form.get("grant_type", [""])[0]
            state.token_grants.append(grant)
            if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
                from google.auth import jwt

                try:
                    # google-auth 2.x addresses the assertion to Google's token endpoint whatever
                    # token_uri says, and Google's endpoint checks exactly that audience.
                    claims = jwt.decode(form["assertion"][0], certs=state.public_key_pem.decode(), audience=GOOGLE_TOKEN_AUDIENCE)
                except ValueError as error:
                    state.problems.append(f"invalid JWT: {error}")
                    return self._send(400, {"error": "invalid_grant"})
                if "drive" not in claims.get("scope", ""):
                    state.problems.append(f"JWT without the drive scope: {claims}")
            elif grant == "refresh_token":
                if form.get("refresh_token") != [REFRESH_TOKEN] or form.get("client_secret") != [CLIENT_SECRET]:
                    state.problems.append("wrong refresh token or client secret")
                    return self._send(400, {"error": "invalid_grant"})
            else:
                state.problems.append(f"unknown grant {grant}")
                return self._send(400, {"error": "unsupported_grant_type"})
            self._send(200, {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})

        def _multipart(self, body: bytes) -> None:
            content_type = self.headers.get("Content-Type", "")
            if not content_type.startswith("multipart/related; boundary="):
                state.problems.append(f"multipart upload with Content-Type {content_type}")
                return self._send(400, {"error": {"message": "not multipart/related"}})
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            parts = list(message.iter_parts())
            if len(parts) != 2 or parts[0].get_content_type() != "application/json":
                state.problems.append(f"multipart body with {len(parts)} parts")
                return self._send(400, {"error": {"message": "expected metadata and media parts"}})
            metadata = json.loads(parts[0].get_payload(decode=True))
            if parts[1].get_content_type() != metadata.get("mimeType"):
                state.problems.append("media part type differs from the metadata's mimeType")
            self._send(200, self._store(metadata, parts[1].get_payload(decode=True)))

        def _store(self, metadata: dict, data: bytes) -> dict:
            for parent in metadata.get("parents", []):
                if parent not in state.files:
                    state.problems.append(f"unknown parent {parent}")
            file_id = uuid.uuid4().hex[:16]
            state.files[file_id] = {
                "id": file_id,
                "name": metadata["name"],
                "mimeType": metadata.get("mimeType", "application/octet-stream"),
                "parents": metadata.get("parents", []),
                "trashed": False,
                "data": data,
            }
            return {"id": file_id, "name": metadata["name"], "mimeType": state.files[file_id]["mimeType"], "size": str(len(data))}

    return Handler


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any lookup of a host other than the loopback, so no test can reach Google."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise OSError(f"test tried to reach {host}; only 127.0.0.1 is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(scope="module")
def signing_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


@pytest.fixture
def fake_drive(signing_key):
    state = FakeDrive(signing_key[1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def service_account_file(tmp_path, fake_drive, signing_key):
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "kdarts-test",
                "private_key_id": "key-1",
                "private_key": signing_key[0].decode(),
                "client_email": "uploader@kdarts-test.iam.gserviceaccount.com",
                "client_id": "1234",
                "token_uri": f"{fake_drive.base}/token",
            }
        )
    )
    return path


@pytest.fixture
def authorized_user_file(tmp_path, fake_drive):
    path = tmp_path / "authorized-user.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "client-1.apps.googleusercontent.com",
                "client_secret": CLIENT_SECRET,
                "refresh_token": REFRESH_TOKEN,
                "token_uri": f"{fake_drive.base}/token",
            }
        )
    )
    return path


def colab_backend(fake_drive, credentials: Path, tmp_path: Path) -> ColabBackend:
    return ColabBackend(credentials_file=credentials, folder_id=ROOT_FOLDER, api_base=fake_drive.base, state_root=tmp_path / "state")


def test_push_uploads_notebook_with_service_account(tmp_path, fake_drive, service_account_file):
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    record = push_kernel(load_spec("search", platform="colab", overrides=["kernel.dataset=sample"]), backend, runs_root=tmp_path / "runs")
    notebooks = [item for item in fake_drive.files.values() if item["name"].endswith(".ipynb")]
    notebook = nbformat.reads(notebooks[0]["data"].decode(), as_version=4)
    assert fake_drive.problems == []
    assert fake_drive.token_grants[0] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert [item["name"] for item in notebooks] == ["kdarts-search-v1.ipynb"]
    assert notebooks[0]["parents"] == [ROOT_FOLDER]
    assert notebooks[0]["mimeType"] == drive_module.COLAB_MIME_TYPE
    assert notebook.metadata["kdarts"]["target"] == "colab"
    assert record.url == colab_link(notebooks[0]["id"])
    assert record.url.startswith("https://colab.research.google.com/drive/")


def test_push_publishes_sample_archive_once(tmp_path, fake_drive, service_account_file):
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    spec = load_spec("search", platform="local")
    push_kernel(spec, backend, runs_root=tmp_path / "runs")
    second = push_kernel(spec, backend, runs_root=tmp_path / "runs")
    archives = [item for item in fake_drive.files.values() if item["name"].endswith(".tar.gz")]
    datasets = [item for item in fake_drive.files.values() if item["name"] == "datasets"]
    names = tarfile.open(fileobj=io.BytesIO(archives[0]["data"])).getnames()
    assert fake_drive.problems == []
    assert second.version == 2
    assert [item["name"] for item in archives] == ["kdarts-cifar10-sample.tar.gz"]
    assert archives[0]["parents"] == [datasets[0]["id"]]
    assert "train/cat/" + sorted(Path(name).name for name in names if name.startswith("train/cat/"))[0] in names


def test_push_with_authorized_user_credentials(tmp_path, fake_drive, authorized_user_file):
    backend = colab_backend(fake_drive, authorized_user_file, tmp_path)
    backend.client.upload(b"{}", name="probe.ipynb", parent_id=ROOT_FOLDER, mime_type=drive_module.COLAB_MIME_TYPE)
    assert fake_drive.problems == []
    assert fake_drive.token_grants == ["refresh_token"]
    assert [item["name"] for item in fake_drive.children(ROOT_FOLDER)] == ["probe.ipynb"]


def test_uploaded_files_hold_no_credentials(tmp_path, fake_drive, authorized_user_file):
    backend = colab_backend(fake_drive, authorized_user_file, tmp_path)
    push_kernel(load_spec("search", platform="local"), backend, runs_root=tmp_path / "runs")
    stored = b"".join(item.get("data", b"") for item in fake_drive.files.values())
    local = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and path != authorized_user_file)
    for secret in (REFRESH_TOKEN, CLIENT_SECRET, ACCESS_TOKEN):
        assert secret.encode() not in stored
        assert secret.encode() not in local


def test_large_file_uses_resumable_upload(tmp_path, fake_drive, service_account_file, monkeypatch):
    monkeypatch.setattr(drive_module, "MULTIPART_LIMIT", 1000)
    monkeypatch.setattr(drive_module, "CHUNK_SIZE", 1024)
    data = bytes(range(256)) * 20
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    uploaded = backend.client.upload(source, name="big.bin", parent_id=ROOT_FOLDER, mime_type="application/octet-stream")
    assert fake_drive.problems == []
    assert fake_drive.files[uploaded.id]["data"] == data
    assert fake_drive.requests.count(("PUT", fake_drive.requests[-1][1])) == 5


def test_dataset_publish_replaces_archive(tmp_path, fake_drive, service_account_file):
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    folder = tmp_path / "data"
    (folder / "train" / "a").mkdir(parents=True)
    (folder / "train" / "a" / "x.png").write_bytes(b"png")
    first = backend.publish_dataset("drive/some-data", folder, title="some data")
    second = backend.publish_dataset("drive/some-data", folder, title="some data")
    live = [item for item in fake_drive.files.values() if item["name"] == "some-data.tar.gz" and not item["trashed"]]
    assert (first.version, second.version) == (1, 2)
    assert len(live) == 1
    assert backend.dataset_exists("drive/some-data")
    assert not backend.dataset_exists("drive/other-data")


def test_wrong_token_is_reported(tmp_path, fake_drive, service_account_file):
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    fake_drive.expected_token = "another-token"
    with pytest.raises(BackendError, match="HTTP 401: invalid credentials; check the credentials file"):
        backend.client.list_folder(ROOT_FOLDER)


def test_missing_settings_are_named(monkeypatch):
    monkeypatch.delenv("KDARTS_DRIVE_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(BackendError, match="set KDARTS_DRIVE_CREDENTIALS"):
        ColabBackend(folder_id="x")


def test_unknown_credentials_type_is_error(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"type": "external_account"}))
    with pytest.raises(BackendError, match="has type 'external_account'"):
        drive_module.load_credentials(path)


def test_cli_push_prints_colab_link(tmp_path, fake_drive, service_account_file, monkeypatch):
    from typer.testing import CliRunner

    from kdarts.kernel.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDARTS_DRIVE_CREDENTIALS", str(service_account_file))
    monkeypatch.setenv("KDARTS_DRIVE_FOLDER_ID", ROOT_FOLDER)
    monkeypatch.setenv("KDARTS_DRIVE_API", fake_drive.base)
    result = CliRunner().invoke(app, ["push", "search", "--backend", "colab", "--set", "kernel.dataset=sample"])
    uploaded = [item for item in fake_drive.files.values() if item["name"].endswith(".ipynb")]
    assert result.exit_code == 0, result.output
    assert f"open it in Colab and choose Runtime > Run all: {colab_link(uploaded[0]['id'])}" in result.output


def test_status_points_to_colab_link(tmp_path, fake_drive, service_account_file):
    backend = colab_backend(fake_drive, service_account_file, tmp_path)
    record = push_kernel(load_spec("search", platform="colab", overrides=["kernel.dataset=sample"]), backend, runs_root=tmp_path / "runs")
    status = backend.status(record.ref)
    assert status.state == "queued"
    assert record.url in status.message


# The notebook's Drive helpers (kdarts.runtime) ---------------------------------------------------


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """A fake google.colab.drive whose mount() creates My Drive and counts its calls."""
    calls = []

    def mount(path: str) -> None:
        calls.append(path)
        (Path(path) / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    google = sys.modules.get("google") or types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(google, "colab", colab, raising=False)
    monkeypatch.setenv("KDARTS_COLAB_ROOT", str(tmp_path / "content"))
    (tmp_path / "content").mkdir()
    return calls


def test_mount_drive_mounts_empty_folder(tmp_path, fake_colab):
    my_drive = runtime.mount_drive()
    assert fake_colab == [str(tmp_path / "content" / "drive")]
    assert my_drive == tmp_path / "content" / "drive" / "MyDrive"


def test_mount_drive_reuses_mount(tmp_path, fake_colab, monkeypatch):
    monkeypatch.setattr(runtime.os.path, "ismount", lambda path: Path(path) == tmp_path / "content" / "drive")
    my_drive = runtime.mount_drive()
    assert fake_colab == []
    assert my_drive == tmp_path / "content" / "drive" / "MyDrive"


def test_mount_drive_warns_on_nonempty_folder(tmp_path, fake_colab, capsys):
    (tmp_path / "content" / "drive").mkdir()
    (tmp_path / "content" / "drive" / "stray.txt").write_text("x")
    my_drive = runtime.mount_drive()
    assert my_drive is None
    assert fake_colab == []
    assert "WARNING: " in capsys.readouterr().err


def test_run_folder_without_drive_warns(tmp_path, capsys):
    environment = runtime.KernelEnvironment("colab", tmp_path / "input", tmp_path / "working")
    folder = runtime.colab_run_folder(environment, None, "kdarts", "kdarts-search")
    assert folder == tmp_path / "working" / "kdarts-search"
    assert "checkpoints go to" in capsys.readouterr().err


def test_run_folder_on_drive(tmp_path):
    environment = runtime.KernelEnvironment("colab", tmp_path / "input", tmp_path / "working")
    folder = runtime.colab_run_folder(environment, tmp_path / "MyDrive", "work/kdarts", "kdarts-search")
    assert folder == tmp_path / "MyDrive" / "work" / "kdarts" / "runs" / "kdarts-search"
    assert folder.is_dir()


def test_dataset_archive_on_drive_is_unpacked_once(tmp_path):
    source = tmp_path / "source" / "train" / "cat"
    source.mkdir(parents=True)
    (source / "1.png").write_bytes(b"png")
    datasets = tmp_path / "MyDrive" / "kdarts" / "datasets"
    datasets.mkdir(parents=True)
    with tarfile.open(datasets / "pets-data.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "source" / "train", arcname="train")
    environment = runtime.KernelEnvironment("colab", tmp_path / "content" / "input", tmp_path / "content" / "working")
    found = runtime.find_dataset(environment, "pets-data", drive_datasets=datasets)
    (found / "train" / "cat" / "1.png").write_bytes(b"changed")
    again = runtime.find_dataset(environment, "pets-data", drive_datasets=datasets)
    assert found == tmp_path / "content" / "input" / "pets-data"
    assert again == found
    assert (again / "train" / "cat" / "1.png").read_bytes() == b"changed"


def test_missing_dataset_lists_attached(tmp_path):
    (tmp_path / "input" / "other-data").mkdir(parents=True)
    environment = runtime.KernelEnvironment("local", tmp_path / "input", tmp_path / "working")
    with pytest.raises(Exception, match="attached: other-data"):
        runtime.find_dataset(environment, "pets-data")


def test_dataset_input_picks_single_archive(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar.tar.gz").write_bytes(b"x")
    assert runtime.dataset_input(tmp_path / "data") == tmp_path / "data" / "cifar.tar.gz"


def test_dataset_input_keeps_image_folder(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "extra.tar.gz").write_bytes(b"x")
    assert runtime.dataset_input(tmp_path / "data") == tmp_path / "data"


# The Colab notebook, executed as on a Colab runtime ----------------------------------------------

FAKE_SITECUSTOMIZE = '''
"""Make a fake Google Drive mount look mounted to os.path.ismount, as a real mount does on Colab."""
import os
import os.path

_real_ismount = os.path.ismount


def _ismount(path):
    mounts = os.environ.get("KDARTS_FAKE_MOUNTS", "")
    if mounts and os.path.isfile(mounts) and os.fspath(path).rstrip("/") in open(mounts).read().split():
        return True
    return _real_ismount(path)


os.path.ismount = _ismount
'''

FAKE_DRIVE_MODULE = '''
"""A fake google.colab.drive: links the mount point's MyDrive to a local folder and records the mount."""
import os


def mount(mountpoint, force_remount=False):
    os.makedirs(mountpoint, exist_ok=True)
    if os.listdir(mountpoint):
        raise ValueError("Mountpoint must not already contain files")
    os.symlink(os.environ["KDARTS_FAKE_DRIVE"], os.path.join(mountpoint, "MyDrive"))
    with open(os.environ["KDARTS_FAKE_MOUNTS"], "a") as mounts:
        mounts.write(os.fspath(mountpoint).rstrip("/") + "\\n")
'''


@pytest.mark.slow
def test_colab_notebook_writes_to_drive_and_reruns(tmp_path, monkeypatch):
    """Run the Colab variant twice in a fake Colab runtime: Drive is mounted once, the second run resumes."""
    from kdarts.data import sample_path
    from kdarts.kernel.backends.local import LocalBackend
    from kdarts.kernel.jobs import wait_for_kernel
    from kdarts.kernel.render import METADATA_FILE, kernel_metadata, write_bundle

    fakes = tmp_path / "fakes"
    (fakes / "google" / "colab").mkdir(parents=True)
    (fakes / "sitecustomize.py").write_text(FAKE_SITECUSTOMIZE)
    (fakes / "google" / "colab" / "__init__.py").write_text("")
    (fakes / "google" / "colab" / "drive.py").write_text(FAKE_DRIVE_MODULE)
    my_drive = tmp_path / "drive-store"
    (my_drive / "kdarts" / "datasets").mkdir(parents=True)
    with tarfile.open(my_drive / "kdarts" / "datasets" / "kdarts-cifar10-sample.tar.gz", "w:gz") as archive:
        archive.add(sample_path(), arcname=".")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "fake")
    monkeypatch.setenv("KDARTS_COLAB_ROOT", str(tmp_path / "content"))
    monkeypatch.setenv("KDARTS_FAKE_DRIVE", str(my_drive))
    monkeypatch.setenv("KDARTS_FAKE_MOUNTS", str(tmp_path / "mounts.txt"))
    monkeypatch.setenv("PYTHONPATH", str(fakes))

    settings = ["epochs=1", "layers=3", "init_channels=4", "nodes=2", "batch_size=16", "max_train_images=64", "kernel.dataset=sample"]
    spec = load_spec("search", platform="colab", overrides=settings)
    bundle = write_bundle(spec, tmp_path / "bundle", owner="local", target="colab")
    # Nothing is attached on Colab: the notebook finds its data on Drive.
    (bundle.folder / METADATA_FILE).write_text(json.dumps({**kernel_metadata(spec, "local"), "dataset_sources": []}))
    backend = LocalBackend()
    logs = []
    for _ in range(2):
        pushed = backend.push(bundle, session_limit=240)
        status = wait_for_kernel(backend, pushed.ref, pushed.version, timeout=240, poll_seconds=0.5)
        logs.append(backend.log_path(pushed.ref, pushed.version).read_text())
        assert status.state == "complete", logs[-1][-3000:]

    run_folder = my_drive / "kdarts" / "runs" / "kdarts-search"
    assert (run_folder / "plan.json").is_file()
    assert list((run_folder / "checkpoints").glob("step-*.pt"))
    assert (tmp_path / "mounts.txt").read_text().split() == [str(tmp_path / "content" / "drive")]
    assert "platform: colab" in logs[0]
    assert "Google Drive mounted at" in logs[0]
    assert "Google Drive is already mounted" in logs[1]
    assert "already complete" in logs[1]
    assert "WARNING" not in logs[0] + logs[1]
