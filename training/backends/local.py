"""The local backend: the whole pipeline in this process (:func:`training.pipeline.run_all`)."""

from __future__ import annotations

import json

from training import storage
from training.backends.base import Backend, Submission, SubmitOptions, new_run_id, out_folder


class LocalBackend(Backend):
    """Run prepare -> train -> evaluate -> export here, into ``<datastore>/<project>/runs/<id>/``."""

    name = "local"

    def submit(self, options: SubmitOptions) -> Submission:
        """Run the pipeline locally (``wait`` is implied: a local run always blocks; no quota, so
        ``preflight`` has nothing to check).

        With ``dry_run`` the config is loaded and validated and the resolved config is written to
        ``<out_dir>/local/run_config.json``; nothing runs. ``nodes`` must be 1 here (several local
        workers are started by hand with ``TF_CONFIG``, see docs/cloud.md).
        """
        from training import pipeline
        from training.errors import ConfigError

        if options.nodes != 1:
            raise ConfigError("the local backend runs one worker; start several with TF_CONFIG (docs/cloud.md)")
        cfg = pipeline.load_run_config(options.config, overrides=list(options.overrides), datastore=None)
        if options.dry_run:
            folder = out_folder(options.out_dir, self.name)
            spec = folder / "run_config.json"
            spec.write_text(json.dumps(json.loads(cfg.model_dump_json()), indent=2) + "\n")
            run_url = storage.join(cfg.datastore, cfg.project, "runs", options.run_id or new_run_id())
            return Submission(self.name, cfg.project, "planned", run_url, {"run_config": str(spec)},
                              {"stages": ["prepare", "train", "evaluate", "export"]})
        result = pipeline.run_all(cfg, console=options.console)
        return Submission(
            self.name,
            result.run.id,
            result.run.manifest.get("status", "complete"),
            result.run.url,
            details={"metrics": {"test": result.metrics.get("test", {})}},
        )
