"""The real Streamlit app on a loopback port, for tests/test_browser.py and
benchmarks/loadtest.py: ``streamlit run app.py`` in its own process group,
logging to a file, plus the Chromium flags and page selectors both use.

No pytest here: the load test imports this as a plain module (it puts
``tests/`` on ``sys.path``). Nothing outside this machine is contacted.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Headless Chromium (Debian's) without sandbox, GPU or any network of its own.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]

EXCEPTION = '[data-testid="stException"]'
RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidget"] [aria-label="Running..."]'
# The canvas of the current generation (its widget key is canvas_<n>; Clear and Undo
# make a new one). The component lives in an open shadow root: Playwright's CSS
# engine pierces it.
CANVAS = "[class*='st-key-canvas_'] canvas.upper-canvas"

# On a loaded 2-core CI box the server alone can take a while to answer.
SERVER_START_TIMEOUT = 90  # s, until /_stcore/health answers "ok"
LOG_TAIL_LINES = 60


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url):
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


class Server:
    """``streamlit run <app>`` in its own process group, logging to ``<workdir>/streamlit.log``.

    Saved networks go to ``<workdir>/weights`` (never into the checkout's weights/),
    drawings to ``<workdir>/drawings.sqlite3``.
    With DIGITLAB_LOG_LEVEL=DEBUG the app logs every page run and every Draw fragment
    rerun with its duration (the tests and the load test read them from the log).
    """

    def __init__(self, app, workdir, mnist=None, port=None):
        self.app, self.mnist = app, mnist
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "streamlit.log"
        self.proc = None
        self._log = None

    def start(self):
        weights = self.workdir / "weights"
        weights.mkdir(exist_ok=True)
        env = dict(os.environ, DIGITLAB_WEIGHTS=str(weights), PYTHONUNBUFFERED="1",
                   DIGITLAB_DB=str(self.workdir / "drawings.sqlite3"),
                   STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", DIGITLAB_LOG_LEVEL="DEBUG")
        if self.mnist:
            env["MNIST_DATA"] = str(self.mnist)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(self.app), "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--server.runOnSave", "false"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_healthy(self, timeout=SERVER_START_TIMEOUT):
        """Until /_stcore/health answers "ok"; RuntimeError (with the log tail) if the
        server exits or does not get there within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not healthy(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=LOG_TAIL_LINES):
        return "\n".join(self.log().splitlines()[-n:])

    def cpu_seconds(self):
        """CPU time the server has used so far (Linux /proc; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """SIGTERM to the whole process group, SIGKILL if it lingers; returns the CPU
        seconds the server used (measured just before stopping it; None if unknown)."""
        if self.proc is None:  # never started
            return None
        cpu_s = self.cpu_seconds()
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        return cpu_s
