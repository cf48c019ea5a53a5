"""RR file readers: the formats users bring, and one clear line for everything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sensors.readers import read_rr_file
from settle.errors import InputFileError
from tests.conftest import DATA


def test_reads_t_s_rr_ms_csv() -> None:
    rec = read_rr_file(DATA / "pyhrv_nni_short.csv")
    assert rec.fmt == "csv"
    assert rec.rr_ms.size == 337
    assert rec.rr_ms[:3].tolist() == [859.0, 867.0, 883.0]
    assert rec.t_s[:2].tolist() == [0.859, 1.726]


def test_one_rr_per_line_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "elite.txt"
    f.write_text("# exported\n812\n\n790.5\n805\n")
    rec = read_rr_file(f)
    assert rec.fmt == "rr-per-line"
    assert rec.rr_ms.tolist() == [812.0, 790.5, 805.0]
    assert np.allclose(rec.t_s, [0.812, 1.6025, 2.4075])


def test_polar_hrm_rr_mode(tmp_path: Path) -> None:
    f = tmp_path / "x.hrm"
    f.write_text("[Params]\nVersion=106\nMode=000\n\n[HRData]\n1000\n980\n1010\n")
    rec = read_rr_file(f)
    assert rec.fmt == "polar-hrm"
    assert rec.rr_ms.tolist() == [1000.0, 980.0, 1010.0]


@pytest.mark.parametrize(
    ("content", "words", "line"),
    [
        ("", "empty", None),
        ("hello\n", "not a recognised RR file", None),
        ("800\n-5\n", "not positive", 2),
        ("800\nabc\n", "'abc' is not a number", 2),
        ("t_s,rr_ms\n0.8,800\n1.6\n", "expected 2 columns", 3),
        ("t_s,rr_ms\n0.8,800\n0.5,790\n", "go backwards", 3),
        ("800\nnan\n", "not finite", 2),
        ("[Params]\nVersion=106\n", "without an [HRData]", None),
    ],
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, content: str, words: str, line: int | None
) -> None:
    f = tmp_path / "rec.txt"
    f.write_text(content)
    with pytest.raises(InputFileError) as exc:
        read_rr_file(f)
    assert words in str(exc.value)
    assert exc.value.line == line
    assert str(exc.value).startswith(str(f))


def test_missing_binary_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        read_rr_file(tmp_path / "nope.csv")
    with pytest.raises(InputFileError, match="is a directory"):
        read_rr_file(tmp_path)
    b = tmp_path / "x.bin"
    b.write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputFileError, match="binary"):
        read_rr_file(b)
