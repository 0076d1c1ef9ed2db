"""The two environments the README installs: how long each takes, how big it is, what it holds.

Each environment is a fresh `python -m venv` with an empty pip cache, installed with the
README's own command (`ENVIRONMENTS`), then measured: wall time of the install, size on
disk, the largest distributions, and CUDA: any `nvidia-*` or `triton` distribution and any
CUDA shared library (libcudart, libcublas, libcudnn, libnccl, ...). The wheels come from
whatever index pip is configured with (on the CI machine a local mirror, so the time is
unpacking and resolving, not the network).

With --pypi-torch it also asks pypi.org (pip's resolver, `--dry-run`, and the index's JSON
file sizes) what `torch==2.13.0` from PyPI alone would bring: the CUDA build, the reason
the test install takes PyTorch's CPU index first.

    python benchmarks/bench_install.py [--env quick-start,tests] [--pypi-torch] [--write]
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Install"
# name: the README's install command for it (the quick start's; the tests').
ENVIRONMENTS = {
    "quick-start": 'pip install -e ".[cpu,plots]"',
    "tests": "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu "
    '&& pip install -e ".[dev]"',
}
PYPI = "https://pypi.org/simple"
CUDA_DISTRIBUTION = re.compile(r"^(nvidia-|triton$)", re.I)
CUDA_LIBRARY = re.compile(
    r"^lib(cuda|cudart|cublas|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc)"
)


def tree_bytes(path):
    """Bytes of the regular files under `path` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def site_packages(venv):
    """The environment's site-packages folder."""
    return next((venv / "lib").glob("python3*/site-packages"))


def distributions(venv):
    """(name, bytes) of every distribution installed in `venv`, largest first."""
    rows = []
    for dist in metadata.distributions(path=[str(site_packages(venv))]):
        files = [dist.locate_file(f) for f in dist.files or ()]
        rows.append((dist.metadata["Name"], sum(f.stat().st_size for f in files if f.is_file())))
    return sorted(rows, key=lambda row: -row[1])


def cuda_contents(venv, dists):
    """CUDA distributions and shared libraries found in `venv`."""
    found = [name for name, _ in dists if CUDA_DISTRIBUTION.match(name)]
    for _, _, files in os.walk(site_packages(venv)):
        found += [name for name in files if CUDA_LIBRARY.match(name) and ".so" in name]
    return sorted(set(found))


def install(name, command, workdir):
    """Create the venv, run `command` (pip installs joined by &&) with an empty cache."""
    venv = workdir / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    env = {**os.environ, "PIP_CACHE_DIR": str(workdir / f"{name}-cache")}
    env.pop("PYTHONPATH", None)
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, env=env)
    start = time.perf_counter()
    for step in command.split("&&"):
        args = shlex.split(step)[2:]  # after "pip install"
        subprocess.run([*pip, "install", "-q", *args], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start, venv


def measure(name, workdir):
    """One table row's values for environment `name`."""
    seconds, venv = install(name, ENVIRONMENTS[name], workdir)
    dists = distributions(venv)
    largest = ", ".join(f"{n} {b / 2**20:.0f}" for n, b in dists[:5])
    return {
        "name": name, "command": ENVIRONMENTS[name], "seconds": seconds,
        "bytes": tree_bytes(venv), "count": len(dists), "largest": largest,
        "cuda": cuda_contents(venv, dists),
    }  # fmt: skip


def pypi_torch(workdir):
    """One line: what `pip install torch==2.13.0` resolves to on pypi.org alone."""
    report = workdir / "torch.json"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
         "--report", str(report), "--index-url", PYPI, "torch==2.13.0"],
        check=True, env=env,
    )  # fmt: skip
    wanted = json.loads(report.read_text())["install"]
    sizes = {item["metadata"]["name"]: wheel_bytes(item) for item in wanted}
    cuda = [name for name in sizes if CUDA_DISTRIBUTION.match(name) or name.startswith("cuda-")]
    return (
        f"`pip install torch==2.13.0` from {PYPI} alone: {len(sizes)} distributions, "
        f"{sum(sizes.values()) / 2**30:.2f} GiB of wheels, {len(cuda)} of them CUDA's or "
        f"triton ({sum(sizes[n] for n in cuda) / 2**30:.2f} GiB)."
    )


def wheel_bytes(item):
    """The size of a resolved file, from the index's JSON page (PEP 691)."""
    name, url = item["metadata"]["name"], item["download_info"]["url"]
    request = urllib.request.Request(
        f"{PYPI}/{name.lower()}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        files = json.load(answer)["files"]
    return next(f["size"] for f in files if f["filename"] == url.rsplit("/", 1)[1])


def table(rows):
    """The Markdown table."""
    lines = [
        "| environment | command | install (s) | size (MiB) | distributions | largest (MiB) "
        "| CUDA |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cuda = ", ".join(r["cuda"]) or "none"
        lines.append(
            f"| {r['name']} | `{r['command']}` | {r['seconds']:.0f} | {r['bytes'] / 2**20:,.0f} "
            f"| {r['count']} | {r['largest']} | {cuda} |"
        )
    return "\n".join(lines)


def main():
    """Install, measure, print, and with --write record the table in RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(ENVIRONMENTS)
    p.add_argument("--env", default=",".join(ENVIRONMENTS),
                   help=f"comma-separated environments to install: {names}")  # fmt: skip
    p.add_argument("--pypi-torch", action="store_true",
                   help="also resolve PyTorch from pypi.org alone (needs pypi.org)")  # fmt: skip
    p.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = p.parse_args()
    names = args.env.split(",")
    if unknown := sorted(set(names) - set(ENVIRONMENTS)):
        p.error(f"no environment {', '.join(unknown)}; choose from {', '.join(ENVIRONMENTS)}")
    with tempfile.TemporaryDirectory(prefix="bench_install_") as tmp:
        rows = []
        for name in names:
            rows.append(measure(name, Path(tmp)))
            print(table(rows[-1:]), flush=True)
        text = table(rows)
        if args.pypi_torch:
            text += "\n\n" + pypi_torch(Path(tmp))
    print(text)
    if args.write:
        common.update_section(TITLE, f"{common.provenance()}\n\n{text}")


if __name__ == "__main__":
    main()
