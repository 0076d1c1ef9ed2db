"""Keep TensorFlow's start-up banner out of our commands' stderr, and nothing else.

Importing TensorFlow writes INFO lines straight to file descriptor 2 from C++, before its
logging is configured, so TF_CPP_MIN_LOG_LEVEL does not silence all of them ("oneDNN
custom operations are on", "This TensorFlow binary is optimized ..."). They would sit in
front of every one-line error our commands print. `install` adds an import hook that runs
TensorFlow's first import with fd 2 captured and replays every captured line except
those banner lines (all INFO). It is not installed when the user asked for INFO lines
(TF_CPP_MIN_LOG_LEVEL=0) or when TensorFlow is already imported.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
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
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


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
