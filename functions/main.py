"""The functions-framework source for every ABAXUS function (one image, many targets):

    functions-framework --source functions/main.py --target ingest

Each target is an HTTP-signature function that serves its /v1 routes and receives
CloudEvents on POST /.
"""

from __future__ import annotations

import os

from core.config import settings
from core.logging import configure_logging
from core.services.runtime import freeze_heap, start_role_loops
from functions.aggregate import aggregate
from functions.api import api
from functions.calculate import calculate
from functions.charge import charge
from functions.framework import install as install_framework_answers
from functions.ingest import ingest
from functions.invoice import invoice

configure_logging(settings().abaxus_log_level)
install_framework_answers()
# Imported before gunicorn forks its workers (functions-framework loads the source in the
# master): the objects of every module are frozen once and shared by the workers.
freeze_heap()
# A region's ingest pods write its heartbeat; a central's aggregate pods fold replicated
# events as they arrive (API.md §10): threads of each worker, started after gunicorn forks it.
# (Knative sets K_SERVICE; the dev server serves every function in one process and starts
# them itself.)
if os.environ.get("K_SERVICE"):
    os.register_at_fork(
        after_in_child=lambda: start_role_loops({os.environ.get("FUNCTION_TARGET", "")})
    )

__all__ = ["aggregate", "api", "calculate", "charge", "ingest", "invoice"]
