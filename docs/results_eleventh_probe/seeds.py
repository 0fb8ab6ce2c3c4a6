"""Eight seeds, or a curve, of one model of the eleventh probe (session 34),
with the session-32 script's loop (`docs/results_depth_ceiling/depth_ceiling.py`).

    python docs/results_eleventh_probe/seeds.py seeds|windows NAME SCALE SEEDS READINGS

READINGS: comma-separated `adam`, `shipped`. `seeds` prints the geometric
mean of the final losses and each run's final loss with its stability ratio
in brackets; `windows`, the geometric mean over the seeds of each twentieth
of the run (the curve).
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "results_depth_ceiling")]
import depth_ceiling  # noqa: E402
import probe11  # noqa: E402

if __name__ == "__main__":
    depth_ceiling.MODELS.update(probe11.PROBES)
    mode, name, scale, seed_list, labels = sys.argv[1:6]
    depth_ceiling.seeds(
        name,
        float(scale),
        [int(s) for s in seed_list.split(",")],
        labels.split(","),
        curve=mode == "windows",
    )
