"""A real HTTP server on 127.0.0.1, in a thread, serving one folder, well or badly.

`/<name>` serves the file. Leading path segments make it misbehave, and combine
(`/nolength/truncated/<name>`):

- `truncated/`: send only half of the bytes, then close the connection, as a dropped transfer does;
- `nolength/`: send no Content-Length (the body ends when the connection closes);
- `drip/`: send one byte every DRIP_S seconds, as a stalled link does, never silent long
  enough for a per-read timeout;
- `headdrip/`: the same, but in the headers: the status line and headers never end.

`serve(folder, requests)` appends each request's path to the list `requests`.
"""

import contextlib
import functools
import http.server
import threading
import time
from pathlib import Path

BEHAVIOURS = ("truncated", "nolength", "drip", "headdrip")
HEADDRIP_S = 30  # for how long `headdrip/` keeps sending header bytes
DRIP_S = 0.05


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, requests, **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        parts = self.path.lstrip("/").split("/")
        behaviours = set()
        while parts[0] in BEHAVIOURS:
            behaviours.add(parts.pop(0))
        if not behaviours:
            return super().do_GET()
        file = Path(self.directory, *parts)
        if not file.is_file():
            return self.send_error(404)
        self._send(file.read_bytes(), behaviours)

    def _send(self, data: bytes, behaviours: set) -> None:
        if "headdrip" in behaviours:
            return self._drip_headers()
        self.send_response(200)
        if "nolength" not in behaviours:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        body = data[: len(data) // 2] if "truncated" in behaviours else data
        try:
            if "drip" in behaviours:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(DRIP_S)
            else:
                self.wfile.write(body)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what the test wanted
        self.close_connection = True

    def _drip_headers(self) -> None:
        self.close_connection = True
        header = b"HTTP/1.1 200 OK\r\nX-Padding: "
        try:
            self.wfile.write(header)
            ends = time.monotonic() + HEADDRIP_S
            while time.monotonic() < ends:
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(DRIP_S)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what the test wanted


@contextlib.contextmanager
def serve(folder, requests=None):
    """Serve `folder`; yields the base URL (no trailing slash)."""
    handler = functools.partial(_Handler, directory=str(folder), requests=[] if requests is None else requests)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
