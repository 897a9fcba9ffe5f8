"""Progress lines for long jobs' logs (count, rate, time left), readable by a person; imports no torch."""

import sys
import time


class Progress:
    """Progress lines on stderr (the job's log), every `every_s` seconds or `every_n` images, and at the end."""

    def __init__(self, label: str, total: int, every_s: float = 30.0, every_n: int = 10000, clock=time.monotonic):
        self.label, self.total, self.every_s, self.every_n, self.clock = label, total, every_s, every_n, clock
        self.done, self.started = 0, clock()
        self.last_time, self.last_done = self.started, 0

    def advance(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self.last_time >= self.every_s or self.done - self.last_done >= self.every_n:
            self._print(progress_line(self.label, self.done, self.total, now - self.started))
            self.last_time, self.last_done = now, self.done

    def finish(self) -> None:
        seconds = self.clock() - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        self._print(f"{self.label}: {self.done}/{self.total} images, {rate:.0f} img/s, done in {duration(seconds)}")

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def progress_line(label: str, done: int, total: int, seconds: float) -> str:
    """'shard 3/16 train: 12000/83000 images, 212 img/s, 5 min 35 s left'."""
    rate = done / seconds if seconds > 0 else 0.0
    left = duration((total - done) / rate) if rate > 0 else "unknown time"
    return f"{label}: {done}/{total} images, {rate:.0f} img/s, {left} left"


def duration(seconds: float) -> str:
    """8 min 22 s, 1 h 05 min, 42 s."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"
