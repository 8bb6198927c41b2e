"""``microclaw distill``: label, build the dataset, train, bundle and report the on-device router.

An entry point (docs/distillation.md). Each stage works on ``--work`` (default
``<data_dir>/distill``) and can be re-run alone; ``all`` runs every stage with a progress bar.
The heavy libraries (numpy, flatbuffers, tflite-micro) come from the ``distill`` extra and are
imported only when a stage needs them; without them a stage fails with one line saying how to
install them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from microclaw.cli.common import console, fail, load_settings_or_exit
from microclaw.config import Settings

if TYPE_CHECKING:
    from microclaw.distill.pipeline import Paths

_EXTRA = "the distill extra is not installed: pip install 'microclaw[distill]'"


@click.group(help="Distil the host's model into the terminal's int8 router (docs/distillation.md).")
def distill() -> None:
    pass


_work = click.option(
    "--work",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Work directory (default: <data_dir>/distill).",
)


def _paths(settings: Settings, work: Path | None) -> Paths:
    from microclaw.distill.pipeline import Paths

    return Paths((work or settings.data_dir / "distill").expanduser().resolve())


@contextmanager
def _errors() -> Iterator[None]:
    """Known failures as one line, never a traceback."""
    from microclaw.errors import ConfigError, PermanentProviderError, TransientProviderError

    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in {"numpy", "flatbuffers", "tflite_micro", "threadpoolctl"}:
            fail(_EXTRA)
        raise
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: missing (run the earlier stages first; `microclaw distill all` runs them all)")
    except (TransientProviderError, PermanentProviderError) as exc:
        fail(f"the teacher failed: {exc} (labels so far are cached; run again to resume)")
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)
    except ValueError as exc:
        fail(str(exc))


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _label(
    settings: Settings,
    paths: Paths,
    teacher: str,
    traces: bool,
    seed: int,
    per_template: int,
    batch_size: int,
    concurrency: int,
    progress: Callable[[str, int, int], None],
) -> None:
    from microclaw.distill import pipeline

    texts: list[str] = []
    if traces:
        from microclaw.distill.traces import read_traces

        texts = read_traces(settings.store.db_path, assistant_name=settings.assistant_name)
    pipeline.write_pool(paths, seed=seed, per_template=per_template, traces=texts)
    provider = None
    if teacher == "provider":
        from microclaw.agent.providers import load_provider

        if settings.agent.provider in ("", "none", "scripted"):
            fail("no teacher model: set agent.provider (anthropic or openai) or use --teacher grammar")
        provider = load_provider(settings.agent)
    stats = pipeline.label(paths, provider, batch_size=batch_size, concurrency=concurrency, progress=progress)
    console.print(
        f"labels: {stats.requested} texts, {stats.cached} cached, {stats.labelled} labelled in"
        f" {stats.requests} request(s), {stats.rejected} malformed rejected, {stats.retried} retried,"
        f" {stats.failed} failed" + (f" ({len(texts)} traces)" if traces else ""),
        highlight=False,
    )


_label_options = [
    click.option(
        "--teacher",
        type=click.Choice(["provider", "grammar"]),
        default="provider",
        show_default=True,
        help="provider: the configured agent.provider labels; grammar: the grammar's own labels.",
    ),
    click.option("--traces", is_flag=True, help="Opt in: add scrubbed utterances from the app database."),
    click.option("--seed", default=0, show_default=True, help="Grammar sampling seed."),
    click.option("--per-template", default=60, show_default=True, help="Utterances per grammar template."),
    click.option("--batch-size", default=25, show_default=True, help="Utterances per teacher request."),
    click.option("--concurrency", default=4, show_default=True, help="Teacher requests in flight at once."),
]


def _with(options: list[Callable[..., Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


@distill.command(help="Label the grammar (and opted-in traces) with the teacher; cached by text hash.")
@_work
@_with(_label_options)
def label(
    work: Path | None,
    teacher: str,
    traces: bool,
    seed: int,
    per_template: int,
    batch_size: int,
    concurrency: int,
) -> None:
    settings = load_settings_or_exit()
    paths = _paths(settings, work)
    with _errors(), _progress() as progress:
        _label(settings, paths, teacher, traces, seed, per_template, batch_size, concurrency, progress)


@distill.command(help="Build the dataset (dedup, stratified split) and its card from the cached labels.")
@_work
def dataset(work: Path | None) -> None:
    from microclaw.distill import pipeline

    settings = load_settings_or_exit()
    with _errors():
        card = pipeline.build_dataset(_paths(settings, work))
    console.print(json.dumps(card["per_split_source"]), highlight=False)


_train_options = [
    click.option("--train-seed", "train_seed", default=1, show_default=True, help="Training seed."),
    click.option("--epochs", default=None, type=int, help="Epochs (default: the TrainConfig's)."),
]


def _config(train_seed: int, epochs: int | None) -> Any:
    from microclaw.distill.train import TrainConfig

    config = TrainConfig(seed=train_seed)
    if epochs is not None:
        config = TrainConfig(**{**config.as_dict(), "epochs": epochs})
    return config


@distill.command(help="Train (numpy), quantize to int8, export .tflite, verify bit-exact in tflite-micro.")
@_work
@_with(_train_options)
def train(work: Path | None, train_seed: int, epochs: int | None) -> None:
    from microclaw.distill import pipeline

    settings = load_settings_or_exit()
    with _errors(), _progress() as progress:
        metrics = pipeline.train_model(_paths(settings, work), _config(train_seed, epochs), progress)
    console.print(
        f"fp32 {metrics['fp32']}  int8 {metrics['int8']}  sizes {metrics['sizes']}", highlight=False
    )


_bundle_options = [
    click.option("--version", "version", required=True, help="Bundle version, MAJOR.MINOR.PATCH."),
    click.option("--board", required=True, help="The board the bundle is for (as devices report it)."),
    click.option("--key", type=click.Path(path_type=Path), default=None, help="Override [ota] key_file."),
    click.option("--publish", is_flag=True, help="Publish it as an OTA model release (at 0 %)."),
]


def _bundle(
    settings: Settings,
    paths: Paths,
    version: str,
    board: str,
    key: Path | None,
    publish: bool,
    progress: Callable[[str, int, int], None],
) -> None:
    from microclaw.distill import bundle, pipeline
    from microclaw.gateway import otastore

    try:
        private = otastore.load_key((key or settings.ota.key_file).expanduser())
    except otastore.OtaError as exc:
        fail(str(exc))
    manifest = pipeline.make_bundle(paths, version=version, board=board, key=private, progress=progress)
    directory = paths.bundle / version
    bundle.verify_bundle(directory, private.public_key())
    console.print(
        f"bundle {version} for {board}: {directory} (arena {manifest['arena_bytes']} bytes)",
        highlight=False,
        soft_wrap=True,
    )
    if publish:
        from microclaw.runtime.wiring import app_engine, bootstrap_database

        bootstrap_database(settings)
        engine = app_engine(settings)
        try:
            row = bundle.publish(
                engine,
                settings.data_dir,
                directory,
                key=private,
                base_url=settings.ota.base_url,
                max_image_bytes=settings.ota.max_image_bytes,
            )
        except otastore.OtaError as exc:
            fail(str(exc))
        finally:
            engine.dispose()
        console.print(
            f"published: release {row.id} at {row.percent:g} % "
            f"(`microclaw ota rollout --percent P --release {row.id}`)",
            highlight=False,
        )


@distill.command(help="Write the signed bundle (model files, manifest, signature); optionally publish it.")
@_work
@_with(_bundle_options)
def bundle(work: Path | None, version: str, board: str, key: Path | None, publish: bool) -> None:
    settings = load_settings_or_exit()
    with _errors():
        _bundle(settings, _paths(settings, work), version, board, key, publish, lambda *_: None)


@distill.command(help="Per-head accuracy fp32 vs int8, confusion matrices, sizes, targets.")
@_work
def report(work: Path | None) -> None:
    from microclaw.distill.report import render

    settings = load_settings_or_exit()
    paths = _paths(settings, work)
    with _errors():
        metrics = json.loads((paths.model / "metrics.json").read_text())
        card_file = paths.dataset / "card.json"
        card = json.loads(card_file.read_text()) if card_file.exists() else None
    console.print(render(metrics, card))


@distill.command("all", help="Every stage in order (label, dataset, train, bundle), with progress.")
@_work
@_with(_label_options + _train_options + _bundle_options)
def run_all(
    work: Path | None,
    teacher: str,
    traces: bool,
    seed: int,
    per_template: int,
    batch_size: int,
    concurrency: int,
    train_seed: int,
    epochs: int | None,
    version: str,
    board: str,
    key: Path | None,
    publish: bool,
) -> None:
    from microclaw.distill import pipeline
    from microclaw.distill.report import target_failures

    settings = load_settings_or_exit()
    paths = _paths(settings, work)
    with _errors(), _progress() as progress:
        _label(settings, paths, teacher, traces, seed, per_template, batch_size, concurrency, progress)
        pipeline.build_dataset(paths, progress)
        metrics = pipeline.train_model(paths, _config(train_seed, epochs), progress)
        _bundle(settings, paths, version, board, key, publish, progress)
    failures = target_failures(metrics)
    console.print(
        f"fp32 {metrics['fp32']}  int8 {metrics['int8']}  sizes {metrics['sizes']}", highlight=False
    )
    console.print(
        "targets: all met" if not failures else "targets missed: " + "; ".join(failures), highlight=False
    )


@distill.command(
    help="The canary verdict for a model release from its devices' results; --apply halts a bad one."
)
@click.option(
    "--release", "release_id", type=int, required=True, help="The model release (see `ota status`)."
)
@click.option(
    "--baseline",
    "baseline_id",
    type=int,
    default=None,
    help="The release to compare with (default: the newest older model release for the same board).",
)
@click.option("--apply", is_flag=True, help="Halt the release when the verdict is halt_rollback.")
def canary(release_id: int, baseline_id: int | None, apply: bool) -> None:
    from microclaw.distill.canary import CanaryPolicy, reports_from_results, verdict
    from microclaw.gateway import ota, otastore
    from microclaw.runtime.wiring import app_engine, bootstrap_database
    from microclaw.store import ota as store
    from microclaw.store.db import read_tx

    settings = load_settings_or_exit()
    bootstrap_database(settings)
    engine = app_engine(settings)
    try:
        with read_tx(engine) as conn:
            row = store.get_release(conn, release_id)
            if row is None or row.kind != "model":
                fail(f"no model release {release_id} (see `microclaw ota status`)")
            if baseline_id is None:
                older = [
                    r
                    for r in store.releases(conn, kind="model", board=row.board)
                    if ota.parse_version(r.version) < ota.parse_version(row.version)
                ]
                base = max(older, key=lambda r: ota.parse_version(r.version), default=None)
            else:
                base = store.get_release(conn, baseline_id)
            canary_reports = reports_from_results(store.results(conn, row.id))
            baseline_reports = reports_from_results(store.results(conn, base.id)) if base else []
        result = verdict(canary_reports, baseline_reports, CanaryPolicy())
        against = f"release {base.id} ({base.version})" if base else "no baseline"
        console.print(
            f"release {row.id} ({row.version}, {len(canary_reports)} device(s)) vs {against}:"
            f" {result.action}: {'; '.join(result.reasons)}",
            highlight=False,
            soft_wrap=True,
        )
        if apply and result.rollback:
            _, changed = otastore.halt(engine, f"canary: {'; '.join(result.reasons)}", release_id=row.id)
            console.print("halted; devices running it are told to roll back" if changed else "already halted")
    finally:
        engine.dispose()
