"""The fine-tune job: read the labels people gave, fine-tune and gate a candidate (``python -m studio.finetune_job --help``).

This is the process where storage and training meet: the judgements are read through
``storage.Repository.judgements_frame`` (the one reader of judgements, so the Admin statistics, the
exports and the training labels see the same rows) and handed to ``recsys_core``, which never imports
``storage``. The app starts it in a subprocess (``studio.jobs.FinetuneJobs``); it also runs by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from recsys_core.errors import InvalidInputError, RecsysError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
PROG = "python -m studio.finetune_job"


# -- what the app may ask of a job -------------------------------------------------------------------
@dataclass(frozen=True)
class JobOptions:
    """How a job trains, beyond the catalog and encoders the app serves (``FinetuneJobs(options=...)``).

    None means the job's own default, so the defaults stay in one place: :func:`build_parser` (and
    ``FinetuneConfig`` behind it; ``--help`` shows them). :meth:`to_argv` is the one place these become
    the job's command line: each value field is the flag of the same name (``min_agreement`` ->
    ``--min-agreement``); the two switches are on by default and only their ``--no-...`` flag exists.
    """
    epochs: int | None = None
    lr: float | None = None  # None: the job picks 1e-4 to continue a checkpoint, 2e-3 for a new model
    label_weight: float | None = None
    heldout: float | None = None  # fraction of contexts held out for the gate
    gate_confidence: float | None = None
    method: str | None = None  # label aggregation: "majority" or "soft"
    min_control_accuracy: float | None = None
    min_agreement: float | None = None
    seed: int | None = None
    threads: int | None = None  # torch threads in the job (None: torch's default)
    likes_as_interactions: bool = True
    offline_gate: bool = True  # MovieLens: the offline protocol joins the gate

    def __post_init__(self) -> None:
        checks = {"epochs": (self.epochs, lambda v: v >= 1, ">= 1"), "threads": (self.threads, lambda v: v >= 1, ">= 1"),
                  "lr": (self.lr, lambda v: v > 0, "> 0"), "label_weight": (self.label_weight, lambda v: v >= 0, ">= 0"),
                  "heldout": (self.heldout, lambda v: 0 < v < 1, "0 < heldout < 1"),
                  "gate_confidence": (self.gate_confidence, lambda v: 0 <= v < 1, "0 <= gate_confidence < 1"),
                  "min_control_accuracy": (self.min_control_accuracy, lambda v: 0 <= v <= 1, "0..1"),
                  "min_agreement": (self.min_agreement, lambda v: 0 <= v <= 1, "0..1"),
                  "method": (self.method, lambda v: v in ("majority", "soft"), "majority or soft")}
        for name, (value, ok, allowed) in checks.items():
            if value is not None and not ok(value):
                raise ValueError(f"fine-tune option {name} is {value!r}; allowed: {allowed}")

    def to_argv(self) -> list[str]:
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                argv += [] if value else [f"--no-{f.name.replace('_', '-')}"]
            elif value is not None:
                argv += [f"--{f.name.replace('_', '-')}", str(value)]
        return argv


# -- what the job hands back to the app (its --json file) ------------------------------------------
# Studio's own types rather than recsys_core's training results: this is the contract between two
# processes (and what an admin reads in <data dir>/jobs/<id>/result.json), kept apart from the trainer's.
@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: held-out metrics of the served (base) model and of the candidate, and why."""
    base: dict[str, float]
    candidate: dict[str, float]
    passed: bool
    reason: str


@dataclass(frozen=True)
class SnapshotInfo:
    """Exactly which judgements trained the candidate; saved as a label snapshot when it is registered."""
    id: str
    n_examples: int
    n_judgements: int
    config: dict[str, Any]  # the AggregationConfig that made the labels, as JSON
    feedback_ids: tuple[int, ...]
    excluded_annotators: dict[str, str] = field(default_factory=dict)  # annotator -> why left out


@dataclass(frozen=True)
class JobResult:
    """A finished job: the candidate checkpoint, the gate's verdict and the labels it learnt from."""
    out_dir: str
    version: str
    parent: str | None  # the version the candidate was trained from (or compared with, for a new model)
    gate: GateDecision
    n_train: int
    n_heldout: int
    seconds: float
    snapshot: SnapshotInfo
    history: tuple[dict[str, float], ...] = ()  # per-epoch training records

    def to_json(self) -> str:
        return json.dumps({"ok": True, **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "JobResult":
        data = json.loads(text)
        if data.get("ok") is not True:
            raise ValueError(f"not a finished job's result: {text[:200]}")
        try:
            snap = data["snapshot"]
            return cls(out_dir=str(data["out_dir"]), version=str(data["version"]), parent=data.get("parent"),
                       gate=GateDecision(**data["gate"]), n_train=int(data["n_train"]),
                       n_heldout=int(data["n_heldout"]), seconds=float(data["seconds"]),
                       snapshot=SnapshotInfo(id=str(snap["id"]), n_examples=int(snap["n_examples"]),
                                             n_judgements=int(snap["n_judgements"]), config=dict(snap["config"]),
                                             feedback_ids=tuple(int(i) for i in snap["feedback_ids"]),
                                             excluded_annotators=dict(snap.get("excluded_annotators") or {})),
                       history=tuple(data.get("history") or ()))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a job result without {exc}: {text[:200]}") from None


@dataclass(frozen=True)
class JobFailure:
    """A job that stopped with a message for the admin (too few labels, an unknown base...)."""
    error: str

    def to_json(self) -> str:
        return json.dumps({"ok": False, "error": self.error}, indent=2)


def read_outcome(path: Path) -> JobResult | JobFailure | None:
    """What a job wrote to ``--json``: its result, its failure, or None when it wrote nothing (crashed, killed)."""
    if not Path(path).is_file():
        return None
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    return JobResult.from_json(text) if data.get("ok") is True else JobFailure(str(data.get("error") or ""))


def read_judgements(database_url: str, campaign: str | None = None) -> "pd.DataFrame":
    """Every judgement in the database (or ``campaign``'s) as the frame :func:`recsys_core.labels.aggregate` reads."""
    from sqlalchemy.engine import make_url

    from storage import Repository

    url = make_url(database_url)
    # Repository.from_url creates a missing SQLite file (what the app wants on first start); a job handed
    # a mistyped path would then train on "0 judgements" instead of saying what is wrong.
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_file():
        raise InvalidInputError(f"no database at {url.database}: give the app's database (--db sqlite:///<data dir>/recsys.sqlite3)")
    repository = Repository.from_url(database_url)
    try:
        frame = repository.judgements_frame(campaign)
    finally:
        repository.engine.dispose()
    return frame


def build_parser() -> argparse.ArgumentParser:
    from recsys_core.cli_args import add_catalog_arguments
    from recsys_core.training.finetune import FinetuneConfig

    from recsys_core.training import finetune as training

    # The training module documents the loop; this module adds where the labels come from.
    parser = argparse.ArgumentParser(prog=PROG, description=f"{training.__doc__}\n{__doc__}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get("DATABASE_URL"),
                        help="database URL of the app (e.g. sqlite:///data/recsys.sqlite3); default: env DATABASE_URL, "
                             "which keeps a password out of the process list")
    parser.add_argument("--base", type=Path, default=None,
                        help="checkpoint folder to start from; default: a new fusion model (the app's zero-shot model is the gate's baseline)")
    parser.add_argument("--out", type=Path, required=True, help="candidate checkpoint folder to write")
    add_catalog_arguments(parser, helps={"catalog": "as for app.py: demo, movielens-100k or a folder",
                                         "data_root": None, "text_encoder": "as for app.py (must match the app's)",
                                         "image_encoder": "as for app.py (must match the app's)", "device": None})
    parser.add_argument("--campaign", default=None, help="only judgements from this labelling campaign")
    parser.add_argument("--method", default="majority", choices=["majority", "soft"], help="label aggregation")
    parser.add_argument("--min-control-accuracy", type=float, default=0.7)
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate (default: {FinetuneConfig.lr} when continuing --base, "
                             f"{FinetuneConfig.new_model_lr} for a new model)")
    parser.add_argument("--label-weight", type=float, default=FinetuneConfig.label_weight,
                        help="weight of the binary cross-entropy on likes and dislikes")
    parser.add_argument("--no-likes-as-interactions", action="store_true",
                        help="do not add likes to the softmax as interactions of a pseudo-user per context "
                             "(context items, then the liked items); labels then train only through "
                             "--label-weight > 0")
    parser.add_argument("--heldout", type=float, default=FinetuneConfig.heldout_fraction, help="fraction of contexts held out for the gate")
    parser.add_argument("--gate-confidence", type=float, default=FinetuneConfig.gate_confidence,
                        help="call the candidate worse on held-out labels only when a paired bootstrap over held-out "
                             "profiles says so with this confidence (0 = any drop rejects; the offline protocol "
                             "is always strict)")
    parser.add_argument("--min-agreement", type=float, default=0.4,
                        help="drop annotators whose agreement with the majority of the others is below this (0..1); "
                             "annotators with no overlapping judgements are kept")
    parser.add_argument("--no-offline-gate", action="store_true",
                        help="MovieLens: do not add the offline protocol (warm validation split NDCG@20) to the gate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the result (gate, snapshot, timings) here")
    parser.add_argument("--progress-file", type=Path, default=None, help="append JSON progress lines here (the app reads them)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process (the app that started the job) is gone")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("give the app's database: --db URL or env DATABASE_URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        result = run_cli(args)
    except RecsysError as exc:
        _write_json(args.json, JobFailure(str(exc)).to_json())
        raise SystemExit(f"error: {exc}") from None
    _write_json(args.json, result.to_json())
    log.info("candidate %s: gate %s (%s)", result.out_dir, "passed" if result.gate.passed else "failed",
             result.gate.reason)


def _exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """End this job when the app that started it dies (e.g. SIGKILL), instead of training on as an orphan.

    A polling thread rather than Linux's PR_SET_PDEATHSIG: that needs ``preexec_fn``, which is unsafe in
    the app's multi-threaded server. The candidate is written to a temporary folder and renamed last, so
    an exit at any moment leaves no checkpoint that could be registered or served.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        log.warning("the app (pid %d) is gone: stopping the fine-tune; nothing is registered", parent_pid)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _write_json(path: Path | None, text: str) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def labels_and_split(judgements: "pd.DataFrame", args: argparse.Namespace):
    """The job's labels from ``judgements`` (aggregated with its options ``args``) and their (train, held-out)
    split: (:class:`recsys_core.labels.aggregation.LabelSet`, train examples, held-out examples)."""
    from recsys_core.labels.aggregation import AggregationConfig, aggregate, split_heldout

    labels = aggregate(judgements, AggregationConfig(method=args.method, min_control_accuracy=args.min_control_accuracy,
                                                     min_majority_agreement=args.min_agreement))
    train_part, heldout_part = split_heldout(labels, args.heldout, args.seed)
    return labels, train_part, heldout_part


def run_cli(args: argparse.Namespace) -> JobResult:
    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.model.checkpoint import checkpoint_version
    from recsys_core.serving.load import load_model
    from recsys_core.serving.protocol import ServingModel
    from recsys_core.serving.zeroshot import ZeroShotModel
    from recsys_core.training.finetune import FinetuneConfig, FinetuneError, finetune, movielens_offline_split

    def progress(fraction: float, message: str) -> None:
        log.info("%3.0f%% %s", 100 * fraction, message)
        if args.progress_file is not None:
            with open(args.progress_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"fraction": round(fraction, 4), "message": message, "time": time.time()}) + "\n")

    progress(0.0, "reading judgements")
    judgements = read_judgements(args.db, args.campaign)
    labels, train_part, heldout_part = labels_and_split(judgements, args)
    if labels.examples.empty:
        raise FinetuneError(f"no usable labels in the database ({len(judgements)} judgements; "
                            f"{len(labels.excluded_annotators)} annotator(s) excluded)")
    progress(0.01, f"{len(labels.examples)} labels from {len(judgements)} judgements "
                   f"({len(train_part)} train / {len(heldout_part)} held out); loading the catalog")
    from recsys_core.cli_args import CatalogArgs
    from recsys_core.config import AudioEncoderConfig

    catalog = resolve_catalog(args.catalog, data_root=args.data_root,
                              media_limits=CatalogArgs.from_namespace(args).media_limits())
    cache_dir = Path(args.data_dir) / "features"
    catalog_args = CatalogArgs.from_namespace(args)
    encoded = encode_catalog(catalog, TextEncoderConfig(model=args.text_encoder),
                             ImageEncoderConfig(model=args.image_encoder), cache_dir, device=args.device,
                             audio_config=AudioEncoderConfig(model=catalog_args.audio_encoder or "aisfx"),
                             media_limits=catalog_args.media_limits())
    # What the app serves from this base (the zero-shot model without one): the gate's baseline.
    state_model: ServingModel = ZeroShotModel(encoded.features, ZeroShotConfig())
    if args.base is not None:
        state_model = load_model(args.base, catalog, encoded.features, zeroshot=state_model,
                                 text_encoder=encoded.text_encoder, image_encoder=encoded.image_encoder,
                                 cache_dir=cache_dir)
    offline = None
    if args.catalog == "movielens-100k" and args.data_root is not None and not args.no_offline_gate:
        offline = movielens_offline_split(args.data_root, catalog)
    result = finetune(examples=train_part, heldout=heldout_part, catalog=catalog, features=encoded.features,
                      text_encoder=encoded.text_encoder, image_encoder=encoded.image_encoder, base_model=state_model,
                      base_dir=args.base, out_dir=args.out, cache_dir=cache_dir,
                      config=FinetuneConfig(epochs=args.epochs,
                                            lr=FinetuneConfig.lr if args.lr is None else args.lr,
                                            new_model_lr=FinetuneConfig.new_model_lr if args.lr is None else args.lr,
                                            heldout_fraction=args.heldout, seed=args.seed,
                                            label_weight=args.label_weight,
                                            likes_as_interactions=not args.no_likes_as_interactions,
                                            gate_confidence=args.gate_confidence),
                      extra_metrics={"label_snapshot": labels.snapshot_id}, progress=progress, offline=offline)
    gate = result.gate
    return JobResult(
        out_dir=str(result.out_dir),
        version=checkpoint_version(result.out_dir),
        parent=state_model.version,
        gate=GateDecision(base=dict(gate.base), candidate=dict(gate.candidate), passed=bool(gate.passed),
                          reason=gate.reason),
        n_train=result.n_train,
        n_heldout=result.n_heldout,
        seconds=round(result.seconds, 2),
        history=tuple(result.history),
        snapshot=SnapshotInfo(id=labels.snapshot_id, n_examples=int(len(labels.examples)),
                              n_judgements=int(len(judgements)), config=json.loads(labels.config.to_json()),
                              feedback_ids=tuple(int(i) for i in labels.feedback_ids),
                              excluded_annotators=dict(labels.excluded_annotators)),
    )


if __name__ == "__main__":
    main()
