"""Runs schemathesis against a served e5rt's own /openapi.json and prints one JSON summary line.

usage: .venv/bin/python tests/support/contract.py URL [MAX_EXAMPLES]

Checks: no server error; every status, content type and body as the spec declares; every schema-valid request
accepted (positive_data_acceptance; schemathesis.toml names the one 413 a valid body can meet); a wrong method
answered 405 with an Allow header. Exit status: schemathesis's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "positive_data_acceptance",
    "unsupported_method",
    "allow_header_conformance",
)


def main() -> int:
    url = sys.argv[1]
    examples = sys.argv[2] if len(sys.argv) > 2 else "40"
    cli = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory(prefix="e5rt-contract-") as tmp:
        events = Path(tmp) / "events.ndjson"
        proc = subprocess.run(
            [
                str(cli),
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                f"{url}/openapi.json",
                "--url",
                url,
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                examples,
                "--seed",
                "5",
                "--generation-deterministic",
                "--phases",
                "examples,coverage,fuzzing",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(events),
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        operations, requests = set(), 0
        for line in events.read_text().splitlines() if events.exists() else []:
            event = json.loads(line)
            for kind, body in event.items():
                if kind == "ScenarioFinished":
                    recorder = body.get("recorder", {})
                    requests += (
                        sum(len(x) for x in recorder.get("interactions", {}).values())
                        if isinstance(recorder.get("interactions"), dict)
                        else 0
                    )
                    label = recorder.get("label")
                    if label:
                        operations.add(label)
    print(proc.stdout[-8000:], file=sys.stderr)
    print(proc.stderr[-3000:], file=sys.stderr)
    print(json.dumps({"returncode": proc.returncode, "operations": len(operations), "requests": requests}))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
