"""Test-session settings shared by the unit tests and the notebooks (nbval starts their kernels with
this environment): fast mode, and a throw-away output folder so no test writes into data/."""

import os
import tempfile

os.environ.setdefault("DKDLIB_MODE", "fast")
os.environ.setdefault("DKDLIB_OUT", tempfile.mkdtemp(prefix="dkdlib-test-"))
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: workers run side by side
    # Each its own output folder (two notebooks must not train the same run into one folder at once),
    # and one torch thread each: two workers with a thread per core each slow each other badly.
    os.environ["DKDLIB_OUT"] = os.path.join(os.environ["DKDLIB_OUT"], os.environ["PYTEST_XDIST_WORKER"])
    os.makedirs(os.environ["DKDLIB_OUT"], exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = "1"
