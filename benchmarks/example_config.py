"""What the benchmark scripts that take an example's config share.

``signal_audit.py`` and ``per_start_success.py`` take ``--config-name`` and
overrides exactly as an example does and build what that example builds
(its ``prepare()``), so they measure the example's own policy, envs and
starts. This module maps a config to its example, imports the example and
runs a script's Hydra entry point: a table, then the last stdout line as
one JSON object, also written to ``<run folder>/<script>.json``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example_for(config_name: str | None, cfg) -> str:
    """Which example a config belongs to: ``"libero"`` (a ``suite``) or ``"metaworld"``
    (``tasks`` with a ``pretrain`` section)."""
    if "suite" in cfg and "task_ids" in cfg:
        return "libero"
    if "tasks" in cfg and "pretrain" in cfg:
        return "metaworld"
    raise SystemExit(
        f"config {config_name!r} is neither a MetaWorld nor a LIBERO example config: pass --config-name "
        "ript_metaworld[_fewshot|_transfer] or ript_libero[_smoke|_paper|_oft] (the toy example builds its "
        "own trainer and has no prepare() to build from: use torchrl_ript.trainers directly)."
    )


def load_example(name: str):
    """Import ``examples/ript_<name>.py`` as a module (its import sets up rendering / LIBERO)."""
    path = EXAMPLES / f"ript_{name}.py"
    spec = importlib.util.spec_from_file_location(f"_ript_{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_on_example_config(script: str, doc: str, run: Callable[..., dict], table: Callable[[dict], str],
                          argv: list[str]) -> None:
    """The entry point of ``benchmarks/<script>.py``: ``argv`` (Hydra's arguments) picks and
    overrides an example config; ``run(cfg, config_name=, overrides=, out=)`` measures and returns
    the JSON object, ``table`` renders it. ``-h`` prints ``doc``."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(doc)
        print("Hydra's own options: --hydra-help; the config's fields: --cfg job --config-name <name>.")
        sys.exit(0)
    if not any(arg.startswith("hydra.run.dir=") for arg in argv):
        argv = [*argv, f"hydra.run.dir=outputs/{script}/${{hydra:job.config_name}}/${{now:%Y-%m-%d_%H-%M-%S}}"]
    import hydra
    from hydra.core.hydra_config import HydraConfig

    # an absolute path: Hydra resolves a relative one against the calling module's package
    @hydra.main(config_path=str(EXAMPLES / "configs"), config_name="ript_metaworld", version_base=None)
    def entry(cfg) -> None:
        hydra_cfg = HydraConfig.get()
        out = Path(hydra_cfg.runtime.output_dir)
        result = run(cfg, config_name=hydra_cfg.job.config_name, overrides=list(hydra_cfg.overrides.task), out=out)
        print(table(result), flush=True)
        text = json.dumps(result, default=float)
        (out / f"{script}.json").write_text(text + "\n")
        print(text, flush=True)

    sys.argv = [sys.argv[0], *argv]
    entry()
