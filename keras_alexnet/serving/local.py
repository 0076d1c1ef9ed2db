"""Run a server command as a local subprocess on a free loopback port (tests, benchmarks)."""

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port():
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url):
    """Whether GET {url}/v2/health/ready answers 200."""
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _failure(reason, output):
    """A RuntimeError with `reason` and, when `output` can be read back, the server's output."""
    text = ""
    if output is not None and output.seekable():
        output.seek(0)
        text = ": " + output.read()
    return RuntimeError(reason + text)


@contextlib.contextmanager
def local_server(command, *, timeout=60.0, output=None, cwd=None, env=None):
    """Start `command + ["--port", PORT]`, wait until it is ready, yield its URL, stop it.

    `output` (a file object) receives the server's stdout and stderr. Raises RuntimeError,
    with the server's output when there is some, if it exits or is not ready in `timeout` s.
    """
    server = local_server_process(command, timeout=timeout, output=output, cwd=cwd, env=env)
    with server as (url, _):
        yield url


@contextlib.contextmanager
def local_server_process(command, *, timeout=60.0, output=None, cwd=None, env=None):
    """`local_server`, yielding (URL, the server's subprocess.Popen): its pid for measuring."""
    port = free_port()
    stream = {"stdout": output, "stderr": subprocess.STDOUT} if output is not None else {}
    proc = subprocess.Popen([*command, "--port", str(port)], cwd=cwd, env=env, **stream)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url):
            if proc.poll() is not None:
                raise _failure(f"server exited with {proc.returncode}", output)
            if time.monotonic() > deadline:
                raise _failure(f"server not ready after {timeout:g} s", output)
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
