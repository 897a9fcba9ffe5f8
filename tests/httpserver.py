"""A real HTTP server on 127.0.0.1, in a thread, serving one folder.

`/<name>` serves the file; `/truncated/<name>` announces the full
Content-Length but sends only half of the bytes and closes the connection,
as a dropped transfer does.
"""

import contextlib
import functools
import http.server
import threading
from pathlib import Path

TRUNCATED = "/truncated/"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if not self.path.startswith(TRUNCATED):
            return super().do_GET()
        data = (Path(self.directory) / self.path[len(TRUNCATED):]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def serve(folder):
    """Serve `folder`; yields the base URL (no trailing slash)."""
    handler = functools.partial(_Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
