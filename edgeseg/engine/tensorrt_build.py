"""Building a TensorRT engine from ONNX, for each TensorRT generation edgeseg supports.

- 8.5 (JetPack 5): explicit-batch flag; FP16/INT8 builder flags; INT8 from a Q/DQ ONNX,
  or implicit INT8 from edgeseg's calibration cache through a calibrator that only reads it.
- 10.x (JetPack 6, desktops): explicit batch is implied; INT8 from the Q/DQ ONNX (implicit
  INT8 is deprecated since 10.1); the cache stays for the DLA and on request; FP16 flag.
- 11.x: strongly typed networks only: precision comes from the ONNX itself (Q/DQ for
  INT8, an FP16 ONNX for FP16); the INT8/FP16 flags and calibrators are gone.

edgeseg decides the policy (``make_plan``, a pure function of version and options); NVIDIA's
Polygraphy talks to TensorRT (parser, builder config, build). The few TensorRT calls left
here are the pieces Polygraphy does not do, each saying why. INT8 builds on 8.5-10.x also
allow FP16, so the layers that stay in float (the classifier, Resize) are not left in
FP32 (trtexec warns the same without --fp16).
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from edgeseg.console import say
from edgeseg.errors import ConfigError, EdgesegError, MissingDependencyError

PRECISIONS = ("fp32", "fp16", "int8")
# TensorRT names edgeseg touches only on the generations that still have them (the API
# conformance test checks every other TensorRT name edgeseg uses against each targeted release)
ONLY_BEFORE_10 = frozenset({"get_binding_name", "binding_is_input", "get_binding_dtype", "num_bindings",
                            "set_binding_shape", "get_binding_shape", "execute_async_v2", "device_memory_size"})
ONLY_BEFORE_11 = frozenset({"EXPLICIT_BATCH", "FP16", "INT8", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
                            "int8_calibrator", "set_calibration_profile", "OBEY_PRECISION_CONSTRAINTS",
                            "precision", "set_output_type", "device_memory_size",
                            # the methods of the calibrator edgeseg subclasses
                            "get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"})


@dataclass(frozen=True)
class BuildPlan:
    """What to ask of TensorRT: a pure function of version and options, testable without TensorRT."""

    trt_major: int
    explicit_batch_flag: bool
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    use_calibration_cache: bool
    obey_precision_constraints: bool = False
    needs_fp16_onnx: bool = False  # TensorRT 11 takes FP16 from the ONNX's own types
    dla_core: Optional[int] = None
    layer_precisions: Dict[str, str] = field(default_factory=dict)
    version_compatible: bool = False


def _version(trt_version: str) -> Tuple[int, int]:
    parts = (trt_version.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def int8_uses_cache(trt_version: str, *, int8_source: str, dla_core: Optional[int], has_cache: bool) -> bool:
    """Whether ``--int8`` on an FP32 ONNX builds implicit INT8 from the calibration cache (else: the Q/DQ model).

    The Q/DQ model is the better INT8: it carries calibrate's bias correction and keeps the
    logits in float by construction, and TensorRT deprecated implicit INT8 in 10.1 and
    removed it in 11. The cache stays for TensorRT 8.5 (JetPack 5), for the DLA on 8.5-10.x,
    and when asked for with ``--int8-source cache``.
    """
    major, _ = _version(trt_version)
    if int8_source not in ("auto", "qdq", "cache"):
        raise ConfigError(f"--int8-source '{int8_source}' is not auto, qdq or cache.")
    if int8_source == "cache":
        if major >= 11:
            raise ConfigError("TensorRT 11 has no calibration caches (INT8 comes only from Q/DQ nodes); use "
                              "--int8-source qdq or auto.")
        if not has_cache:
            raise ConfigError("--int8-source cache needs the model.calib.cache that edgeseg calibrate writes; run "
                              "edgeseg calibrate first.")
        return True
    if int8_source == "qdq" or major >= 11 or not has_cache:
        return False
    return major < 10 or dla_core is not None


def make_plan(trt_version: str, *, fp16: bool, int8: bool, onnx_is_qdq: bool, has_cache: bool,
              float_layers: bool = False, layer_precisions: Optional[Dict[str, str]] = None,
              dla_core: Optional[int] = None, version_compatible: bool = False) -> BuildPlan:
    major, minor = _version(trt_version)
    overrides = dict(layer_precisions or {})
    for name, precision in overrides.items():
        if precision not in PRECISIONS:
            raise ConfigError(f"--layer-precision {name}={precision}: the precision must be one of "
                              f"{', '.join(PRECISIONS)}.")
    if (major, minor) < (8, 5):
        raise ConfigError(f"TensorRT {trt_version} is too old; edgeseg supports 8.5 and newer.")
    if version_compatible and (major, minor) < (8, 6):
        raise ConfigError(f"--version-compatible engines need TensorRT 8.6 or newer; this is {trt_version}.")
    if dla_core is not None and not (fp16 or int8 or onnx_is_qdq):
        raise ConfigError("The DLA runs only FP16 or INT8; add --fp16 or --int8 to --dla-core.")
    if major >= 11:
        # no FP16/INT8 flags exist any more: an FP16 ONNX or a Q/DQ ONNX carries the precision
        if int8 and not onnx_is_qdq:
            raise ConfigError("TensorRT 11 builds INT8 only from a Q/DQ ONNX; pass the model.int8.onnx written by "
                              "edgeseg calibrate.")
        if fp16 and (int8 or onnx_is_qdq):
            # strongly typed: the float layers of a Q/DQ model run in the ONNX's own FP32, whatever is asked
            raise ConfigError("TensorRT 11 takes precision only from the ONNX, and edgeseg's Q/DQ model keeps its float "
                              "layers in FP32, so --fp16 cannot apply to an INT8 build there; drop --fp16.")
        if overrides:
            raise ConfigError("TensorRT 11 networks are strongly typed, so --layer-precision cannot apply; keep layers "
                              "in float with edgeseg calibrate --max-miou-drop, which leaves them unquantized.")
        return BuildPlan(major, False, True, False, False, False, needs_fp16_onnx=fp16 and not int8 and not onnx_is_qdq,
                         dla_core=dla_core, version_compatible=version_compatible)
    for name, precision in overrides.items():
        if precision == "fp16" and not (fp16 or int8) or precision == "int8" and not int8:
            raise ConfigError(f"--layer-precision {name}={precision} needs --{precision} too: TensorRT refuses a "
                              f"{precision} layer in a build that does not allow {precision}.")
    if int8 and not onnx_is_qdq and not has_cache:
        raise ConfigError("--int8 needs a calibration cache (model.calib.cache from edgeseg calibrate) or a Q/DQ "
                          "ONNX model.")
    implicit = int8 and not onnx_is_qdq
    # layers kept in float (calibrate's classifier and accuracy budget) are pinned only where TensorRT picks
    # precisions itself; a Q/DQ model already says which layers are INT8
    obey = (implicit and float_layers) or bool(overrides)
    # INT8 allows FP16 too: the layers left in float (classifier, Resize, calibrate's fallbacks) run in FP16
    # rather than FP32, as trtexec advises; layers pinned to fp32 stay FP32 under the precision constraints
    return BuildPlan(major, major < 10, False, fp16 or int8, int8, implicit, obey_precision_constraints=obey,
                     dla_core=dla_core, layer_precisions=overrides, version_compatible=version_compatible)


def static_dla_batch(batch: Tuple[int, int, int], shape_given: bool) -> Tuple[int, int, int]:
    """The DLA takes no dynamic shapes (MIN = OPT = MAX); a dynamic profile would send every layer to the GPU."""
    low, opt, high = batch
    if not shape_given:
        return 1, 1, 1
    if not low == opt == high:
        raise ConfigError(f"--dla-core needs a static batch (the DLA runs no dynamic shapes); use --shape {opt}:{opt}:"
                          f"{opt} or build one engine per batch size.")
    return batch


def polygraphy_trt():
    """Polygraphy's TensorRT backend, or one sentence saying what to install.

    Every TensorRT call of a build or a run goes through Polygraphy: NVIDIA tests it against
    each TensorRT release and it adapts to the version it finds, which nothing here can do.
    """
    try:
        import polygraphy.backend.trt as backend

        from edgeseg.runtime.cuda_device import plain_polygraphy_log

        plain_polygraphy_log()
    except ImportError as exc:
        raise MissingDependencyError("Building or running a TensorRT engine needs NVIDIA's Polygraphy; pip install "
                                     "'edgeseg[trt]' (or pip install polygraphy). ONNX files run without it on ONNX "
                                     "Runtime.") from exc
    return backend


def polygraphy_failure(exc: Exception, what: str) -> EdgesegError:
    """A Polygraphy refusal as edgeseg's one sentence (Polygraphy logs TensorRT's own messages above it)."""
    detail = " ".join(str(exc).split())
    return EdgesegError(f"{what}: {detail[:400]}{'...' if len(detail) > 400 else ''}; see the TensorRT messages above.")


def _cache_calibrator(backend, trt, cache_text: str, trt_version: str, folder: Path):
    """Polygraphy's calibrator with edgeseg's cache and no images.

    The data loader is empty on purpose: if TensorRT rejected the cache and asked for
    images, Polygraphy's calibrator hands it none and the build fails ("no scaling factors
    detected") instead of calibrating on something else. The cache is headed for this
    TensorRT and for IInt8EntropyCalibrator2, the calibrator Polygraphy and trtexec use.
    """
    from edgeseg.quant.trt_cache import for_tensorrt

    cache = folder / "calib.cache"  # a copy: Polygraphy's calibrator writes back what TensorRT hands it
    cache.write_text(for_tensorrt(cache_text, trt_version))
    return backend.Calibrator([], cache=str(cache), BaseClass=trt.IInt8EntropyCalibrator2)


class BuildLog:
    """TensorRT's INFO lines of one build, kept for the DLA placement report.

    Polygraphy logs TensorRT through one module-level ILogger (``util.get_trt_logger``) and
    turns INFO into its own verbose level, which edgeseg does not show. For the length of
    a build, this wraps that logger's ``log`` so the lines are also kept here; warnings and
    errors still reach the user through Polygraphy.
    """

    def __init__(self):
        self.info: List[str] = []

    def __enter__(self) -> "BuildLog":
        from polygraphy.backend.trt import util as trt_util

        self.logger = trt_util.get_trt_logger()
        self.original = type(self.logger).log
        log, info, severity_info = self.original, self.info, _info_severity()

        def keep(logger, severity, msg):
            if severity == severity_info:
                info.append(str(msg))
            return log(logger, severity, msg)

        type(self.logger).log = keep
        return self

    def __exit__(self, *exc) -> None:
        type(self.logger).log = self.original


def _info_severity():
    import tensorrt as trt

    return trt.ILogger.Severity.INFO


def build_engine_file(onnx_path: Path, out: Path, *, fp16: bool, int8: bool, onnx_is_qdq: bool,
                      calibration_cache: Optional[Path], input_shape: Tuple[int, int, int], max_batch: int,
                      workspace_mb: int, float_layers: Sequence[str] = (), min_batch: int = 1,
                      opt_batch: int = 1, layer_precisions: Optional[Dict[str, str]] = None,
                      dla_core: Optional[int] = None, timing_cache: Optional[Path] = None,
                      version_compatible: bool = False) -> dict:
    """Build and serialise an engine through Polygraphy; return what the sidecar should record.

    edgeseg decides the policy (``make_plan``: flags, precisions, INT8 source, DLA) and
    Polygraphy talks to TensorRT: ``NetworkFromOnnxPath`` parses, ``CreateConfig`` sets the
    flags, profile, calibrator, timing cache and DLA, ``EngineBytesFromNetwork`` builds.
    ``timing_cache`` is read before and written back after the build, so later builds on
    the same GPU and TensorRT skip the kernel timing they already did.
    """
    backend = polygraphy_trt()
    import tensorrt as trt

    plan = make_plan(trt.__version__, fp16=fp16, int8=int8, onnx_is_qdq=onnx_is_qdq,
                     has_cache=calibration_cache is not None, float_layers=bool(float_layers),
                     layer_precisions=layer_precisions, dla_core=dla_core, version_compatible=version_compatible)
    if dla_core is not None and not min_batch == opt_batch == max_batch:
        raise ConfigError("--dla-core needs a static batch (MIN = OPT = MAX); the DLA runs no dynamic shapes.")
    pinned = dict.fromkeys(float_layers, "fp32") if plan.use_calibration_cache else {}
    pinned.update(plan.layer_precisions)
    from edgeseg.engine.trt_rules import require_tensorrt_parsable

    # what this TensorRT's parser would refuse is said here, naming the node and the fix, before any build starts
    require_tensorrt_parsable(onnx_path, trt.__version__)
    scratch = Path(tempfile.mkdtemp(prefix="edgeseg-trt-"))
    try:
        return _build(backend, trt, plan, onnx_path, out, pinned, scratch, input_shape=input_shape,
                      batch=(min_batch, opt_batch, max_batch), workspace_mb=workspace_mb,
                      float_layers=float_layers, timing_cache=timing_cache, calibration_cache=calibration_cache)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build(backend, trt, plan: BuildPlan, onnx_path: Path, out: Path, pinned: Dict[str, str], scratch: Path, *,
           input_shape, batch, workspace_mb: int, float_layers, timing_cache: Optional[Path],
           calibration_cache: Optional[Path]) -> dict:
    from polygraphy.exception import PolygraphyException

    min_batch, opt_batch, max_batch = batch
    c, h, w = input_shape
    input_name = onnx_input_name(onnx_path)
    # 10.x has the flag as an option; 11.x types every network strongly and may drop it, so ask only where it exists
    typed = plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    network = backend.NetworkFromOnnxPath(str(onnx_path), strongly_typed=typed)
    if plan.obey_precision_constraints:
        # Polygraphy's SetLayerPrecisions matches TensorRT layer names and sets no output types; edgeseg's pins
        # name ONNX nodes (one node may become several layers) and set output types, as trtexec's
        # --layerPrecisions with --layerOutputTypes do: _pin_layer_precisions, run as a network postprocess
        onnx_nodes = onnx_node_names(onnx_path)
        network = backend.PostprocessNetwork(network, lambda network: _pin_layer_precisions(
            trt, network, pinned, onnx_nodes, required=plan.layer_precisions), name="edgeseg layer precisions")
    reused = _timing_cache_fits(timing_cache)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)  # Polygraphy locks and writes it there
    config = backend.CreateConfig(
        fp16=plan.fp16_flag, int8=plan.int8_flag,
        # TensorRT and trtexec allow TF32 by default (11.x too: it is a math mode, not a type) and Polygraphy turns
        # it off; edgeseg keeps TensorRT's default, so the engine is the one the printed trtexec line builds
        tf32=True,
        precision_constraints="obey" if plan.obey_precision_constraints else None,
        profiles=[backend.Profile().add(input_name, (min_batch, c, h, w), (opt_batch, c, h, w), (max_batch, c, h, w))],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mb << 20},
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # lets the inspector name each layer
        load_timing_cache=str(timing_cache) if reused else None,
        version_compatible=plan.version_compatible or None,
        calibrator=_cache_calibrator(backend, trt, calibration_cache.read_text(), trt.__version__, scratch)
        if plan.use_calibration_cache else None,
        use_dla=plan.dla_core is not None, allow_gpu_fallback=plan.dla_core is not None)
    dla: Optional[dict] = {"core": plan.dla_core} if plan.dla_core is not None else None
    if dla is not None:
        # CreateConfig(use_dla=True) always picks core 0; the core the user named is set after it
        config = backend.PostprocessConfig(config, lambda builder, network, config: dla.update(
            _use_dla_core(trt, builder, config, network, plan.dla_core)))
    try:
        with BuildLog() as log:
            serialized = backend.EngineBytesFromNetwork(
                network, config=config, save_timing_cache=str(timing_cache) if timing_cache else None)()
    except PolygraphyException as exc:
        raise polygraphy_failure(exc, f"TensorRT could not parse or build {onnx_path.name}") from None
    engine = _load_back(trt, serialized, plan, onnx_path)
    out.write_bytes(bytes(serialized))
    if dla is not None:
        dla["placement"] = layer_placement(log.info, _engine_layers(trt, engine))
        _say_placement(dla["placement"])
    return {"tensorrt": trt.__version__, "built_with": f"polygraphy {_polygraphy_version()}",
            "plan": {k: v for k, v in plan.__dict__.items()},
            "batch": {"min": min_batch, "opt": opt_batch, "max": max_batch}, "max_batch": max_batch,
            "workspace_mb": workspace_mb, "float_layers": list(float_layers), "layer_precisions": pinned,
            "dla": dla, "timing_cache": {"path": str(timing_cache), "reused": reused} if timing_cache else None,
            "io": _io_tensors(trt, engine), "gpu": gpu_identity()}


def _polygraphy_version() -> str:
    import polygraphy

    return getattr(polygraphy, "__version__", "unknown")


def onnx_input_name(onnx_path: Path) -> str:
    """The graph input the optimisation profile shapes (edgeseg's models have one image input)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ConfigError(f"{onnx_path.name} has {len(inputs)} inputs ({', '.join(inputs[:4])}); edgeseg builds "
                          f"engines for models with one image input.")
    return inputs[0]


def _timing_cache_fits(path: Optional[Path]) -> bool:
    """Whether the timing cache at ``path`` is one to reuse; another GPU's or TensorRT's is moved aside.

    Polygraphy loads a cache with ``ignore_mismatch=False`` but ignores the refusal, and
    merges the old file into the new cache with ``ignore_mismatch=True`` when it saves: a
    foreign or damaged cache is moved aside here (``*.stale``) so timings never mix.
    """
    if path is None or not path.exists():
        return False
    import tensorrt as trt

    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    probe = builder.create_builder_config()
    cache = probe.create_timing_cache(path.read_bytes())
    if cache is not None and probe.set_timing_cache(cache, ignore_mismatch=False):
        say(f"Reusing the timing cache {path}")
        return True
    stale = path.with_name(path.name + ".stale")
    path.replace(stale)  # Polygraphy would merge it into the new one (ignore_mismatch=True when it saves)
    say(f"[yellow]{path} was written by another GPU or TensorRT (kept as {stale.name}); building with a fresh "
        f"timing cache[/yellow]")
    return False


def _load_back(trt, serialized, plan: BuildPlan, onnx_path: Path):
    """Deserialise the engine just built: proof that it loads, and the source of its I/O and layer reports."""
    # edgeseg has just built it, so a version-compatible engine's host code is its own
    _, engine = deserialize(trt, serialized, dla_core=plan.dla_core, host_code_allowed=plan.version_compatible)
    if engine is None:
        raise EdgesegError(f"TensorRT built an engine from {onnx_path.name} but could not load it back; see the "
                           f"TensorRT messages above.")
    return engine


def deserialize(trt, data, *, dla_core: Optional[int], host_code_allowed: bool):
    """(runtime, engine or None): an engine loaded onto its DLA core, running host code only when allowed.

    Not Polygraphy's EngineFromBytes/EngineFromPath: they allow engine host code
    unconditionally and set no DLA core; the runtime is returned because it must outlive
    the engine.
    """
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if hasattr(runtime, "engine_host_code_allowed"):  # TensorRT >= 8.6; off unless allowed
        runtime.engine_host_code_allowed = bool(host_code_allowed)
    if dla_core is not None:  # the runtime's DLA core is -1 unless set, as trtexec sets it before loading
        runtime.DLA_core = int(dla_core)
    return runtime, runtime.deserialize_cuda_engine(data)


def onnx_node_of(layer) -> str:
    """The ONNX node a parsed layer came from.

    TensorRT >= 10 parsers record it in the layer's metadata ("[ONNX Layer: NAME | ...]");
    before that the layer name is the only trace: the node's name, or NAME_<n> when one
    node became several layers (onnx-tensorrt's generateUniqueName).
    """
    metadata = getattr(layer, "metadata", "") or ""
    found = re.match(r"\[ONNX Layer: (.*?)( \| .*)?\]$", metadata)
    return found.group(1) if found else layer.name


def layers_of_nodes(network, nodes: Iterable[str], onnx_nodes: Set[str] = frozenset()) -> Dict[str, List[object]]:
    """{ONNX node name: [its layers]} for the nodes asked for (one node may give several layers).

    ``onnx_nodes``: every node name of the ONNX graph, so that a layer NAME_<n> is never
    given to NAME when NAME_<n> is a node of its own.
    """
    wanted = set(nodes)
    found: Dict[str, List[object]] = {name: [] for name in wanted}
    for layer in (network.get_layer(i) for i in range(network.num_layers)):
        node = onnx_node_of(layer)
        if node in wanted:
            found[node].append(layer)
            continue
        base, sep, suffix = layer.name.rpartition("_")
        if node == layer.name and sep and suffix.isdigit() and base in wanted and layer.name not in onnx_nodes:
            found[base].append(layer)
    return found


def _pin_layer_precisions(trt, network, precisions: Dict[str, str], onnx_nodes: Set[str],
                          required: Iterable[str] = ()) -> None:
    """Pin the layers of the given ONNX nodes, skipping those TensorRT cannot give a float precision.

    Like trtexec and Polygraphy, constants, shape layers and layers with integer or boolean
    outputs are left alone (TensorRT rejects a float type on them); only names the user
    gave with --layer-precision must exist.
    """
    types = {"fp32": trt.float32, "fp16": trt.float16, "int8": trt.int8}
    missing = []
    for node, layers in layers_of_nodes(network, precisions, onnx_nodes).items():
        if not layers and node in required:
            missing.append(node)
        for layer in layers:
            if not _takes_float_precision(trt, layer):
                continue
            layer.precision = types[precisions[node]]
            for output in range(layer.num_outputs):
                layer.set_output_type(output, types[precisions[node]])
    if missing:
        raise ConfigError(f"--layer-precision names layers the network does not have: {', '.join(sorted(missing)[:5])}; "
                          f"use ONNX node names (edgeseg calibrate's sensitivity list prints them).")


def _takes_float_precision(trt, layer) -> bool:
    if layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
        return False
    for index in range(layer.num_outputs):
        tensor = layer.get_output(index)
        if not tensor.is_execution_tensor or tensor.dtype not in (trt.float32, trt.float16):
            return False
    return True


def onnx_node_names(onnx_path: Path) -> Set[str]:
    import onnx

    return {node.name for node in onnx.load(str(onnx_path), load_external_data=False).graph.node}


def _use_dla_core(trt, builder, config, network, core: int) -> dict:
    """Move the config Polygraphy made for DLA core 0 to core ``core``, and list what the DLA cannot run."""
    cores = builder.num_DLA_cores
    if not 0 <= core < cores:
        raise ConfigError(f"--dla-core {core}: this device has {cores} DLA core(s)"
                          f"{f' (0 to {cores - 1})' if cores else ''}; {'pick one of them' if cores else 'drop --dla-core'}.")
    config.DLA_core = core
    unsupported = [network.get_layer(i).name for i in range(network.num_layers)
                   if not config.can_run_on_DLA(network.get_layer(i))]
    if unsupported:
        say(f"[yellow]{len(unsupported)} of {network.num_layers} layers cannot run on DLA and fall back to the GPU: "
            f"{', '.join(unsupported[:8])}{' ...' if len(unsupported) > 8 else ''}[/yellow]")
    return {"core": core, "layers_dla_cannot_run": unsupported}


def _engine_layers(trt, engine) -> Optional[List[str]]:
    """The built engine's layer names, from the engine inspector (None where it cannot say)."""
    inspector = engine.create_engine_inspector()
    if inspector is None:
        return None
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        layers = json.loads(text).get("Layers", [])
    except (ValueError, AttributeError):  # the inspector is a report, never a reason to fail a finished build
        return None
    return [layer.get("Name", "") if isinstance(layer, dict) else str(layer) for layer in layers]


_SECTION = re.compile(r"-+\s*Layers Running on (DLA|GPU)\b", re.IGNORECASE)
_ENTRY = re.compile(r"^\[(Dla|Gpu)Layer\]\s*(.*)$")


def layer_placement(info_lines: Sequence[str], engine_layers: Optional[Sequence[str]]) -> dict:
    """Where each built layer runs, from TensorRT's own build summary.

    After a build with a DLA core, TensorRT logs at INFO level a "Layers Running on DLA"
    and a "Layers Running on GPU" section ("[DlaLayer] NAME" / "[GpuLayer] TYPE: NAME" lines
    on 8.x-10.x; comma-separated names on older releases). Myelin's GPU subgraphs are
    ForeignNodes too, so a layer's name alone never says DLA. The engine inspector's
    layer list is kept beside it for the record.
    """
    placement: Dict[str, List[str]] = {"dla": [], "gpu": []}
    device, listed = None, False
    for line in info_lines:
        text = line.strip()
        section = _SECTION.search(text)
        if section:
            device, listed = section.group(1).lower(), False
            continue
        if device is None or not text:
            continue
        entry = _ENTRY.match(text)
        if entry:
            placement[entry.group(1).lower()].append(entry.group(2).strip())
            listed = True
        elif not listed and not text.startswith("["):  # older releases: the whole section on one line
            placement[device].extend(part.strip() for part in re.split(r",\s*(?![^{]*\})", text) if part.strip())
            listed = True
        else:
            device = None  # the summary ended
    known = bool(placement["dla"] or placement["gpu"])
    return {"source": "TensorRT build log" if known else "unknown (TensorRT logged no placement summary)",
            "dla_layers": placement["dla"], "gpu_layers": placement["gpu"],
            "engine_layers": list(engine_layers) if engine_layers is not None else None}


def _say_placement(placement: dict) -> None:
    dla, gpu = placement["dla_layers"], placement["gpu_layers"]
    if not (dla or gpu):
        say("[yellow]TensorRT did not report where the layers run; check the build log[/yellow]")
    elif not dla:
        say("[yellow]No layer runs on the DLA: the whole engine fell back to the GPU[/yellow]")
    else:
        say(f"DLA runs {len(dla)} subgraph(s); {len(gpu)} layer(s) run on the GPU")


def _io_tensors(trt, engine) -> list:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensors.append({"name": name, "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                        else "output", "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1],
                        "shape": list(engine.get_tensor_shape(name))})
    return tensors


def gpu_identity() -> Optional[dict]:
    """{"name", "compute_capability"} of CUDA device 0, or None when it cannot be asked."""
    try:
        from edgeseg.runtime.cuda_device import device_info

        return device_info()
    except Exception:  # no CUDA runtime to ask: the sidecar simply does not record the GPU
        return None


def default_timing_cache(trt_version: str) -> Path:
    """~/.cache/edgeseg/tensorrt/timing-<version>.cache: shared by every build with this TensorRT."""
    import os

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "edgeseg" / "tensorrt" / f"timing-{trt_version}.cache"
