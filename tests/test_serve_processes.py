"""``commine serve --workers N``: N server processes on one port, each answering the API over the
real PostgreSQL, all gone when the server stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commine(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "commine", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def served(service_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """Two server processes on a fresh database with an administrator's token."""
    env = {**service_env, "COMMINE_UI_WARM": "off"}
    commine(env, "users", "add", "root", "--admin")
    token = commine(env, "tokens", "issue", "root").split()[-1]
    port = free_port()
    command = [sys.executable, "-m", "commine", "serve", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            assert server.poll() is None, "commine serve --workers 2 exited at start"
            time.sleep(0.2)
    try:
        yield server, base, token
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


def test_each_process_serves_the_api_and_all_stop_with_the_server(
    served: tuple[subprocess.Popen[bytes], str, str],
) -> None:
    server, base, token = served
    workers = [pid for pid in children(server.pid) if "spawn_main" in cmdline(pid)]  # not the resource tracker
    assert len(workers) == 2
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        # A fresh connection each time, so the kernel spreads them over both processes' accept.
        answers = [httpx.get(f"{base}/api/auth/user", headers=headers, timeout=30) for _ in range(20)]
        assert {answer.status_code for answer in answers} == {200}
        assert {answer.json()["user"]["username"] for answer in answers} == {"root"}
        assert client.get("/api/auth/user", headers={"Authorization": "Bearer wrong"}).status_code == 401
    everyone = [server.pid, *children(server.pid), *(pid for worker in workers for pid in children(worker))]
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and [pid for pid in everyone if alive(pid)]:
        time.sleep(0.2)
    assert not [pid for pid in everyone if alive(pid)]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: no process library needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as found:
            return found.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to read its exit status."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_the_embedded_mode_refuses_several_processes(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMINE_")}
    env["COMMINE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "commine", "--embedded", "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "one process" in done.stderr
