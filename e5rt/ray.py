"""Ray Data integration: embed a `ray.data.Dataset` column on a pool of actors, each holding one Embedder.

    import ray, e5rt.ray
    ds = ray.data.read_parquet("s3://bucket/passages/")
    out = e5rt.ray.embed_dataset(ds, "models/me5-large", column="text", kind="passage", actors=8, num_gpus=1)
    out.write_parquet("s3://bucket/embeddings/")

Needs the `ray` extra; `import e5rt` never imports this module (nor ray).

- **One model per actor.** `EmbedBatch` loads its Embedder once in the actor's constructor; ONNX Runtime's intra-op
  threads are set to the actor's CPU share, so actors on one node do not oversubscribe it.
- **Batches by tokens.** Ray cuts batches by rows (`batch_rows`); inside each one the Embedder sorts by length and
  cuts token-budgeted batches, so padding stays as low as in a single process. Larger `batch_rows` sort better.
- **Other columns are kept**; the embedding is added as a fixed-size list<float32> column (`output_column`).
- **CPU reserve.** An actor pool that takes every CPU starves Ray Data's own tasks and the pipeline hangs
  (measured with Ray 2.60 on 2 CPUs: one actor at 1.5 CPUs left 0.5, and the file-listing task, which asks for a
  whole CPU whatever the read's `num_cpus`, never started). `plan_cpus` keeps one whole CPU (`reserve`) free for
  them and gives the rest to the actors; `io_remote_args()` makes read and write tasks small enough that several
  fit in that reserve.
- **Faults.** Actors are restartable and their tasks retried (`max_restarts`, `max_task_retries`): a killed actor
  is replaced and its unfinished batches run again; outputs come only from finished batches, so nothing is lost
  or duplicated. A failure inside the model (a bad text) is not retried: it fails the run with its message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidInputError

DEFAULT_BATCH_ROWS = 1024
IO_CPUS = 0.25  # what one Ray Data read or write task asks for when run with io_remote_args()


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("the Ray path needs the ray extra: pip install 'e5rt[ray]'") from None
    return ray


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    num_cpus: float  # Ray's logical CPUs per actor
    threads: int  # ONNX Runtime intra-op threads per actor
    num_gpus: float
    reserve: float  # CPUs left for read and write tasks


def plan_cpus(total_cpus: float, actors: int, num_gpus: float = 0.0, reserve: float | None = None) -> ActorPlan:
    """Split a cluster's CPUs between `actors` embedding actors and Ray Data's read/write tasks.

    GPU actors need one CPU each to feed their GPU. CPU actors share what is left after the reserve (default one
    CPU: Ray Data's listing task asks for a whole one).
    """
    if actors < 1:
        raise ConfigError(f"actors must be at least 1, got {actors}", param="actors")
    reserve = 1.0 if reserve is None else reserve
    if num_gpus > 0:
        per = 1.0
    else:
        per = (total_cpus - reserve) / actors
        if per < 0.5:
            raise ConfigError(
                f"{actors} actors do not fit in {total_cpus:g} CPUs with {reserve:g} kept for reading and writing; "
                f"use at most {max(1, int((total_cpus - reserve) / 0.5))} actors"
            )
    return ActorPlan(actors, per, _threads(per), num_gpus, reserve)


def _threads(cpus: float) -> int:
    """ONNX Runtime intra-op threads for an actor's CPU share: the share rounded, at least one."""
    return max(1, math.floor(cpus + 0.5))


def io_remote_args() -> dict[str, Any]:
    """ray_remote_args for read_* / write_* so they fit in the reserve left by plan_cpus."""
    return {"num_cpus": IO_CPUS}


class EmbedBatch:
    """The callable class Ray Data instantiates once per actor; each call embeds one Arrow batch."""

    def __init__(
        self,
        model_dir: str,
        column: str,
        kind: str = "passage",
        task: str | None = None,
        output_column: str = "embedding",
        load_options: dict[str, Any] | None = None,
    ) -> None:
        from .engine import Embedder

        self.emb = Embedder.load(model_dir, **(load_options or {}))
        self.column, self.kind, self.task, self.output_column = column, kind, task, output_column

    def __call__(self, batch: Any) -> Any:
        from .corpus.sinks import embedding_array

        if self.column not in batch.column_names:
            raise InvalidInputError(
                f"column {self.column!r} not in the dataset; columns: {', '.join(batch.column_names)}"
            )
        texts = batch.column(self.column).to_pylist()
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise InvalidInputError(
                f"column {self.column!r} holds {type(texts[bad]).__name__} at a row: {texts[bad]!r}"
            )
        vecs = self.emb.encode(texts, kind=self.kind, task=self.task)  # type: ignore[arg-type]
        return batch.append_column(self.output_column, embedding_array(vecs))


def embed_dataset(
    ds: Any,
    model_dir: str | Path,
    column: str = "text",
    kind: str = "passage",
    task: str | None = None,
    *,
    output_column: str = "embedding",
    actors: int = 1,
    num_gpus: float = 0.0,
    num_cpus: float | None = None,
    reserve: float | None = None,
    threads: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    variant: str = "auto",
    max_batch_tokens: int | None = None,
    max_restarts: int = 3,
) -> Any:
    """A Dataset with `output_column` added: the embedding of `column`, computed on `actors` actors.

    CPU actors get the cluster's CPUs minus `reserve`, split evenly (or `num_cpus` each), with as many ONNX Runtime
    threads (`threads` overrides that, e.g. to let ONNX Runtime use the reserve's idle cores too); GPU actors
    (`num_gpus` > 0) run the CUDA provider with one CPU each.
    """
    ray = _ray()
    if not ray.is_initialized():
        ray.init()
    if num_cpus is not None:
        plan = ActorPlan(actors, num_cpus, _threads(num_cpus), num_gpus, reserve or 0.0)
    else:
        plan = plan_cpus(float(ray.cluster_resources().get("CPU", 1)), actors, num_gpus, reserve)
    load = {
        "variant": variant,
        "provider": "cuda" if num_gpus > 0 else "cpu",
        "threads": threads or plan.threads,
        "max_batch_tokens": max_batch_tokens,
    }
    return ds.map_batches(
        EmbedBatch,
        batch_size=batch_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "column": column,
            "kind": kind,
            "task": task,
            "output_column": output_column,
            "load_options": load,
        },
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
        max_restarts=max_restarts,
        max_task_retries=max_restarts,
    )


def _is_uri(path: str) -> bool:
    return "://" in path


def ray_embed_file(
    input_path: str,
    model_dir: str | Path,
    out: str | Path,
    *,
    field: str = "text",
    id_field: str | None = None,
    options: Any = None,
    address: str | None = None,
    actors: int = 1,
    num_gpus: float = 0.0,
    threads: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    variant: str = "auto",
    max_batch_tokens: int | None = None,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """`e5rt embed --ray`: Parquet in (a file, a folder, or a URI such as s3://bucket/passages/), a folder of
    Parquet shards out (local or a URI), with the columns of the single-machine folder output (`id`, optional
    `text`, `embedding`) and an `_index.json` beside them.

    Ray has no global row number, so the input must carry an id column (`id_field`). Every row comes out
    exactly once, but not necessarily in input order (Ray 2.60 moved batches despite preserve_order): match by id.
    Without `address` a local cluster is started with `num_cpus` (default: all) and no dashboard. `model_dir` must be
    readable at the same path on every node (a shared file system, or baked into the node image).
    """
    import time

    from .corpus.job import INDEX_FILE, CorpusOptions

    opts = options or CorpusOptions()
    src, dst = str(input_path), str(out).rstrip("/")
    fs, root = _check_paths(src, dst, out, id_field)
    assert id_field is not None  # _check_paths refused None
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # asked for, but not always kept by Ray 2.60
    ctx.enable_progress_bars = False
    keep_text = opts.texts_kept("parquet")
    columns = [id_field, field] if id_field != field else [field]
    started = time.monotonic()
    ds = ray.data.read_parquet(src, columns=columns, ray_remote_args=io_remote_args())
    plan = plan_cpus(float(ray.cluster_resources().get("CPU", 1)), actors, num_gpus)
    out_ds = embed_dataset(
        ds,
        model_dir,
        column=field,
        kind=opts.kind,
        task=opts.task,
        actors=actors,
        num_gpus=num_gpus,
        num_cpus=plan.num_cpus,  # the plan above, not a second look at the cluster
        threads=threads,
        batch_rows=batch_rows,
        variant=variant,
        max_batch_tokens=max_batch_tokens,
    )
    if id_field != "id":
        out_ds = out_ds.rename_columns({id_field: "id"})
    if not keep_text:
        out_ds = out_ds.drop_columns([field])
    elif field != "text":
        out_ds = out_ds.rename_columns({field: "text"})
    fs.create_dir(root, recursive=True)
    out_ds.write_parquet(dst if _is_uri(dst) else root, ray_remote_args=io_remote_args())
    seconds = time.monotonic() - started
    shards = _shards(fs, root)
    rows = sum(int(s["rows"]) for s in shards)
    summary = {
        "rows": rows,
        "actors": actors,
        "threads": threads or plan.threads,
        "seconds": seconds,
        "texts_per_s": rows / seconds if seconds else 0.0,
    }
    config = {
        "input": src,
        "model": str(model_dir),
        "kind": opts.kind,
        "task": opts.task,
        "format": "parquet",
        "folder": True,
        "with_text": keep_text,
        "engine": "ray",
    }
    index = json.dumps({"config": config, "rows": rows, "shards": shards, "summary": summary}, indent=1)
    with fs.open_output_stream(f"{root}/{INDEX_FILE}") as fh:
        fh.write(index.encode())
    return summary


def _check_paths(src: str, dst: str, out: str | Path, id_field: str | None) -> tuple[Any, str]:
    """Refuse a run that cannot succeed before a cluster starts: no id column, no Parquet input, an output that
    is a file or a folder with files in it. Returns the output's filesystem and root."""
    import pyarrow.fs as pafs

    if id_field is None:
        raise InvalidInputError(
            "id_field is required: Ray reads row groups in parallel and has no global line number", param="id_field"
        )
    if not _is_uri(src):
        if not Path(src).exists():
            raise InvalidInputError(f"input_path {src}: no such file or folder", param="input_path")
        if not (src.endswith((".parquet", ".pq")) or Path(src).is_dir()):
            raise InvalidInputError(
                f"input_path {src}: the Ray path reads Parquet (a .parquet file, a folder of them, or a URI)",
                param="input_path",
            )
    fs, root = pafs.FileSystem.from_uri(dst if _is_uri(dst) else str(Path(dst).resolve()))
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise InvalidInputError(f"out {out}: is a file; name a folder", param="out")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(root)):
        raise InvalidInputError(f"out {out}: the folder is not empty; pick an empty folder", param="out")
    return fs, str(root)


def _shards(fs: Any, root: str) -> list[dict[str, Any]]:
    """The Parquet files a run wrote, with their row counts, in name order."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    files = sorted(
        (f for f in fs.get_file_info(pafs.FileSelector(root)) if f.path.endswith(".parquet")), key=lambda f: f.path
    )
    return [{"file": f.base_name, "rows": int(pq.read_metadata(f.path, filesystem=fs).num_rows)} for f in files]
