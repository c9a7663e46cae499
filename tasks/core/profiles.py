"""Profiles: params.yaml composed from conf/ with Hydra, exactly as `dvc exp run` does it.

conf/config.yaml holds the base sections and a Hydra defaults list whose `profile` group
(conf/profile/<name>.yaml) overlays them; command-line overrides (`finetune.max_steps=50`,
`profile=smoke`) apply last, so any knob can be set whatever profile is active. The result,
the effective values, is params.yaml: DVC tracks each stage's sections there, which is what
makes a stage re-run exactly when a value it reads changes (an edit of an inactive profile,
of another stage's section or of a comment changes nothing it reads).

`compose` writes through DVC's own Hydra entry point, so the file is byte for byte what
`dvc exp run -S ...` would write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from tasks.core.errors import ParamsError
from tasks.core.params import DEFAULT_PARAMS_FILE, Params, read_yaml, validate

CONF_DIR = "conf"
CONFIG_NAME = "config"


def profile_names(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / CONF_DIR / "profile").glob("*.yaml"))


def compose(overrides: Sequence[str] = (), root: Path = Path("."),
            output: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Compose conf/ with `overrides` (Hydra syntax), validate, and write `output` atomically.
    Nothing is written when composition or validation fails."""
    import yaml
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    conf = (root / CONF_DIR).resolve()
    if not (conf / f"{CONFIG_NAME}.yaml").is_file():
        raise ParamsError(f"{conf / (CONFIG_NAME + '.yaml')}: not found")
    target = root / output
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".yaml", dir=target.parent)
    os.close(handle)
    try:
        try:
            compose_and_dump(tmp, str(conf), None, CONFIG_NAME, str(root.resolve()), list(overrides))
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as err:
            raise ParamsError(f"conf/: {' '.join(str(err).split())}") from None
        where = f"conf/ + profile {_profile_of(overrides)}" + (f" + {' '.join(overrides)}" if overrides else "")
        params = validate(read_yaml(Path(tmp)), where)
        os.replace(tmp, target)
        return params
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _profile_of(overrides: Sequence[str]) -> str:
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("profile=")]
    return chosen[-1] if chosen else "default"
