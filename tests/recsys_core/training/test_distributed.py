"""Data-parallel fine-tuning: ``accelerate launch`` with 2 CPU processes matches one process (same data and seed).

Both runs go through the CLI (``recsys_core.training.cli.main``; the two processes under ``accelerate launch``)
on a tiny catalog with the tiny random encoders. Dropout and ID dropout are off, so the only randomness
left is the data order and the sampled targets, which every process draws identically: the two runs
compute the same global steps
and may differ only by float summation order (DDP averages two half-batch gradients where one
process sums the whole batch). Measured differences on this data: loss per epoch 2e-6 (relative),
item vectors 5e-6, item biases 3e-4 (a shift common to all items, to which the softmax is blind, so
Adam amplifies rounding there); the tolerances below leave room for that and nothing more.

Why ``--multi_gpu`` on a CPU: ``accelerate launch --cpu --num_processes 2`` starts one process unless
MPI is set up (``--mpirun_hostfile``); ``--multi_gpu`` starts N processes through torch's elastic
launcher, and ``--device cpu`` makes each of them an Accelerate CPU process (gloo).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recsys_core.data.catalog import load_catalog_folder
from recsys_core.config import ImageEncoderConfig, ServiceConfig, TextEncoderConfig
from recsys_core.service import RecommenderService
from recsys_core.training.cli import main as train_main
from tests.app_process import free_port
from tests.conftest import REPO_ROOT

# Every fifth user likes only 4 items (3 after the test split, so 3 softmax rows): steps then have an odd
# number of rows and the two processes get unequal shares, which the loss weighting must handle.
N_PER_CLUSTER, N_USERS, LIKED, FEW = 18, 40, 14, 4
CLUSTERS = (("board", "chess strategy board game for two", (30, 30, 30)),
            ("arcade", "arcade racing shooter with fast cars", (230, 200, 20)))
LOSS_RTOL = 1e-4
VECTOR_ATOL = 2e-3  # item vectors: 5e-6 measured; biases (the last column) 3e-4


def _write_data(root: Path) -> tuple[Path, Path]:
    """A catalog of two clusters (text and image differ) and users who each like items of one cluster."""
    catalog, data = root / "catalog", root / "interactions"
    (catalog / "images").mkdir(parents=True)
    data.mkdir()
    lines = ["item_id,title,description,genres,image,license,attribution"]
    for c, (genre, words, colour) in enumerate(CLUSTERS):
        for k in range(N_PER_CLUSTER):
            item_id = f"{genre}{k}"
            img = Image.new("RGB", (32, 32), colour)
            img.paste((k * 12 % 256, 128, 255 - c * 200), (0, 0, 16, 16))
            img.save(catalog / "images" / f"{item_id}.png")
            title, image = f"{genre.title()} {k}", f"images/{item_id}.png"
            lines.append(f'{item_id},{title},"{words} number {k}",{genre},{image},CC0-1.0,test')
    (catalog / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rng = random.Random(0)
    rows = ["user_id,item_id,rating,timestamp"]
    for u in range(N_USERS):
        genre = CLUSTERS[u % 2][0]
        for t, k in enumerate(rng.sample(range(N_PER_CLUSTER), FEW if u % 5 == 4 else LIKED)):
            rows.append(f"u{u},{genre}{k},5,{1000 * u + t}")
    (data / "ratings.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return catalog, data


def _train_args(catalog: Path, data: Path, data_dir: Path, out: Path) -> list[str]:
    return ["-m", "recsys_core.train", "--data-root", str(data), "--catalog", str(catalog), "--data-dir", str(data_dir),
            "--out", str(out), "--model", "fusion", "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--device", "cpu",
            "--epochs", "4", "--batch-users", "8", "--patience", "10", "--dropout", "0", "--id-dropout", "0",
            "--threads", "1", "--seed", "0"]


def _run(command: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command[:8])} ... exited with {proc.returncode}:\n{output[-4000:]}")
    return output


def _item_vectors(catalog_dir: Path, data_dir: Path, checkpoint: Path) -> torch.Tensor:
    """The vectors the app would index for ``checkpoint`` (``[s * unit(item), bias]`` per item)."""
    config = ServiceConfig(text=TextEncoderConfig(model="tiny-random"), image=ImageEncoderConfig(model="tiny-random"),
                           device="cpu", cache_dir=data_dir / "features", model_dir=checkpoint)
    service = RecommenderService(load_catalog_folder(catalog_dir), config)
    service.prepare()
    assert service.model_kind == "multimodal"
    return service.active_model.item_vectors.float()


def test_two_cpu_processes_match_one_process(tmp_path: Path) -> None:
    catalog, data = _write_data(tmp_path)
    data_dir, runs = tmp_path / "data", tmp_path / "runs"
    runs.mkdir()
    # HF_HOME: a private folder, so no user's ~/.cache accelerate config changes what the launcher does.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO_ROOT))
    one, two = runs / "one-process", runs / "two-processes"
    # The single-process run in this process (the CLI's own entry point): one interpreter start fewer.
    train_main(_train_args(catalog, data, data_dir, one)[2:])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    log = _run([*launch, *_train_args(catalog, data, data_dir, two)], env)

    # Exactly one checkpoint, written by process 0 (no half-written .tmp folder left by anyone).
    assert sorted(p.name for p in runs.iterdir()) == ["one-process", "two-processes"]
    saved = [line for line in log.splitlines() if " saved " in line]
    assert len(saved) == 1 and "[process 0]" in saved[0], log[-3000:]
    assert "data-parallel training: 2 processes" in log
    shares = re.findall(r"process 0 computes (\d+) of the step's (\d+) rows", log)
    assert len(shares) == 1 and 0 < int(shares[0][0]) < int(shares[0][1]), shares  # each process: part of a step
    metrics = {name: json.loads((runs / name / "metrics.json").read_text()) for name in (one.name, two.name)}
    assert metrics[one.name]["processes"] == 1 and metrics[two.name]["processes"] == 2

    # The same training, step for step: per-epoch loss and validation NDCG@20.
    h1, h2 = metrics[one.name]["history"], metrics[two.name]["history"]
    assert len(h1) == len(h2) == 4
    np.testing.assert_allclose([h["loss"] for h in h2], [h["loss"] for h in h1], rtol=LOSS_RTOL)
    np.testing.assert_allclose([h["val_ndcg@20"] for h in h2], [h["val_ndcg@20"] for h in h1], atol=1e-6)
    assert metrics[one.name]["best_val_ndcg@20"] > 0  # a validation split exists: the comparison means something
    assert h1[-1]["loss"] < h1[0]["loss"]  # and the model learned

    # The same model: the item vectors the app would serve from each checkpoint.
    v1, v2 = _item_vectors(catalog, data_dir, one), _item_vectors(catalog, data_dir, two)
    assert v1.shape == (2 * N_PER_CLUSTER, v1.shape[1])
    torch.testing.assert_close(v2, v1, atol=VECTOR_ATOL, rtol=0)


@pytest.mark.parametrize("n_rows", [7, 1])
def test_weighted_shares_of_two_processes_give_the_one_process_gradient(n_rows: int) -> None:
    """What DDP computes (the mean over processes of each share's weighted loss gradient) equals the gradient of
    one process on the whole step, for unequal shares (7 rows: 4 + 3) and an empty one (1 row: 1 + 0)."""
    from recsys_core.model.fusion import FusionRecommender
    from recsys_core.training.data import LabelData
    from recsys_core.training.step import _StepShare, _TrainStep
    from tests.recsys_core.training.test_train import N_ITEMS, _config, _content

    config = _config(id_dropout=0.0)  # and dropout 0: every pass sees the same item vectors
    model = FusionRecommender(config).train()
    content, index, known = _content(config), torch.arange(N_ITEMS), torch.ones(N_ITEMS, dtype=torch.bool)
    labels = LabelData([[1, 3], [2], [4, 6, 8], [5]], [7, 9, 11, 13], [1.0, 0.0, 1.0, 0.0])
    step = _TrainStep(model, content, index, known, config, labels, label_weight=0.5)
    gen = random.Random(0)
    examples = [(gen.randrange(22), [gen.randrange(22) for _ in range(3)], []) for _ in range(n_rows)]
    examples = [(t, h, [t, *h]) for t, h, _ in examples]

    def grads(share: _StepShare) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=False)
        step(share).backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads(_StepShare(True, examples, [0, 1, 2, 3], 1.0, 1.0))
    half = (n_rows + 1) // 2
    parts = [grads(_StepShare(True, rows, lab, len(rows) * 2 / n_rows, len(lab) * 2 / 4))
             for rows, lab in ((examples[:half], [0, 1]), (examples[half:], [2, 3]))]
    for full, first, second in zip(whole, *parts):
        torch.testing.assert_close((first + second) / 2, full, atol=1e-6, rtol=1e-5)
