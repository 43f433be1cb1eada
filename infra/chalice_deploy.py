"""``chalice deploy`` that keeps what it created when it fails part way (run by ``infra/stage.py deploy``).

Chalice writes ``.chalice/deployed/<stage>.json`` only after every step succeeded. A deploy that fails after
creating the REST API (or a function, a rule, a role) would leave them unrecorded, and the next deploy would create
a second REST API with a new URL. Here a failed deploy records what its steps had recorded so far, merged over the
state it started from, before the error goes on as usual (same output, same exit status).

    python infra/chalice_deploy.py deploy --stage STAGE    (any arguments of ``chalice``)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def merged(previous: dict[str, Any] | None, recorded: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """The state a failed deploy leaves: every resource the previous state had, updated or joined by those this
    deploy recorded (by name), in the previous order, new ones last."""
    resources = {r["name"]: dict(r) for r in (previous or {}).get("resources", [])}
    for resource in recorded:
        resources.setdefault(resource["name"], {}).update(resource)
    return {"resources": list(resources.values()), "schema_version": "2.0", "backend": backend}


def record_partial_deploys() -> None:
    from chalice.deploy import deployer

    original = deployer.Deployer._deploy

    def deploy_recording_what_it_created(self, config, chalice_stage_name):  # type: ignore[no-untyped-def]
        try:
            return original(self, config, chalice_stage_name)
        except BaseException:
            recorded = list(getattr(self._executor, "resource_values", []) or [])
            if recorded:
                path = Path(config.project_dir) / ".chalice" / "deployed" / f"{chalice_stage_name}.json"
                previous = json.loads(path.read_text()) if path.exists() else None
                state = merged(previous, recorded, self.BACKEND_NAME)
                self._recorder.record_results(state, chalice_stage_name, config.project_dir)
                names = ", ".join(f"{r['resource_type']} {r['name']}" for r in recorded)
                print(
                    f"chalice deploy failed part way; recorded what it had deployed ({names}) in {path}",
                    file=sys.stderr,
                )
            raise

    deployer.Deployer._deploy = deploy_recording_what_it_created


def main() -> int:
    from chalice.cli import main as chalice_main

    record_partial_deploys()
    sys.argv = ["chalice", *sys.argv[1:]]
    return chalice_main()


if __name__ == "__main__":
    sys.exit(main())
