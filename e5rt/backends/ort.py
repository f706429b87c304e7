"""ONNX Runtime behind one small contract: run(feeds) -> hidden states on the host.

Provider choice and verification live here. IO binding (inputs copied to the device once, outputs bound to
preallocated device buffers reused across batches of the same shape) is the CUDA path; it also runs on the CPU
device, which is how the CPU-only test suite exercises that seam.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..config import ARENA_POLICIES, SPIN_POLICIES, environment
from ..cpu import check_arm64_bf16
from ..errors import ConfigError, IntegrityError, ProviderUnavailableError
from .weights import by_reference

log = logging.getLogger("e5rt")
# Graph optimizers a CPU session runs without (see OrtBackend._session).
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def installed_ort_packages() -> list[str]:
    """Which onnxruntime distributions are installed (two at once overwrite each other's files)."""
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpu_present() -> bool:
    """A cheap check for an NVIDIA device node; CUDA activation is verified on the session anyway."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or environment().assume_gpu


def resolve_provider(requested: str) -> str:
    """'auto' becomes cuda when onnxruntime-gpu is installed and a GPU is present, else cpu."""
    if requested == "auto":
        choice = "cuda" if PROVIDERS["cuda"] in ort.get_available_providers() and gpu_present() else "cpu"
        log.info("e5rt: provider auto -> %s (available: %s)", choice, ", ".join(ort.get_available_providers()))
        return choice
    if requested not in PROVIDERS:
        raise ConfigError(f"unknown provider {requested!r}; expected auto, {', '.join(PROVIDERS)}")
    return requested


def _unavailable_reason(provider: str) -> str:
    pkgs = installed_ort_packages()
    if PROVIDERS[provider] not in ort.get_available_providers():
        hint = "install the 'gpu' extra (onnxruntime-gpu) in an environment without the CPU 'onnxruntime' package"
        if len(pkgs) > 1:
            hint = (
                f"several onnxruntime packages are installed ({', '.join(pkgs)}) and overwrite each other; "
                "keep only onnxruntime-gpu"
            )
        return f"this onnxruntime build ({', '.join(pkgs) or 'unknown'}) has no {PROVIDERS[provider]}: {hint}"
    return (
        f"{PROVIDERS[provider]} is built in but did not activate: the CUDA/cuDNN libraries it needs were not found "
        "or no GPU is visible (check nvidia-smi, CUDA_VISIBLE_DEVICES and that CUDA 12/13 and cuDNN 9 libraries are "
        "on the library path; importing torch first or onnxruntime.preload_dlls() can make them visible)"
    )


class OrtBackend:
    """One inference session plus the provider-specific way of feeding it."""

    def __init__(
        self,
        model_path: str | Path,
        provider: str,
        threads: int | None = None,
        io_binding: bool | None = None,
        arena: str = "default",
        device_id: int = 0,
        max_cached_shapes: int = 8,
        spin: str = "run",
        exact_int8: bool = False,
        share_weights: bool = False,
        arm64_bf16: bool = False,
    ) -> None:
        if arena not in ARENA_POLICIES:
            raise ConfigError(f"arena must be one of {ARENA_POLICIES}, got {arena!r}")
        if spin not in SPIN_POLICIES:
            raise ConfigError(f"spin must be one of {SPIN_POLICIES}, got {spin!r}")
        if arm64_bf16:
            check_arm64_bf16()
        self.arm64_bf16 = arm64_bf16
        self.provider = provider
        if provider in ("cuda", "tensorrt") and hasattr(ort, "preload_dlls"):
            try:  # makes pip-installed CUDA/cuDNN (or torch's copies) visible to the CUDA provider
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - best effort; activation is verified below
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        self.model_path = Path(model_path)
        self.threads = int(threads) if threads else None
        self.exact_int8 = exact_int8
        self._spin = spin
        self._arena = arena
        # The graph with its weights mapped from the model file (weights.by_reference): this session and its
        # siblings (with_threads) read one copy in the page cache.
        self._mapped: bytes | None = by_reference(model_path) if share_weights and provider == "cpu" else None
        self._run_options = ort.RunOptions()
        if arena == "shrink":
            shrink = "cpu:0" if provider == "cpu" else f"cpu:0;gpu:{device_id}"
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", shrink)
        providers: list[Any] = []
        if provider == "tensorrt":
            providers.append((PROVIDERS["tensorrt"], {"device_id": device_id, "trt_fp16_enable": True}))
        if provider in ("cuda", "tensorrt"):
            providers.append((PROVIDERS["cuda"], {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"}))
        providers.append(PROVIDERS["cpu"])
        self._providers = providers
        if provider != "cpu" and PROVIDERS[provider] not in ort.get_available_providers():
            raise ProviderUnavailableError(_unavailable_reason(provider))
        self.session = self._session(self.threads)
        self.active_providers = tuple(self.session.get_providers())
        if PROVIDERS[provider] not in self.active_providers:
            raise ProviderUnavailableError(_unavailable_reason(provider))
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.input_types = {i.name: _ORT_TYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.output_dtype = _ORT_TYPES.get(out.type, np.float32)
        # (batch, length, hidden) for an embedder's hidden states, (batch, labels) for a cross-encoder's logits
        self.output_rank = len(out.shape) if out.shape else 3
        self.device = "cuda" if provider in ("cuda", "tensorrt") else "cpu"
        self.can_split = self.device == "cpu"
        self.device_id = device_id
        self.io_binding = (self.device == "cuda") if io_binding is None else io_binding
        self._local = threading.local()
        self._max_cached = max_cached_shapes
        self.hidden_size: int | None = None

    def _session(self, threads: int | None) -> Any:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        if self.exact_int8:
            # s8 weights on x86 without VNNI: u8u8 products instead of saturating u8s8 (see e5rt.cpu).
            so.add_session_config_entry("session.x64quantprecision", "1")
        if self._spin == "off":
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        elif self._spin == "run":
            # Spinning between a run's operators keeps the threads from sleeping and waking at each of them;
            # stopped when the run returns, they leave the cores to the event loop, the other workers and the
            # caller's own work instead of spinning on for ~57 ms (config.LoadOptions.spin).
            so.add_session_config_entry("session.force_spinning_stop", "1")
        # The arena keeps the blocks it grew to and reuses them. Token-budget batching caps the largest
        # activation, so it plateaus (MiniLM, 2,000 random shapes: 290 MB). 'shrink' returns free blocks
        # after every run but fragmented the heap in that measurement (776 MB); 'off' uses plain malloc.
        so.enable_cpu_mem_arena = self._arena != "off"
        if self.arm64_bf16:
            so.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
        # The CPU graphs split SkipLayerNormalization into Add + LayerNormalization on purpose (its CPU kernel is the
        # slow one); the session's own SkipLayerNormFusion put it back: me5-small-r 16x128 at 2 threads on a Zen 4,
        # fp32 565 -> 523 ms and int8-static 284 -> 249 ms with the fusion off (benchmarks/graph_ab.py).
        extra: dict[str, Any] = {"disabled_optimizers": CPU_DISABLED_OPTIMIZERS} if self.provider == "cpu" else {}
        if self._mapped is not None:
            folder = str(self.model_path.parent)
            so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            try:
                return ort.InferenceSession(self._mapped, sess_options=so, providers=self._providers, **extra)
            except Exception as exc:  # noqa: BLE001 - an onnxruntime without that config entry: copy the weights
                log.warning("e5rt: cannot map %s's weights (%s); loading a copy per session", self.model_path, exc)
                self._mapped = None
        try:
            return ort.InferenceSession(str(self.model_path), sess_options=so, providers=self._providers, **extra)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise IntegrityError(f"{self.model_path}: onnxruntime cannot load this graph ({exc})") from exc

    def with_threads(self, threads: int) -> OrtBackend:
        """Another session of this graph with its own intra-op thread count, reading the same weights from the
        file (a second copy of a 2 GB model would not fit an edge server); without share_weights this session
        is first reloaded so. Each session still packs its own matrix-multiply weights (that packing halves a
        one-text run's time): on me5-small-r fp32 the second session adds 82 MB, a whole copy 483."""
        if self.device != "cpu":
            raise ConfigError("sessions with other thread counts are for the CPU provider")
        if self._mapped is None:
            self._mapped = by_reference(self.model_path)
            self.session = self._session(self.threads)
        sibling = copy.copy(self)
        sibling.threads = int(threads)
        sibling._local = threading.local()
        sibling.session = sibling._session(sibling.threads)
        return sibling

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch; feeds holds only the graph's declared inputs, typed as the graph declares."""
        if not self.io_binding:
            return np.asarray(self.session.run([self.output_name], feeds, self._run_options)[0])
        return self._run_bound(feeds)

    def _buffers(self) -> OrderedDict[tuple[Any, ...], Any]:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = OrderedDict()
        return cache

    def _device_value(self, key: tuple[Any, ...], shape: tuple[int, ...], dtype: Any) -> Any:
        """A device buffer for this shape, reused across batches (LRU-bounded, one cache per thread)."""
        cache = self._buffers()
        value = cache.get(key)
        if value is None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, self.device_id)
            cache[key] = value
            while len(cache) > self._max_cached * (len(self.input_names) + 1):
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return value

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        binding = self.session.io_binding()
        batch, length = next(iter(feeds.values())).shape
        for name, array in feeds.items():
            value = self._device_value(("in", name, array.shape), array.shape, array.dtype)
            value.update_inplace(np.ascontiguousarray(array))  # one host->device copy per input
            binding.bind_ortvalue_input(name, value)
        if self.hidden_size is None:
            binding.bind_output(self.output_name, self.device, self.device_id)
            self.session.run_with_iobinding(binding, self._run_options)
            out = binding.get_outputs()[0]
            self.hidden_size = int(out.shape()[-1])
            return np.asarray(out.numpy())
        shape = (batch, length, self.hidden_size) if self.output_rank == 3 else (batch, self.hidden_size)
        out_value = self._device_value(("out", shape), shape, self.output_dtype)
        binding.bind_ortvalue_output(self.output_name, out_value)
        self.session.run_with_iobinding(binding, self._run_options)
        # The only device->host copy: the hidden states, when pooling needs them.
        return np.asarray(out_value.numpy())
