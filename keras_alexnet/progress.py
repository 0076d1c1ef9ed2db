"""One progress display for every long loop: a live bar on a terminal, plain lines in a log.

On a terminal `Progress` draws a tqdm bar. Anywhere else (a file, a pipe, a CI log) a bar's
carriage returns and ANSI codes would fill the log with garbage, so it writes a plain line
at most every 10 % of the total or every 30 s, and a last one when closed:

    images: 300/1000 (30 %), 45.2 img/s
    step: 40/50 (80 %), 3.1 step/s, loss 0.4812, top1 0.8125

Usage: `with Progress(total, "images", "img") as bar: ... bar.add(n)`; a training loop
replaces `keras.utils.Progbar(steps)` with `Progress(steps, "step", "step", initial=skip)`
and calls `bar.update(step, {"loss": loss, "top1": top1})`.
"""

import sys
import time

LINE_FRACTION = 0.1  # a plain line each time another 10 % is done ...
LINE_SECONDS = 30.0  # ... or when this long has passed since the last one


class Progress:
    """Progress of `total` units (None: unknown) written to `stream` (default stderr)."""

    def __init__(
        self,
        total,
        desc,
        unit="it",
        *,
        initial=0,
        stream=None,
        enabled=True,
        every_fraction=LINE_FRACTION,
        every_seconds=LINE_SECONDS,
        clock=time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self._start_done = self._line_done = initial
        self._last_line = None  # `done` when the last plain line was written
        self.values = {}
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.every_fraction, self.every_seconds = every_fraction, every_seconds
        self._clock = clock
        self._start = self._line_time = clock()
        self._bar = self._tqdm() if enabled and _is_terminal(self.stream) else None
        self._closed = False

    def _tqdm(self):
        """A tqdm bar on the terminal stream."""
        from tqdm import tqdm

        return tqdm(
            total=self.total, desc=self.desc, unit=self.unit, initial=self.done, file=self.stream
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def add(self, n=1, values=None):
        """Advance by `n` units; `values` (a dict of floats) are shown after the count."""
        self.update(self.done + n, values)

    def update(self, current, values=None):
        """Set the position to `current` units done (as `keras.utils.Progbar.update`)."""
        delta, self.done = current - self.done, current
        if values:
            self.values.update(dict(values))
        if not self.enabled:
            return
        if self._bar is not None:
            if self.values:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in self.values.items()}, False)
            self._bar.update(delta)
        elif self._line_due():
            self._write_line()

    def close(self):
        """End the display: close the bar, or write the last line unless it was just written."""
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._last_line != self.done:
            self._write_line()

    def _line_due(self):
        """Whether another 10 % or 30 s has passed since the last plain line."""
        if self._last_line == self.done:
            return False
        if self._clock() - self._line_time >= self.every_seconds:
            return True
        if not self.total:
            return False
        step = max(1, round(self.total * self.every_fraction))
        return self.done // step > self._line_done // step or self.done >= self.total

    def _write_line(self):
        """Write one plain status line."""
        now = self._clock()
        self._line_done = self._last_line = self.done
        self._line_time = now
        self.stream.write(self.line(now - self._start) + "\n")
        self.stream.flush()

    def line(self, seconds):
        """The plain status line after `seconds`, e.g. `images: 300/1000 (30 %), 45.2 img/s`."""
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        if self.total:
            count += f" ({100 * self.done / self.total:.0f} %)"
        parts = [f"{self.desc}: {count}"]
        if seconds > 0:
            parts.append(f"{(self.done - self._start_done) / seconds:.1f} {self.unit}/s")
        parts += [f"{name} {value:.4f}" for name, value in self.values.items()]
        return ", ".join(parts)


def _is_terminal(stream):
    """Whether `stream` is an interactive terminal (a StringIO or a closed file is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
