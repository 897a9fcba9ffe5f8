"""Fetch a file over HTTP(S): streamed, verified, atomic, and bounded in time.

The file appears at `out` only once every byte has arrived and is verified:
by its checksum when one is given, else by the length the server declared (a
server that declares none is refused without a checksum, because a transfer
cut short could not be told from a whole one). A failed, short or too slow
transfer leaves nothing behind, so a rerun simply downloads again.
"""

import hashlib
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from vitpeft.errors import VitpeftError
from vitpeft.fileio import atomic_path, explained_os_errors

BLOCK = 1 << 16  # at most per read; less client CPU than 1 MiB reads (benchmarks/download_speed.py)
TIMEOUT_S = 60  # per socket operation: a silent server is given up on after this
DEADLINE_S = 6 * 3600  # the whole transfer: a server dripping bytes never trips the per-read timeout
REPORT_EVERY = 100 << 20  # one progress line per 100 MiB keeps cluster logs readable
SCHEMES = ("http", "https")


def download(url: str, out, md5: str | None = None, sha256: str | None = None, deadline_s: float = DEADLINE_S,
             check=None) -> Path:
    """Download `url` to `out`, verifying `md5` and/or `sha256` when given, else the declared length.

    Gives up after `deadline_s` seconds in all, headers included: at the
    deadline the connection is shut, whatever it is waiting for. `check(tmp)`,
    when given, reads the complete file before it appears at `out`; a
    VitpeftError it raises leaves nothing behind.
    """
    out = Path(out)
    expected = _checked_request(url, out, deadline_s, md5=md5, sha256=sha256)
    with explained_os_errors(out), atomic_path(out) as tmp:
        _download_to(url, tmp, out, expected, deadline_s)
        if check is not None:
            check(tmp)
    return out


def _checked_request(url: str, out: Path, deadline_s: float, **checksums) -> dict:
    """Refuse what can be known to fail before any connection is made; return the checksums to verify."""
    expected = {name: value.lower() for name, value in checksums.items() if value}
    for name, value in expected.items():
        length = hashlib.new(name).digest_size * 2
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise VitpeftError(f"--{name} must be {length} hex digits, got {value!r}")
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as error:  # e.g. an unclosed [ in the host
        raise VitpeftError(f"cannot download {url!r}: not a valid URL ({error})") from None
    if scheme not in SCHEMES:
        got = f"{scheme}://" if scheme else "no scheme"
        raise VitpeftError(
            f"cannot download {url!r}: only http:// and https:// URLs are supported (this one has {got}); "
            "give the file's web address, or copy a local file to --out yourself"
        )
    if out.is_dir():
        raise VitpeftError(f"--out {out} is a folder; give the path of the file to write")
    if not deadline_s > 0:
        raise VitpeftError(f"--deadline must be a positive number of seconds, got {deadline_s}")
    return expected


def _download_to(url: str, tmp: Path, out: Path, expected: dict, deadline_s: float) -> None:
    """Stream `url` into `tmp` and verify it; errors name `url` and `out`, never `tmp`."""
    with open(tmp, "wb") as sink, _Watchdog(deadline_s) as watchdog:  # an unwritable destination fails first
        with _open(url, out, watchdog, deadline_s) as response:
            declared = _declared_length(response)
            if declared is None and not expected:
                raise VitpeftError(
                    f"{url} declares no Content-Length, so a transfer cut short could not be told from a whole "
                    f"file; nothing was written to {out}: give its checksum (--md5 or --sha256) to download it"
                )
            digests, received = _stream(response, sink, url, out, watchdog, deadline_s)
    if declared is not None and received != declared:
        raise VitpeftError(
            f"download of {url} is truncated: got {received} of {declared} bytes (the connection was cut); "
            f"nothing was written to {out}: run it again"
        )
    for name, value in expected.items():
        if digests[name].hexdigest() != value:
            raise VitpeftError(
                f"{out.name} downloaded from {url} has {name} {digests[name].hexdigest()}, expected {value}; "
                f"nothing was written to {out}: check the checksum, or run again if the transfer was corrupted"
            )


class _Watchdog:
    """Shuts every connection it opened once `deadline_s` has passed.

    A per-read timeout never trips on a server that sends a byte every few
    seconds, in its headers or its body; shutting the socket from a timer ends
    whichever read is waiting, so the deadline holds to the second.
    """

    def __init__(self, deadline_s: float):
        self.deadline = time.monotonic() + deadline_s
        self.sockets: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(deadline_s, self._shut)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    @property
    def expired(self) -> bool:
        return self.fired or time.monotonic() > self.deadline

    def _shut(self) -> None:
        self.fired = True
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def opener(self):
        """A urllib opener whose connections (redirects included) this watchdog can shut."""
        watched = self

        def connection(base):
            class Watched(base):
                def connect(self):
                    super().connect()
                    watched.sockets.append(self.sock)
                    if watched.fired:  # connected just after the timer ran
                        watched._shut()
            return Watched

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(connection(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(connection(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(HTTP, HTTPS)


def _open(url: str, out: Path, watchdog: _Watchdog, deadline_s: float):
    try:
        response = watchdog.opener().open(url, timeout=min(TIMEOUT_S, deadline_s))
    except urllib.error.HTTPError as error:
        raise VitpeftError(f"download of {url} failed: HTTP {error.code} {error.reason}; check the URL") from None
    except (OSError, http.client.HTTPException) as error:  # refused, unreachable, timed out, garbled headers
        if watchdog.expired:
            raise _past_deadline(url, out, 0, deadline_s) from None
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise VitpeftError(
            f"download of {url} failed: {_reason(reason)}; check the URL and that this machine can reach it"
        ) from None
    if watchdog.expired:  # headers cut short by the watchdog can still parse
        response.close()
        raise _past_deadline(url, out, 0, deadline_s)
    return response


def _declared_length(response) -> int | None:
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _stream(response, sink, url: str, out: Path, watchdog: _Watchdog, deadline_s: float):
    """Copy the body into `sink`; return its md5 and sha256 digests and its length."""
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    received, next_report = 0, REPORT_EVERY
    while True:
        if watchdog.expired:
            raise _past_deadline(url, out, received, deadline_s)
        try:
            block = response.read1(BLOCK)
        except (OSError, http.client.HTTPException) as error:
            if watchdog.expired:
                raise _past_deadline(url, out, received, deadline_s) from None
            raise VitpeftError(
                f"download of {url} broke off after {received} bytes ({_reason(error)}); "
                f"nothing was written to {out}: run it again"
            ) from None
        if not block:
            if watchdog.expired:  # the watchdog shut the socket: an end, but not the file's
                raise _past_deadline(url, out, received, deadline_s)
            return digests, received
        sink.write(block)
        for digest in digests.values():
            digest.update(block)
        received += len(block)
        if received >= next_report:
            _progress(url, received, _declared_length(response))
            next_report += REPORT_EVERY


def _past_deadline(url: str, out: Path, received: int, deadline_s: float) -> VitpeftError:
    return VitpeftError(
        f"download of {url} passed its deadline of {deadline_s:g} s after {received} bytes "
        f"(the server is too slow); nothing was written to {out}: run it again, or raise --deadline"
    )


def _reason(error) -> str:
    if isinstance(error, BaseException):
        return getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(error)


def _progress(url: str, received: int, total: int | None) -> None:
    of_total = f" of {total >> 20} MiB" if total else ""
    print(f"{os.path.basename(url)}: {received >> 20} MiB{of_total}", file=sys.stderr, flush=True)
