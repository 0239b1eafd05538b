"""Multimodal Recommendation Studio: entry point.

    python app.py                                   # the bundled games catalog
    python app.py --catalog path/to/folder          # your own catalog (items.csv / items.jsonl)
    python app.py --catalog movielens-100k --data-root ../shared/data/movielens-100k
    python app.py --catalog movielens-100k --data-root ... --model checkpoints/warm   # a fine-tuned model

Parses arguments and environment into an :class:`AppConfig`, builds storage, the recommender
service and the UI, launches it, and only then prepares the catalog (encoders, features, index; about
25 s on a first start, a few seconds with cached features): the page is served at once and shows the
progress, and requests made meanwhile are told to retry. On a ZeroGPU Space the catalog is prepared
before launch instead (see :func:`prepare_before_launch`). Importing this module loads nothing heavy.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from recsys_core.cli_args import CatalogArgs, add_catalog_arguments
from recsys_core.config import (
    INDEX_KINDS, AudioEncoderConfig, ImageEncoderConfig, IndexConfig, LimitsConfig, ServiceConfig, TextEncoderConfig,
    ZeroShotConfig,
)
from studio.backup import BackupConfig
from studio.finetune_job import JobOptions

if TYPE_CHECKING:
    import gradio as gr

    from recsys_core.service import RecommenderService
    from storage import Repository
    from studio.registry import ModelManager

log = logging.getLogger("app")

#: Logged once the studio serves requests; tests and benchmarks wait for it (the page comes earlier).
READY_MESSAGE = "studio ready at"


@dataclass(frozen=True)
class AppConfig:
    catalog: str = "demo"
    data_root: Path | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None  # default: SQLite file in data_dir
    host: str = "127.0.0.1"
    port: int = 7860
    service: ServiceConfig = field(default_factory=ServiceConfig)
    log_level: str = "INFO"
    auth_file: Path | None = None  # users.csv (username,password,role): login required
    oauth_admins: str | None = None  # Spaces OAuth: comma-separated admin HF usernames
    auto_promote: bool = True  # promote a fine-tuned candidate that passes its gate
    finetune: JobOptions = field(default_factory=JobOptions)  # how each fine-tune job trains
    backup: BackupConfig | None = None  # periodic label (+ SQLite) backup; None = off
    # Labels per minute per person (moving window); 0 = off. 60 is far above a careful annotator's pace
    # (one label per second, sustained) yet stops a script or a stuck key from flooding the table.
    feedback_rate_limit: int = 60

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port is {self.port}; allowed 0..65535")
        if self.feedback_rate_limit < 0:
            raise ValueError(f"feedback rate limit is {self.feedback_rate_limit}; allowed 0 (off) or more per minute")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python app.py",
        description="Multimodal Recommendation Studio: pick or upload items, get recommendations from "
        "pretrained text + image encoders, rate them; every rating is stored as a training label.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_catalog_arguments(p, defaults={"catalog": env("CATALOG", "demo"), "data_root": env("DATA_ROOT"),
                                       "data_dir": Path(env("DATA_DIR", "data")), "device": env("DEVICE", "auto")},
                          helps={"data_dir": "writable folder for the database, feature cache and uploads (env DATA_DIR)"})
    p.add_argument("--database-url", default=env("DATABASE_URL"),
                   help="any SQLAlchemy URL (env DATABASE_URL); default: SQLite file in --data-dir")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on; 0.0.0.0 to serve your network")
    # A string default goes through type=int too, so a bad env value is a usage error, not a traceback.
    p.add_argument("--port", type=int, default=env("GRADIO_SERVER_PORT", env("PORT", "7860")), help="port")
    p.add_argument("--model", default=env("MODEL_DIR"),
                   help="serve a fine-tuned checkpoint folder (written by python -m recsys_core.train --out DIR; "
                        "env MODEL_DIR); default: the zero-shot model")
    p.add_argument("--index", choices=INDEX_KINDS, default=env("INDEX_KIND", "auto"),
                   help="top-K retrieval: auto = exact below 100,000 items, a cached FAISS IVF index above "
                        "(env INDEX_KIND)")
    p.add_argument("--text-weight", type=float, default=ZeroShotConfig.text_weight,
                   help="weight of text similarity in the zero-shot score")
    p.add_argument("--image-weight", type=float, default=ZeroShotConfig.image_weight,
                   help="weight of image similarity in the zero-shot score")
    p.add_argument("--audio-weight", type=float, default=ZeroShotConfig.audio_weight,
                   help="weight of audio similarity in the zero-shot score (catalogs with audio)")
    p.add_argument("--video-weight", type=float, default=ZeroShotConfig.video_weight,
                   help="weight of video (keyframe) similarity in the zero-shot score (catalogs with video)")
    p.add_argument("--max-upload-mb", type=float, default=env("MAX_UPLOAD_MB", LimitsConfig.max_upload_bytes / 2**20),
                   help="largest accepted upload, in MiB (env MAX_UPLOAD_MB)")
    p.add_argument("--max-image-pixels", type=int, default=env("MAX_IMAGE_PIXELS", LimitsConfig.max_image_pixels),
                   help="largest accepted image, width x height; larger ones (decompression bombs) are refused "
                        "before decoding (env MAX_IMAGE_PIXELS)")
    p.add_argument("--max-text-chars", type=int, default=env("MAX_TEXT_CHARS", LimitsConfig.max_text_chars),
                   help="longest accepted title + description of an upload (env MAX_TEXT_CHARS)")
    p.add_argument("--feedback-rate-limit", type=int, default=env("FEEDBACK_RATE_LIMIT", AppConfig.feedback_rate_limit),
                   help="labels per minute per person (likes, dislikes, task answers); 0 = no limit "
                        "(env FEEDBACK_RATE_LIMIT)")
    p.add_argument("--auth-file", type=Path, default=env("AUTH_FILE"),
                   help="users.csv with columns username,password,role (annotator|admin; passwords plain or hashed "
                        "with python -m storage.auth hash): login required for labels and admin actions (env AUTH_FILE)")
    p.add_argument("--oauth-admins", default=env("OAUTH_ADMINS"),
                   help="on Hugging Face Spaces with hf_oauth: comma-separated HF usernames that are admins; "
                        "everyone else who signs in is an annotator (env OAUTH_ADMINS)")
    p.add_argument("--backup-dir", type=Path, default=env("BACKUP_DIR") or None,
                   help="back up all labels (pseudonymised CSV + Parquet) and, for SQLite, a consistent copy of the "
                        "database into this folder periodically and at shutdown (env BACKUP_DIR; e.g. a mounted "
                        "storage bucket on Spaces); unset: no backups")
    p.add_argument("--backup-every", type=float, default=env("BACKUP_EVERY", BackupConfig.every_minutes),
                   help="minutes between backups (env BACKUP_EVERY)")
    p.add_argument("--backup-keep", type=int, default=env("BACKUP_KEEP", BackupConfig.keep),
                   help="how many of the newest backups to keep (env BACKUP_KEEP)")
    p.add_argument("--finetune-epochs", type=int, default=env("FINETUNE_EPOCHS"),
                   help="epochs of each fine-tune job (env FINETUNE_EPOCHS); unset: the job's own default "
                        "(python -m studio.finetune_job --help)")
    p.add_argument("--no-auto-promote", action="store_true",
                   help="keep fine-tuned candidates that pass their gate as candidates until an admin promotes them")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def parse_config(argv: Sequence[str] | None = None) -> AppConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    data_dir = args.data_dir.expanduser()
    try:
        return _config_from_args(args, data_dir)
    except ValueError as exc:  # a config's own check: say which value is wrong, no traceback
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _config_from_args(args: argparse.Namespace, data_dir: Path) -> AppConfig:
    service = ServiceConfig(
        text=TextEncoderConfig(model=args.text_encoder),
        image=ImageEncoderConfig(model=args.image_encoder),
        audio=AudioEncoderConfig(model=args.audio_encoder),
        zeroshot=ZeroShotConfig(text_weight=args.text_weight, image_weight=args.image_weight,
                                audio_weight=args.audio_weight, video_weight=args.video_weight),
        limits=LimitsConfig(max_upload_bytes=int(args.max_upload_mb * 2**20), max_image_pixels=args.max_image_pixels,
                            max_text_chars=args.max_text_chars, max_audio_seconds=args.max_audio_seconds,
                            max_video_seconds=args.max_video_seconds),
        device=args.device,
        index=IndexConfig(kind=args.index),
        cache_dir=data_dir / "features",
        model_dir=_checked_model_dir(args.model),
    )
    return AppConfig(
        catalog=args.catalog,
        data_root=args.data_root,
        data_dir=data_dir,
        database_url=args.database_url,
        host=args.host,
        port=args.port,
        service=service,
        log_level=args.log_level,
        auth_file=_checked_auth_file(args.auth_file),
        oauth_admins=args.oauth_admins or None,
        auto_promote=not args.no_auto_promote,
        finetune=JobOptions(epochs=args.finetune_epochs),
        backup=(BackupConfig(folder=Path(args.backup_dir).expanduser(), every_minutes=args.backup_every,
                             keep=args.backup_keep) if args.backup_dir else None),
        feedback_rate_limit=args.feedback_rate_limit,
    )


def _checked_auth_file(path: Path | None) -> Path | None:
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--auth-file {path}: no such file (expected a CSV with columns username,password,role)")
    return path


def _checked_model_dir(folder: str | None) -> Path | None:
    if not folder:  # unset or empty: the zero-shot model
        return None
    from recsys_core.model.checkpoint import REQUIRED, is_checkpoint

    folder = Path(folder).expanduser()
    if not is_checkpoint(folder):
        raise ValueError(f"--model {folder}: not a checkpoint folder (needs {' and '.join(REQUIRED)}, "
                         "as written by python -m recsys_core.train --out DIR)")
    return folder


@dataclass
class Studio:
    """The built app before (or after) preparation: what :func:`main` launches and prepares."""

    config: AppConfig
    demo: "gr.Blocks"
    service: "RecommenderService"
    repository: "Repository"
    manager: "ModelManager"

    def prepare(self) -> None:
        """Features, model and index, then the registry's active model. Requests that need the model are
        refused with the progress meanwhile (the catalog can be searched); raises RecsysError on failure."""
        stages: list[str] = []

        def log_stage(_fraction: float, stage: str) -> None:  # one line per stage; tqdm draws the bars
            if not stages or stages[-1] != stage:
                stages.append(stage)
                log.info("preparing the catalog (%d items): %s", len(self.service.catalog), stage)

        with self.service.starting():
            self.service.prepare(progress=log_stage)
            self.manager.sync_at_startup(self.config.service.model_dir)


def prepare_before_launch() -> bool:
    """True on a ZeroGPU Space: ``spaces`` moves the models created before ``launch()`` onto the GPU worker
    (it packs CUDA tensors when launch is called), so encoders loaded after launch would never get there."""
    from ui.gpu import on_zero_gpu

    return on_zero_gpu()


def create_app(config: AppConfig) -> tuple["gr.Blocks", "RecommenderService", "Repository"]:
    """Build storage, service (features extracted or read from cache), registry, jobs and the UI; does not launch."""
    studio = build_app(config)
    studio.prepare()
    return studio.demo, studio.service, studio.repository


def build_app(config: AppConfig) -> Studio:
    """Everything :func:`create_app` builds except the preparation: nothing is encoded yet, so this is quick."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # Uploads land in the data directory, not a system temp folder (Spaces mounts DATA_DIR on a bucket).
    os.environ.setdefault("GRADIO_TEMP_DIR", str((config.data_dir / "uploads").resolve()))

    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.service import RecommenderService
    from storage import Repository, default_database_url
    from studio.jobs import FinetuneJobs
    from studio.registry import ModelManager
    from ui.access import Access
    from ui.admin import AdminHandlers
    from ui.handlers import Handlers
    from ui.labelling import LabellingHandlers
    from ui.layout import build_demo
    from ui.rate_limit import LabelRateLimit

    access = Access.from_options(config.auth_file, config.oauth_admins, on_space=bool(os.environ.get("SPACE_ID")))
    limits = config.service.limits
    catalog = resolve_catalog(config.catalog, data_root=config.data_root, max_image_pixels=limits.max_image_pixels,
                              media_limits=CatalogArgs(max_audio_seconds=limits.max_audio_seconds,
                                                       max_video_seconds=limits.max_video_seconds).media_limits())
    if catalog.problems:
        log.warning("catalog %s: %d row problem(s); see the About tab", catalog.name, len(catalog.problems))
    service = RecommenderService(catalog, config.service)
    database_url = config.database_url or default_database_url(config.data_dir)
    repository = Repository.from_url(database_url)
    manager = ModelManager(service, repository)
    jobs = FinetuneJobs(manager=manager, database_url=database_url, data_dir=config.data_dir,
                        catalog_args=_job_catalog_args(config), auto_promote=config.auto_promote,
                        options=config.finetune)
    if access.mode == "open":
        log.warning("no --auth-file: everyone who can reach this app is its admin; keep it on localhost")
    rate_limit = LabelRateLimit(config.feedback_rate_limit)
    demo = build_demo(Handlers(service, repository, access, rate_limit),
                      labelling=LabellingHandlers(service, repository, access, rate_limit),
                      admin=AdminHandlers(service, repository, access, manager, jobs, config.data_dir / "exports"))
    demo.studio_access = access  # launch() needs it for the login form
    return Studio(config=config, demo=demo, service=service, repository=repository, manager=manager)


def _job_catalog_args(config: AppConfig) -> list[str]:
    """What the fine-tune subprocess needs to rebuild the same catalog, encoders and features."""
    return CatalogArgs(catalog=config.catalog, data_root=config.data_root, text_encoder=config.service.text.model,
                       image_encoder=config.service.image.model, audio_encoder=config.service.audio.model,
                       device=config.service.device,
                       max_audio_seconds=config.service.limits.max_audio_seconds,
                       max_video_seconds=config.service.limits.max_video_seconds).to_argv()


def launch_kwargs(config: AppConfig, service: "RecommenderService", access=None) -> dict:
    from ui.render import NO_IMAGE

    extra = {}
    if access is not None and access.mode == "password":
        extra = {"auth": access.login, "auth_message": "Multimodal Recommendation Studio: log in to label and administer."}
    return {**extra,
        "server_name": config.host,
        "server_port": config.port,
        "max_file_size": config.service.limits.max_upload_bytes,
        # Exports are written under random folder names and, with --auth-file, served only after login.
        "allowed_paths": [str(service.catalog.root.resolve()), str(NO_IMAGE.parent),
                          str((config.data_dir / "exports").resolve())],
        "footer_links": ["api"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    started = time.monotonic()
    config = parse_config(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recsys_core.errors import RecsysError

    before_launch = prepare_before_launch()
    try:
        studio = build_app(config)
        if before_launch:
            studio.prepare()
    except RecsysError as exc:
        raise SystemExit(f"error: {exc}") from None
    demo, service, repository = studio.demo, studio.service, studio.repository
    # An explicit max_size: on ZeroGPU Spaces Gradio otherwise caps the waiting queue at 1, and a
    # crowd session would get "Queue is full". 1024 waiting events is far above one per annotator.
    demo.queue(default_concurrency_limit=8, max_size=1024)
    from ui.layout import CSS

    backup = None
    if config.backup is not None:
        import signal

        from studio.backup import LabelBackup

        backup = LabelBackup(repository, config.backup)
        backup.start()
        # SIGTERM (how Spaces and docker stop the app) then stops the server like Ctrl+C, so block_thread()
        # returns and the final backup below runs instead of the process dying mid-way.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo.launch(css=CSS, prevent_thread_lock=True,
                    **launch_kwargs(config, service, getattr(demo, "studio_access", None)))
        if not before_launch:
            log.info("the page is up at %s and shows the progress; preparing the catalog now", demo.local_url)
            try:
                studio.prepare()
            except RecsysError as exc:  # e.g. unreadable features or a broken checkpoint: stop, as before launch
                demo.close()
                raise SystemExit(f"error: {exc}") from None
            except Exception:
                demo.close()
                raise
        log.info("%s %s: %d items, model %s (%.1f s after start)", READY_MESSAGE, demo.local_url,
                 len(service.catalog), service.model_version, time.monotonic() - started)
        demo.block_thread()  # until Ctrl+C or SIGTERM (then it closes the server)
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM before block_thread() (which catches it), e.g. while preparing
        demo.close()
    finally:
        if backup is not None:
            backup.stop()  # one last backup at shutdown


if __name__ == "__main__":
    main()
