"""Derive the two ``legrand2020_task1_*.csv`` fixtures from the published recording.

Not run by the tests (they read the CSVs); kept so the fixtures can be checked and rebuilt.
The recording ships inside systole's source distribution (1000 Hz, 25.6 min, ECG and a
respiration belt, one healthy participant; Legrand et al. 2020, Sci Rep,
doi:10.1038/s41598-020-71858-2)::

    pip download --no-deps --no-binary :all: systole==0.3.1 -d /tmp/systole
    tar xzf /tmp/systole/systole-0.3.1.tar.gz -C /tmp/systole
    D=/tmp/systole/systole-0.3.1/src/systole/datasets
    .venv/bin/python tests/data/derive_legrand2020.py $D

Derived, not copied: R peaks by NeuroKit2's default ECG detector, breaths (inspiration peaks)
by its default respiration cleaning and peak detection. No correction is applied to either.
"""

from __future__ import annotations

import sys
from pathlib import Path

import neurokit2 as nk
import numpy as np

FS_HZ = 1000
HERE = Path(__file__).parent


def main(datasets: Path) -> None:
    ecg = np.load(datasets / "Task1_ECG.npy", allow_pickle=False).astype(np.float64)
    rsp = np.load(datasets / "Task1_Respiration.npy", allow_pickle=False).astype(np.float64)
    _, info = nk.ecg_peaks(ecg, sampling_rate=FS_HZ, method="neurokit")
    r = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    with (HERE / "legrand2020_task1_rr.csv").open("w") as fh:
        fh.write("t_s,rr_ms\n")
        for idx, rr in zip(r[1:], np.diff(r), strict=True):
            fh.write(f"{idx / FS_HZ:.3f},{rr * 1000 // FS_HZ}\n")
    _, pinfo = nk.rsp_peaks(nk.rsp_clean(rsp, sampling_rate=FS_HZ), sampling_rate=FS_HZ)
    with (HERE / "legrand2020_task1_breaths.csv").open("w") as fh:
        fh.write("t_s\n")
        for idx in np.asarray(pinfo["RSP_Peaks"], dtype=np.int64):
            fh.write(f"{idx / FS_HZ:.3f}\n")
    print(f"{r.size - 1} intervals, {len(pinfo['RSP_Peaks'])} breaths")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
