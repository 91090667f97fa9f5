"""The local backend: the whole pipeline in this process (:func:`training.pipeline.run_all`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training import storage
from training.backends.base import Backend, Submission, new_run_id, out_folder


class LocalBackend(Backend):
    """Run prepare -> train -> evaluate -> export here, into ``<datastore>/<project>/runs/<id>/``."""

    name = "local"

    def submit(
        self,
        config: str | Path,
        overrides: list[str] | None = None,
        *,
        dry_run: bool = False,
        wait: bool = True,
        out_dir: str | Path | None = None,
        nodes: int = 1,
        console: Any = None,
        preflight: bool = True,
    ) -> Submission:
        """Run the pipeline locally (``wait`` is implied: a local run always blocks; no quota, so
        ``preflight`` has nothing to check).

        With ``dry_run`` the config is loaded and validated and the resolved config is written to
        ``<out_dir>/local/run_config.json``; nothing runs. ``nodes`` must be 1 here (several local
        workers are started by hand with ``TF_CONFIG``, see docs/cloud.md).
        """
        from training import pipeline
        from training.errors import ConfigError

        if nodes != 1:
            raise ConfigError("the local backend runs one worker; start several with TF_CONFIG (docs/cloud.md)")
        cfg = pipeline.load_run_config(config, overrides=overrides or [], datastore=None)
        if dry_run:
            folder = out_folder(out_dir, self.name)
            spec = folder / "run_config.json"
            spec.write_text(json.dumps(json.loads(cfg.model_dump_json()), indent=2) + "\n")
            run_url = storage.join(cfg.datastore, cfg.project, "runs", new_run_id())
            return Submission(self.name, cfg.project, "planned", run_url, {"run_config": str(spec)},
                              {"stages": ["prepare", "train", "evaluate", "export"]})
        result = pipeline.run_all(cfg, console=console)
        return Submission(
            self.name,
            result.run.id,
            result.run.manifest.get("status", "complete"),
            result.run.url,
            details={"metrics": {"test": result.metrics.get("test", {})}},
        )
