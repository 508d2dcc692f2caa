"""A CSV with an absurdly long line (issue: hardening, item 5): refused with one line and exit
2 before any parser reads it whole, in bounded memory; ordinary files pass untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from features.io import InputError, check_line_lengths

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_the_first_long_line_is_named_whatever_the_chunks(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(b"customer_id,item_id\n" + b"a,b\n" * 3 + b"x" * 150 + b"\nc,d\n")
    with pytest.raises(InputError, match="line 5 is longer than 100 bytes"):
        check_line_lengths(path, limit=100, chunk=chunk)
    path.write_bytes(b"customer_id,item_id\n" + b"a,b\n" * 50)  # no newline at the end
    check_line_lengths(path, limit=100, chunk=chunk)
    path.write_bytes(b"y" * 101)  # one line, no newline
    with pytest.raises(InputError, match="line 1 "):
        check_line_lengths(path, limit=100, chunk=chunk)


_PEAK = (
    "import resource, sys\n"
    "from patron.cli import main\n"
    "sys.argv = ['patron', 'data', 'validate', sys.argv[1]]\n"
    "try:\n    main()\n"
    "except SystemExit as e:\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
    "    print(f'peak_mb={peak}', file=sys.stderr)\n"
    "    raise\n"
)


def _validate(path: Path) -> tuple[int, list[str], int]:
    """Exit code, stderr lines and peak memory (MB) of ``patron data validate PATH``."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode, lines, int(lines[-1].removeprefix("peak_mb="))


def test_validate_refuses_a_huge_row_in_bounded_memory(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_bytes(b"customer_id,item_id,ts\nc1,i1,2026-01-01\n")
    _, _, baseline_mb = _validate(small)
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:  # a header, one good row, then one 200 MB "row"
        fh.write(b"customer_id,item_id,ts\nc1,i1,2026-01-01\n")
        block = b"z" * (1 << 20)
        for _ in range(200):
            fh.write(block)
    code, lines, peak_mb = _validate(path)
    assert code == 2, lines
    assert not any("Traceback" in line for line in lines)
    assert "line 3 is longer than 1,048,576 bytes" in lines[-2], lines
    # the interpreter and its libraries, as for a two-line file: not the 200 MB row
    assert peak_mb < baseline_mb + 100, (peak_mb, baseline_mb)
