"""Start-up objects are left out of the garbage collector's scans (runtime.freeze_heap):
a full collection walked ~250,000 of them, stopping a worker for ~200 ms under load."""

import subprocess
import sys


def test_importing_the_functions_freezes_what_start_up_created():
    code = (
        "import gc\n"
        "assert gc.get_freeze_count() == 0\n"
        "import functions.main\n"
        "frozen = gc.get_freeze_count()\n"
        "gc.collect()\n"
        "print(frozen, len(gc.get_objects(generation=2)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    frozen, scanned = map(int, result.stdout.split())
    assert frozen > 100_000  # every module's objects: Flask, SQLAlchemy, the schemas, ...
    assert scanned < frozen / 10  # what a full collection still walks
