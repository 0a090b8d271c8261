"""The real Streamlit app on a loopback port, for tests/test_browser.py,
tests/test_hostile_app.py and benchmarks/loadtest.py: ``streamlit run app.py``
in its own process group, logging to a file, plus what those share:

- the Chromium flags and page selectors;
- ``StreamlitClient``: a browser's side of Streamlit's websocket protocol
  without the browser, so that a test can send what a hostile visitor can
  (a browser controls every byte it sends): any widget value, of any size,
  as often as it likes;
- ``attack_files``: the hostile uploads of tests/test_uploads.py, for the
  page's upload box.

No pytest here: the load test imports this as a plain module (it puts
``tests/`` on ``sys.path``). Nothing outside this machine is contacted.
"""
import asyncio
import base64
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
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
    ``env`` adds or overrides environment variables (e.g. a Streamlit setting:
    ``STREAMLIT_RUNNER_FAST_RERUNS="false"``). ``rss_mb``, ``peak_rss_mb`` and
    ``group_rss_mb`` read the server's memory from /proc.
    """

    def __init__(self, app, workdir, mnist=None, port=None, env=None):
        self.app, self.mnist, self.extra_env = app, mnist, dict(env or {})
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
        env.update(self.extra_env)
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

    def _status_mb(self, field_name, pid=None):
        try:
            for line in Path(f"/proc/{pid or self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def rss_mb(self):
        """The server process's resident memory now, MB (Linux /proc; None elsewhere)."""
        return self._status_mb("VmRSS")

    def peak_rss_mb(self):
        """The server process's peak resident memory (since start or ``reset_peak_rss``), MB."""
        return self._status_mb("VmHWM")

    def reset_peak_rss(self):
        """Start ``peak_rss_mb`` afresh from the current RSS (Linux: clear_refs 5);
        False where that is not possible."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def group_rss_mb(self):
        """Resident memory of the server and every process it started (e.g. upload
        decoding workers) together: the processes of its process group, MB."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # field 5 of stat: the process group
                total += self._status_mb("VmRSS", pid=stat.parent.name) or 0.0
        return total

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


# ---------------------------------------------------------------- hostile uploads

def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def attack_files():
    """``{file name: bytes}``: the hostile uploads of tests/test_uploads.py (built the
    same way; no binary fixtures), each named with an extension the upload box takes:

    - ``progressive.jpg``: a valid 2000x2000 progressive JPEG (about 0.5 MB) whose
      last scan repeats 34,000 times (minutes of decoding if nothing stops it);
    - ``rle-bmp.png``: a 21 KB run-length-encoded BMP of 40 MP, named .png;
    - ``forty-megapixels.png``: a real 8000x5000 PNG of a stroke, about 30 KB;
    - ``bomb.png``: a 5 KB PNG declaring 100,000 x 100,000 pixels.
    """
    from PIL import Image, ImageDraw

    def encode(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    jpeg = encode(Image.new("L", (2000, 2000), 200), "JPEG", progressive=True)
    last = jpeg.rfind(b"\xff\xda")
    progressive = jpeg[:-2] + jpeg[last:-2] * 34_000 + b"\xff\xd9"
    w, h = 8000, 5000
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    pixels = b"\x01\x00\x00\x00" * h + b"\x00\x01"  # one pixel and end-of-line per row; end
    offset = 14 + 40 + len(palette)
    bmp = (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
           + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
           + palette + pixels)
    big = Image.new("1", (w, h), 1)
    ImageDraw.Draw(big).line((3000, 1000, 5000, 4000), fill=0, width=300)
    side = 100_000
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1) * 50, 9))
            + _png_chunk(b"IEND", b""))
    return {"progressive.jpg": progressive, "rle-bmp.png": bmp,
            "forty-megapixels.png": encode(big, "PNG"), "bomb.png": bomb}


def png_data_url_40mp():
    """``data:image/png;base64,...`` of a 40-megapixel (8000x5000) PNG, about 40 KB:
    what a crafted canvas message can put where the component sends its image."""
    files = attack_files()
    return "data:image/png;base64," + base64.b64encode(files["forty-megapixels.png"]).decode()


# ---------------------------------------------------------------- Streamlit's protocol

STREAM_PATH = "/_stcore/stream"
CANVAS_COMPONENT = "drawable_canvas"     # in the canvas's component name
# Digits as pen strokes in canvas pixels (the canvas is 280 x 280).
ONE = [[(140, 40), (140, 240)]]
SEVEN = [[(70, 50), (210, 50), (120, 240)]]


def canvas_drawing(strokes, width=18):
    """Stroke data as the canvas sends it (fabric.js JSON): one "path" object per
    stroke; ``strokes`` are polylines in canvas pixels."""
    return {"version": "5.3.0", "objects": [
        {"type": "path", "strokeWidth": width,
         "path": [["M", *points[0]], *(["L", *p] for p in points[1:])]} for points in strokes]}


def canvas_value(raw, data=None, **more):
    """The canvas widget's value, as JSON text, as the component sends it:
    ``{"drawing": {"raw": <stroke data>, "data": <PNG data URL or null>}}``."""
    return json.dumps({"drawing": {"raw": raw, "data": data}, **more})


def json_widget(widget_id, text):
    """A widget's state carrying JSON text (what components and the canvas send)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=widget_id)
    state.json_value = text
    return state


def trigger_widget(widget_id):
    """A button press."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    state = WidgetState(id=widget_id)
    state.trigger_value = True
    return state


@dataclass
class Element:
    """One element a run put on the page: ``kind`` is the ``Element`` field
    ("alert", "metric", "exception", "selectbox", "bidi_component", ...)."""
    kind: str
    path: tuple
    fragment_id: str = ""
    id: str = ""
    label: str = ""
    text: str = ""
    options: tuple = ()


@dataclass
class RunResult:
    """What the server answered to one rerun request: the elements in the order they
    came, the run's end (``status``: a ``ScriptFinishedStatus`` name) or the close
    code when the server closed the connection instead, and the seconds it took."""
    elements: list = field(default_factory=list)
    status: str = None
    close_code: int = None
    seconds: float = None

    @property
    def answered(self):
        return self.status is not None or self.close_code is not None

    def texts(self, kind="alert"):
        return [e.text for e in self.elements if e.kind == kind]

    def find(self, kind, label=None):
        return [e for e in self.elements if e.kind == kind and (label is None or e.label == label)]

    def metric(self, label):
        found = self.find("metric", label)
        return found[-1].text if found else None

    def shows(self, text):
        return any(text in e.text for e in self.elements)

    def problems(self):
        """Exception boxes and "something went wrong" messages in this answer."""
        return ([f"exception {e.text}" for e in self.elements if e.kind == "exception"]
                + [t for t in self.texts() if "something went wrong" in t])


def _text(proto, name):
    value = getattr(proto, name, "")
    return value if isinstance(value, str) else ""


def _element(msg):
    """An ``Element`` for a ForwardMsg that adds one, else None."""
    delta = msg.delta
    if delta.WhichOneof("type") != "new_element":
        return None
    kind = delta.new_element.WhichOneof("type")
    if kind is None:
        return None
    proto = getattr(delta.new_element, kind)
    text = f"{proto.type}: {proto.message}" if kind == "exception" else _text(proto, "body")
    label = proto.component_name if kind == "bidi_component" else _text(proto, "label")
    options = tuple(proto.options) if kind in ("selectbox", "multiselect", "radio") else ()
    return Element(kind, tuple(msg.metadata.delta_path), delta.fragment_id, id=_text(proto, "id"),
                   label=label, text=text, options=options)


class StreamlitClient:
    """A Streamlit session over the websocket protocol the browser speaks
    (``ws://host:port/_stcore/stream``, subprotocol "streamlit", protobuf
    ``BackMsg`` up and ``ForwardMsg`` down), without a browser: it sends exactly
    the bytes a test chooses, as a hostile visitor's browser could.

        async with StreamlitClient(server.url) as client:
            page = await client.run()              # the whole page, as on arrival
            answer = await client.draw(ONE)        # a pen stroke: reruns the Draw fragment
            answer.metric("Prediction")            # "1"

    ``canvas_id`` and ``canvas_fragment`` are the canvas widget's id and the id of
    the fragment it lives in, from the newest run that drew it (Clear and labelling
    make a new canvas, so they change).
    """

    def __init__(self, url, query="", cookies=None):
        self.ws_url = url.replace("http://", "ws://", 1).rstrip("/") + STREAM_PATH
        self.query = query.lstrip("?")
        self.cookies = dict(cookies or {})
        self.ws = None
        self.canvas_id = self.canvas_fragment = None
        self.close_code = None

    async def connect(self, timeout=30):
        import websockets

        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else None
        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                           compression=None, ping_interval=None,
                                           open_timeout=timeout, additional_headers=headers)
        return self

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:  # already closed, or the server is gone
                pass

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def closed(self):
        return self.close_code is not None

    def rerun_message(self, widgets=(), fragment_id=""):
        """The serialized ``BackMsg`` asking for a rerun with these widget states
        (of the fragment ``fragment_id``, or of the whole page)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_script_hash = ""
        if fragment_id:
            msg.rerun_script.fragment_id = fragment_id
        msg.rerun_script.widget_states.widgets.extend(widgets)
        return msg.SerializeToString()

    async def send(self, data):
        """Send raw bytes (a BackMsg, or anything else) as one binary message."""
        await self.ws.send(data)

    async def run(self, widgets=(), fragment_id="", timeout=30):
        """Ask for a rerun and wait (at most ``timeout`` s) for its end -> RunResult."""
        started = time.monotonic()
        try:
            await self.send(self.rerun_message(widgets, fragment_id))
        except Exception as e:  # the connection is closed already
            return RunResult(close_code=self._code(e), seconds=time.monotonic() - started)
        return await self.answer(started, timeout)

    async def burst(self, n, widgets=(), fragment_id="", timeout=30, settle=1.0):
        """``n`` rerun requests back to back, without waiting (rapid reruns), then wait
        for the last run to end: until no message has come for ``settle`` s after a
        run ended. ``seconds`` is the time to the last end."""
        started = time.monotonic()
        data = self.rerun_message(widgets, fragment_id)
        try:
            for _ in range(n):
                await self.send(data)
        except Exception as e:
            return RunResult(close_code=self._code(e), seconds=time.monotonic() - started)
        return await self.answer(started, timeout, settle=settle)

    async def send_canvas(self, value, timeout=30):
        """What the canvas sends on pen-up: a rerun of its fragment with the canvas
        widget holding ``value`` (JSON text)."""
        if self.canvas_id is None:
            await self.run(timeout=timeout)
        return await self.run([json_widget(self.canvas_id, value)], self.canvas_fragment, timeout)

    async def draw(self, strokes, timeout=30):
        return await self.send_canvas(canvas_value(canvas_drawing(strokes)), timeout)

    @staticmethod
    def _code(exc):
        rcvd = getattr(exc, "rcvd", None)
        return rcvd.code if rcvd is not None else getattr(exc, "code", None) or 1006

    async def answer(self, started, timeout, settle=0.0):
        """Read ForwardMsgs until a run ends (not one cut short by a newer rerun
        request) and, with ``settle``, no message follows within ``settle`` s; or
        until the server closes the connection, or ``timeout`` passes."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        result = RunResult()
        deadline = started + timeout
        ended = None
        while True:
            wait = deadline - time.monotonic()
            if ended is not None:
                wait = min(wait, settle)
            try:
                data = await asyncio.wait_for(self.ws.recv(), max(0.01, wait))
            except asyncio.TimeoutError:
                break
            except Exception as e:  # websockets.ConnectionClosed
                self.close_code = result.close_code = self._code(e)
                break
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "delta":
                element = _element(msg)
                if element is not None:
                    result.elements.append(element)
                    if element.kind == "bidi_component" and CANVAS_COMPONENT in element.label:
                        self.canvas_id, self.canvas_fragment = element.id, element.fragment_id
            elif kind == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                if status != "FINISHED_EARLY_FOR_RERUN":
                    result.status, ended = status, time.monotonic()
                    if not settle:
                        break
        result.seconds = (ended or time.monotonic()) - started
        return result
