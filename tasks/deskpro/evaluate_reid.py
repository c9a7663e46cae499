"""Stage `evaluate_reid`: CMC rank-1/5/10 and mAP of the trained DeSKPro model per protocol.

torchreid's conventions (gallery images of the query's identity seen by the query's camera
are left out; queries without a true match are skipped), computed by
`lightning_modules.core.metrics.rank.evaluate_rank`. Also a retrieval picture per protocol and
the CSA attention maps of the paper's Fig. 3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from lightning_modules.deskpro import DeSKProNet
from lightning_modules.deskpro.evaluation import evaluate
from lightning_modules.deskpro.visual import attention_panels, retrieval_rows
from tasks.core.params import Params
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from lightning_modules.data.market1501 import ReidFolder
from tasks.deskpro.setup import embed_protocols, load_folder, person_dataset
from tasks.core.stage import stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run

STAGE = "evaluate_reid"


def load_model(directory: Path) -> DeSKProNet:
    try:
        return DeSKProNet.from_pretrained(directory)
    except FileNotFoundError as err:
        raise InputDataError(f"{err}; run the training stage first (dvc repro train_reid)") from None


def evaluate_model(params: Params, folder: ReidFolder, net: DeSKProNet, plots: Optional[Path],
                   artifact_prefix: str) -> dict:
    """Metrics per protocol; pictures to `plots` (when given) and to the active MLflow run."""
    cfg = params.evaluate_reid
    report = {}
    for name, (query, gallery, q_set, g_set) in embed_protocols(params, folder, net).items():
        values, distmat = evaluate(query, gallery, max_rank=cfg.max_rank)
        report[name] = {k: round(v, 4) for k, v in values.items()}  # float32 CMC: keep the JSON readable
        picks = np.linspace(0, len(q_set) - 1, min(cfg.retrieval_queries, len(q_set))).astype(int)
        q_images = {int(i): q_set[int(i)]["image"] for i in picks}
        g_images = _LazyImages(g_set)
        picture = retrieval_rows(q_images, g_images, distmat, query.pids, gallery.pids, query.camids,
                                 gallery.camids, [int(i) for i in picks])
        _publish(picture, plots, f"{artifact_prefix}/retrieval_{name}.png")
    csa = net.global_stream is not None and net.global_stream.csa is not None
    if csa:
        first_query = next(iter(folder.protocols.values()))[0]
        picks = np.linspace(0, len(first_query) - 1, min(cfg.attention_images, len(first_query))).astype(int)
        dataset = person_dataset(params, folder, [first_query[int(i)] for i in picks], train=False, restore=None)
        images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
        with torch.no_grad():
            out = net.global_stream.eval()(images)
        _publish(attention_panels(images, out.attention, out.feature_map, out.attended), plots,
                 f"{artifact_prefix}/attention.png")
    return report


class _LazyImages:
    """Gallery images read only for the matches a picture shows."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[int(index)]["image"]


def _publish(picture: np.ndarray, plots: Optional[Path], artifact: str) -> None:
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(plots / Path(artifact).name)
    log_image(picture, artifact)


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    folder = load_folder(params)
    net = load_model(params.paths.data / "models" / "reid")
    targets = (params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp_metrics, tmp_plots):
        report = evaluate_model(params, folder, net, tmp_plots, "reid")
        tmp_metrics.write_text(json.dumps(report, indent=2) + "\n")
        log_metrics_tree(report)
        for name, values in report.items():
            print(f"{name:>14}: " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)


if __name__ == "__main__":
    run_stage_main(main)
