"""One measurement, in a fresh process: ``python -m bench.worker SPEC_JSON``.

SPEC_JSON is ``{"module": ..., "runtime": ..., "params": {...}}``. The worker
imports only the runtime under test, runs the module's implementation for the
runtime's family, and prints the result as one JSON line on stdout, with the
process's peak RSS (``maxrss_kb``) added.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys

from bench.runtimes import BY_NAME, loop_factory


def main() -> None:
    spec = json.loads(sys.argv[1])
    runtime = BY_NAME[spec["runtime"]]
    module = importlib.import_module(spec["module"])
    run = getattr(module, f"on_{runtime.family}")
    if runtime.family == "asyncio":
        result = run(spec["params"], loop_factory(runtime.name))
    else:
        result = run(spec["params"])
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
