"""Keep TensorFlow's and its image libraries' own lines out of our commands' stderr.

Importing TensorFlow writes INFO lines straight to file descriptor 2 from C++, before its
logging is configured, so TF_CPP_MIN_LOG_LEVEL does not silence all of them ("oneDNN
custom operations are on", "This TensorFlow binary is optimized ..."). They would sit in
front of every one-line error our commands print. `install` adds an import hook that runs
TensorFlow's first import with fd 2 captured and replays every captured line except
those banner lines (all INFO). It is not installed when the user asked for INFO lines
(TF_CPP_MIN_LOG_LEVEL=0) or when TensorFlow is already imported.

Later, C++ writes to fd 2 on its own: absl log lines at ERROR too ("E0000 ...
jpeg_mem.cc:331] Premature end of JPEG data"), which TF_CPP_MIN_LOG_LEVEL=2 keeps, and
libjpeg's and libpng's messages about a corrupt image ("Corrupt JPEG data: 399 extraneous
bytes before marker 0xda"), which no log level reaches, once per file and epoch. Our
commands say the same in their words (a skipped file and why). `filter_native_stderr`
routes fd 2 through a small filter process that drops those lines (NATIVE_NOISE) and
passes every other one; Python's own writes (sys.stderr) go straight to the terminal. A
separate process, so that a FATAL line written just before an abort still arrives.
"""

import atexit
import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import signal
import subprocess
import sys
import tempfile

BANNER = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def filtered_stderr(banner=BANNER):
    """Capture fd 2 for the block; then write back every line not containing a `banner` text."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(b in line for b in banner)]  # fmt: skip
            if kept:  # back to fd 2, through `filter_native_stderr`'s filter if there is one
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write("".join(kept).encode())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A one-shot meta path finder wrapping TensorFlow's first import in `filtered_stderr`."""

    def find_spec(self, name, path, target=None):
        """Find `tensorflow` as usual, with its module execution wrapped; pass on anything else."""
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with filtered_stderr():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def install():
    """Install the import hook (see the module docstring for when it is not)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0" or "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


# The lines `filter_native_stderr` drops: absl log entries below FATAL with every line they
# span (a Status's message runs over several lines: "/job:worker/replica:0/task:1: ...",
# "The tasks have crashed. ... Restart your program to reset."), absl's notice before its
# set-up, and libjpeg's (jerror.h) and libpng's messages about a corrupt image. A FATAL
# entry (F...), a crash report (ENTRY_BREAK) and anything else passes.
_ABSL_HEADER = rb"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
_ABSL_LINE = rb"[IWE]" + _ABSL_HEADER
# Lines that end an absl entry we drop: the next entry, and what a crashing process writes.
_ABSL_ENTRY = re.compile(_ABSL_LINE)
ENTRY_BREAK = re.compile(
    rb"[IWEF]" + _ABSL_HEADER + rb"|terminate called|Fatal Python error|\*\*\* |Traceback "
)
_IMAGE_LIBRARIES = (
    "Corrupt JPEG data", "Premature end of JPEG file", "Premature end of input file",
    "Warning: unknown JFIF revision", "Invalid SOS parameters", "Inconsistent progression",
    "Application transferred too", "Unknown Adobe color transform", "Not a JPEG file",
    "Bogus ", "Unsupported marker type", "Unsupported JPEG", "Invalid JPEG file structure",
    "Invalid component ID", "Invalid progressive parameters", "Input file read error",
    "Empty input file", "Empty JPEG image", "Huffman table 0x", "Arithmetic table 0x",
    "Quantization table 0x", "Huffman code size table overflow", "Image too big",
    "Maximum supported image dimension", "Improper call to JPEG library",
    "Wrong JPEG library version", "Sampling factors too large", "Too many color components",
    "Unsupported color conversion", "DCT coefficient out of range", "Insufficient memory (case",
    "libpng warning: ", "libpng error: ",
)  # fmt: skip
NATIVE_NOISE = re.compile(
    b"|".join(
        [_ABSL_LINE, rb"WARNING: All log messages before absl::InitializeLog\(\)"]
        + [re.escape(m.encode()) for m in _IMAGE_LIBRARIES]
    )
)
_WAIT_AT_EXIT = 2.0  # seconds the filter may take to pass on the last lines at exit
_filtering = False  # whether this process's fd 2 goes through the filter


def filter_lines(source, sink):
    """Copy binary stream `source` to `sink` line by line, leaving out NATIVE_NOISE lines."""
    in_entry = False  # inside an absl entry being dropped
    for line in iter(source.readline, b""):
        if in_entry and not ENTRY_BREAK.match(line):  # "\t [[{{node ...}}]]", a Status's lines
            continue
        in_entry = _ABSL_ENTRY.match(line) is not None
        if not in_entry and NATIVE_NOISE.match(line) is None:
            sink.write(line)
            sink.flush()


def filter_native_stderr():
    """Send fd 2 through a NATIVE_NOISE filter process; sys.stderr keeps the real stream.

    For a command's own process only (it replaces sys.stderr); a no-op when fd 2 is closed.
    """
    global _filtering
    if _filtering:
        return
    try:
        real = os.dup(2)
    except OSError:
        return
    read, write = os.pipe()
    try:  # this file as a script (-I: the standard library only), in its own process
        # group: a Ctrl-C interrupts the command, not the filter
        filter_process = subprocess.Popen(
            [sys.executable, "-I", __file__], stdin=read, stdout=real, process_group=0
        )
    except OSError:  # no interpreter to start: stderr stays as it is
        for fd in (read, write, real):
            os.close(fd)
        return
    os.close(read)
    sys.stderr.flush()
    os.dup2(write, 2)
    os.close(write)
    sys.stderr = open(  # noqa: SIM115 (the process's stderr from now on)
        real, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )

    def finish():
        sys.stderr.flush()
        os.dup2(real, 2)  # the filter sees the end of its input once children let go too
        with contextlib.suppress(subprocess.TimeoutExpired):
            filter_process.wait(_WAIT_AT_EXIT)

    atexit.register(finish)
    _filtering = True


if __name__ == "__main__":  # the filter process of `filter_native_stderr`
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    filter_lines(sys.stdin.buffer, sys.stdout.buffer)
