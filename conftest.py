"""Test-session settings shared by the unit tests and the notebooks (nbval starts their kernels with
this environment): fast mode, and a throw-away output folder so no test writes into data/."""

import os
import tempfile

os.environ.setdefault("DKDLIB_FAST", "1")
os.environ.setdefault("DKDLIB_OUT", tempfile.mkdtemp(prefix="dkdlib-test-"))
os.environ.setdefault("MPLBACKEND", "Agg")
