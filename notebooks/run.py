"""Execute every analytics notebook headless and write the outputs to reports/.

The notebooks live as jupytext "percent" scripts (notebooks/<name>.py, the source of truth)
with a paired notebooks/<name>.ipynb (no outputs) for Jupyter users. For each notebook this:
reads the .py with jupytext, runs it with nbclient on a python3 kernel that is *this*
interpreter (a kernelspec written to a temporary JUPYTER_PATH, so nothing is registered in
the user's home), with the project root first on PYTHONPATH and matplotlib on Agg, and
writes the executed notebook to <out>/<name>/<name>.ipynb. The notebook itself writes its
PNG plots and CSV tables next to it (it reads PATRON_REPORTS_DIR). Exit status 1 if any
cell of any notebook fails (the partial notebook is still written, to debug from).

    python notebooks/run.py                 # all notebooks -> reports/
    python notebooks/run.py --only loyalty_cdnow --out /tmp/r
    python notebooks/run.py --sync          # rewrite the paired .ipynb files, run nothing
    python notebooks/run.py --check-sync    # fail if a paired .ipynb is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = ("loyalty_cdnow", "clv_models_cdnow", "model_eval_ml100k")
KERNEL = "patron-python3"
CELL_TIMEOUT_S = 600


def paired_notebook(name: str, nb_dir: Path = NB_DIR) -> nbformat.NotebookNode:
    """The .ipynb form of notebooks/<name>.py, without outputs (what --sync writes).

    Cell ids are numbered, not random, so regenerating the .ipynb gives the same file.
    """
    nb = jupytext.read(nb_dir / f"{name}.py")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def _sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def sync(names: list[str], check: bool, nb_dir: Path = NB_DIR) -> int:
    """Write (or with check, compare) notebooks/<name>.ipynb from the .py script."""
    stale = []
    for name in names:
        target = nb_dir / f"{name}.ipynb"
        nb = paired_notebook(name, nb_dir)
        if check:
            if not target.is_file() or _sources(nbformat.read(target, as_version=4)) != _sources(
                nb
            ):
                stale.append(os.path.relpath(target, ROOT))
        else:
            jupytext.write(nb, target)
            print(f"wrote {os.path.relpath(target, ROOT)}", file=sys.stderr)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run `python notebooks/run.py --sync`",
            file=sys.stderr,
        )
        return 1
    return 0


def _kernel_env(tmp: Path) -> None:
    """Point Jupyter at a private kernelspec for this interpreter; keep state out of $HOME."""
    spec = tmp / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (patron)",
                "language": "python",
            }
        )
    )
    os.environ["JUPYTER_PATH"] = str(tmp)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    os.environ["IPYTHONDIR"] = str(tmp / "ipython")
    os.environ["MPLBACKEND"] = "Agg"
    # tqdm.auto (imported by implicit) warns in a kernel without ipywidgets; not our output
    extra = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = "ignore:IProgress not found" + (f",{extra}" if extra else "")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")


def execute(name: str, out_root: Path, nb_dir: Path = NB_DIR) -> tuple[bool, float, str]:
    """Run one notebook; returns (ok, seconds, message)."""
    out_dir = out_root / name
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PATRON_REPORTS_DIR"] = str(out_dir)
    nb = paired_notebook(name, nb_dir)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        record_timing=False,
        resources={"metadata": {"path": str(ROOT)}},
    )
    start = time.perf_counter()
    ok, msg = True, "ok"
    try:
        client.execute()
    except CellExecutionError as exc:
        ok = False
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        msg = text.splitlines()[-1] if text else repr(exc)
    seconds = time.perf_counter() - start
    nb.metadata.pop("kernelspec", None)
    nbformat.write(nb, out_dir / f"{name}.ipynb")
    return ok, seconds, msg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "reports", help="reports folder")
    ap.add_argument("--only", action="append", metavar="NAME", help=f"one of {NOTEBOOKS}")
    ap.add_argument("--dir", type=Path, default=NB_DIR, help="folder of the .py notebooks")
    ap.add_argument("--sync", action="store_true", help="rewrite notebooks/*.ipynb and stop")
    ap.add_argument("--check-sync", action="store_true", help="check notebooks/*.ipynb, stop")
    args = ap.parse_args(argv)
    names = list(args.only or NOTEBOOKS)
    missing = [n for n in names if not (args.dir / f"{n}.py").is_file()]
    if missing:
        print(
            f"no notebook {missing} in {args.dir}; known: {', '.join(NOTEBOOKS)}", file=sys.stderr
        )
        return 2
    if args.sync or args.check_sync:
        return sync(names, check=args.check_sync, nb_dir=args.dir)
    failed = []
    with tempfile.TemporaryDirectory(prefix="patron-nb-") as tmp:
        _kernel_env(Path(tmp))
        for name in names:
            ok, seconds, msg = execute(name, args.out.resolve(), args.dir)
            status = "ok" if ok else f"FAILED: {msg}"
            print(f"{name}: {status} ({seconds:.1f} s) -> {args.out / name}", file=sys.stderr)
            if not ok:
                failed.append(name)
    print(json.dumps({"notebooks": names, "failed": failed, "out": str(args.out)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
