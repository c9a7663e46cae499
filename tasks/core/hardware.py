"""params.trainer against what Lightning accepts and what this machine has.

Lightning checks its Trainer arguments only when a stage builds its Trainer, after data
and models are loaded, and it quietly changes some of them (fp16 on a CPU becomes bf16).
Every stage checks them before it starts instead, with Lightning's own accelerator and
strategy registries and its own argument parser, and says which `trainer.<key>` is at fault.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Union

from tasks.core.errors import ParamsError
from tasks.core.machine import usable_cpus

# Lightning's accelerator names (its AcceleratorRegistry) and the two it resolves itself;
# tests/test_bad_values.py keeps this list equal to the registry.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Lightning's precision inputs (lightning.fabric's _PRECISION_INPUT), likewise kept equal.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
FP16_MIXED = ("16-mixed", "16", 16)
# A single process on the CPU at full precision: nothing Lightning could refuse, so a stage
# that trains this way (every CPU run) does not pay for importing Lightning to ask it.
PLAIN = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1}
PLAIN_PRECISIONS = ("32-true", "32", 32)
# Where the other nodes of a multi-node run come from: a cluster scheduler Lightning detects,
# or the variables its own launcher reads on every node.
MANUAL_CLUSTER = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def registered_strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def check_strategy_name(strategy: str) -> str:
    """A Lightning strategy name (its StrategyRegistry), for the schema of trainer.strategy."""
    if strategy == "auto":   # the default needs no registry (importing Lightning costs seconds)
        return strategy
    known = registered_strategies()
    if strategy not in known:
        raise ValueError(f"not a Lightning strategy; one of {', '.join(known)}")
    return strategy


def _fail(key: str, message: str) -> None:
    raise ParamsError(f"trainer.{key}: {message}")


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    import torch

    return torch.backends.mps.is_available()


def _check_accelerator(accelerator: str) -> None:
    if accelerator in ("cuda", "gpu") and not (_cuda_count() or (accelerator == "gpu" and _mps_available())):
        _fail("accelerator", f"{accelerator}: this machine has no GPU that torch can use "
                             "(torch.cuda.is_available() is false); use cpu")
    if accelerator == "mps" and not _mps_available():
        _fail("accelerator", "mps: this machine has no Apple GPU (torch.backends.mps.is_available() is false); use cpu")


def _check_devices(accelerator: str, devices: Union[int, list[int], str]) -> None:
    if devices == "auto":
        return
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not _cuda_count() and not _mps_available())
    if on_cpu:
        if isinstance(devices, list):
            _fail("devices", f"{devices}: device indices are for GPUs; on the cpu give a number of processes")
        if devices > usable_cpus():
            _fail("devices", f"{devices} CPU processes, but this machine has {usable_cpus()} CPUs")
        return
    if accelerator in ("cuda", "gpu", "auto") and _cuda_count():
        count = _cuda_count()
        wanted = devices if isinstance(devices, list) else list(range(devices))
        if isinstance(devices, list) and len(set(devices)) != len(devices):
            _fail("devices", f"{devices}: a GPU index appears twice")
        if max(wanted, default=0) >= count:
            _fail("devices", f"{devices}: this machine has {count} GPU{'s' if count > 1 else ''}")


def _check_nodes(num_nodes: int) -> None:
    if num_nodes == 1:
        return
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    detected = any(env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment))
    if not detected and not all(name in os.environ for name in MANUAL_CLUSTER):
        _fail("num_nodes", f"{num_nodes} nodes, but no cluster is configured (SLURM, torchrun, LSF or MPI; or "
                           f"{', '.join(MANUAL_CLUSTER)} set on every node): this process would wait for the "
                           "other nodes forever")


def _check_precision(accelerator: str, precision: Union[str, int]) -> None:
    if precision in FP16_MIXED and accelerator == "cpu":
        _fail("precision", f"{precision}: fp16 mixed precision needs a GPU (on the cpu Lightning would train in "
                           "bf16-mixed instead); use bf16-mixed or 32-true")


def _lightning_accepts(settings: dict[str, Any]) -> None:
    """Lightning's own parsing of the Trainer's hardware arguments, without building a Trainer."""
    from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector

    quiet = [logging.getLogger(name) for name in ("lightning.pytorch.utilities.rank_zero",
                                                  "lightning.fabric.utilities.rank_zero")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _AcceleratorConnector(**settings)
    except Exception as err:   # noqa: BLE001 - whatever Lightning refuses, it refuses these settings
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ParamsError(f"trainer: Lightning refuses {_describe(settings)}: {first}") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def check_trainer(accelerator: str, devices: Union[int, list[int], str], strategy: str, precision: Union[str, int],
                  num_nodes: int, num_workers: int) -> None:
    """Refuse trainer settings this machine cannot run, naming the `trainer.<key>` at fault."""
    if num_workers > usable_cpus():
        _fail("num_workers", f"{num_workers} data-loading processes, but this machine has {usable_cpus()} CPUs")
    settings = {"accelerator": accelerator, "devices": devices, "strategy": strategy, "num_nodes": num_nodes}
    if settings == PLAIN and precision in PLAIN_PRECISIONS:
        return
    _check_accelerator(accelerator)
    _check_devices(accelerator, devices)
    _check_precision(accelerator, precision)
    _check_nodes(num_nodes)
    _lightning_accepts({**settings, "precision": precision})
