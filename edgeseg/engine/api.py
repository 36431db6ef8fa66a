"""``edgeseg build-engine``: the fastest correct artifact the machine can run."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import click

from edgeseg.console import say
from edgeseg.errors import ConfigError
from edgeseg.fileio import atomic_path, check_output_path, require_onnx_model
from edgeseg.sidecar import read_sidecar, spec_from_sidecar, write_sidecar


def tensorrt_available() -> tuple:
    """(True, version) when TensorRT and a CUDA device are usable, else (False, reason)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt Python package is not installed"
    try:
        import tensorrt as trt

        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        if builder is None:
            return False, "TensorRT found no CUDA device"
        return True, trt.__version__
    except Exception as exc:  # a broken CUDA install raises from deep inside TensorRT
        return False, f"TensorRT is installed but unusable ({exc})"


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def parse_batch_shape(shape: Optional[str], max_batch: int) -> Tuple[int, int, int]:
    """--shape MIN:OPT:MAX batch sizes of the optimisation profile (H and W are fixed by the model)."""
    if not shape:
        return 1, 1, max_batch
    try:
        low, opt, high = (int(v) for v in shape.split(":"))
    except ValueError:
        raise ConfigError(f"--shape '{shape}' is not MIN:OPT:MAX batch sizes, e.g. 1:4:8.") from None
    if not 1 <= low <= opt <= high:
        raise ConfigError(f"--shape {shape}: the batch sizes must satisfy 1 <= MIN <= OPT <= MAX.")
    return low, opt, high


def parse_layer_precisions(items: Sequence[str]) -> Dict[str, str]:
    """--layer-precision NAME=fp32 (repeatable) -> {NAME: fp32}."""
    precisions = {}
    for item in items:
        name, sep, precision = item.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"--layer-precision '{item}' is not NAME=PRECISION, e.g. /head/Conv=fp32.")
        precisions[name] = precision.lower()
    return precisions


def _rebuild_command(model_path: Path, *, int8: bool, fp16: bool, shape: Optional[str], dla_core: Optional[int],
                     layer_precisions: Dict[str, str], version_compatible: bool, int8_source: str = "auto") -> str:
    parts = ["edgeseg build-engine", model_path.name] + (["--int8"] if int8 else []) + (["--fp16"] if fp16 else [])
    parts += [f"--int8-source {int8_source}"] if int8 and int8_source != "auto" else []
    parts += [f"--shape {shape}"] if shape else []
    parts += [f"--dla-core {dla_core}"] if dla_core is not None else []
    parts += [f"--layer-precision {k}={v}" for k, v in layer_precisions.items()]
    parts += ["--version-compatible"] if version_compatible else []
    return " ".join(parts)


def build_engine(model: str, out: Optional[str] = None, *, int8: bool = False, fp16: bool = False,
                 backend: str = "auto", max_batch: int = 8, workspace_mb: int = 2048, shape: Optional[str] = None,
                 dla_core: Optional[int] = None, layer_precision: Sequence[str] = (),
                 timing_cache: Optional[str] = "default", version_compatible: bool = False, fp16_io: bool = False,
                 print_trtexec: bool = False, trt_version: Optional[str] = None, int8_source: str = "auto") -> dict:
    """Build a TensorRT engine from ``model`` (ONNX) or, without TensorRT, the ONNX Runtime artifact.

    ``--int8`` uses the Q/DQ model (``*.int8.onnx``) that calibrate wrote, or, on TensorRT
    8.5, for the DLA on 8.5-10.x and with ``int8_source="cache"``, implicit INT8 from the
    calibration cache on calibrate's bias-corrected FP32 twin (``*.calib.onnx``) with the
    classifier pinned to float (see ``int8_uses_cache``). Says which backend it chose and
    why. ``print_trtexec`` only prints the equivalent trtexec command (for ``trt_version``,
    default: the installed TensorRT, else JetPack 6's 10.3) and builds no engine; a cache it
    names is first re-headed for that TensorRT (``*.calib.trt<NV_TENSORRT_VERSION>.cache``).

    >>> edgeseg.build_engine("pruned.int8.onnx", int8=True)  # doctest: +SKIP
    """
    model_path = require_onnx_model(model)
    meta = read_sidecar(model_path, required=True)
    spec, info = spec_from_sidecar(meta)
    if backend not in ("auto", "tensorrt", "onnxruntime"):
        raise ConfigError(f"Unknown --backend '{backend}'; choose auto, tensorrt or onnxruntime.")
    batch = parse_batch_shape(shape, max_batch)
    fixed = onnx_fixed_batch(model_path)
    if fixed is not None:  # TensorRT takes only MIN = OPT = MAX = N for a batch fixed in the graph
        if shape and batch != (fixed,) * 3:
            raise ConfigError(f"{model_path.name} has a fixed batch of {fixed}; drop --shape or export the model with "
                              f"a dynamic batch (edgeseg export does).")
        batch = (fixed,) * 3
    elif dla_core is not None:
        from edgeseg.engine.tensorrt_build import static_dla_batch

        batch = static_dla_batch(batch, shape_given=bool(shape))
    precisions = parse_layer_precisions(layer_precision)
    is_qdq = meta.get("precision") == "int8"
    base = _strip(_strip(_strip(model_path.name, ".onnx"), ".int8"), ".fp32")
    cache = model_path.with_name(f"{base}.calib.cache")
    have_trt, why = tensorrt_available()
    if print_trtexec:
        return _print_trtexec(model_path, meta, out, base, cache, trt_version or (why if have_trt else "10.3.0"),
                              int8=int8, fp16=fp16, is_qdq=is_qdq, batch=batch, workspace_mb=workspace_mb,
                              precisions=precisions, dla_core=dla_core, version_compatible=version_compatible,
                              timing_cache=timing_cache, int8_source=int8_source)
    if backend == "tensorrt" and not have_trt:
        raise ConfigError(f"--backend tensorrt was asked for but {why}; install TensorRT or use --backend onnxruntime.")
    use_trt = have_trt and backend != "onnxruntime"
    from edgeseg.engine.tensorrt_build import int8_uses_cache

    implicit = int8 and not is_qdq and use_trt and int8_uses_cache(why, int8_source=int8_source, dla_core=dla_core,
                                                                    has_cache=cache.exists())
    if int8 and not is_qdq and not implicit:
        # ONNX Runtime and TensorRT >= 10 (8.5 too, without a cache) take INT8 from the Q/DQ model calibrate wrote
        qdq = model_path.with_name(f"{base}.int8.onnx")
        if not qdq.exists():
            raise ConfigError(f"--int8 needs a calibrated model; run edgeseg calibrate {model_path.name} first.")
        model_path, meta, is_qdq = qdq, read_sidecar(qdq, required=True), True
        say(f"Using {qdq.name}, the Q/DQ model edgeseg {_quantized_by(meta)} wrote next to {base}.onnx")
        spec, info = spec_from_sidecar(meta)
    precision = "int8" if (int8 or is_qdq) else "fp16" if fp16 else "fp32"
    if not use_trt and (dla_core is not None or precisions or shape):
        say("[yellow]--dla-core, --layer-precision and --shape apply to TensorRT engines only; ignored for ONNX "
            "Runtime[/yellow]")
    if use_trt:
        require_class_map_type(meta, model_path.name, why)
        if is_qdq:
            require_symmetric(meta, model_path.name)
        out_path = check_output_path(out or model_path.with_name(f"{base}.{precision}.engine"))
        say(f"Backend: TensorRT {why} (found with a CUDA device)")
        from edgeseg.engine.tensorrt_build import build_engine_file, default_timing_cache, make_plan

        source, float_layers = (implicit_int8_source(model_path, base) if implicit else (model_path, []))
        plan = make_plan(why, fp16=fp16, int8=int8 or is_qdq, onnx_is_qdq=is_qdq, has_cache=implicit,
                         float_layers=bool(float_layers), layer_precisions=precisions, dla_core=dla_core,
                         version_compatible=version_compatible)
        if plan.needs_fp16_onnx:  # TensorRT 11: FP16 comes from the ONNX's own types
            from edgeseg.engine.fp16_onnx import write_fp16_onnx

            source = write_fp16_onnx(model_path, model_path.with_name(f"{base}.fp16.onnx"), keep_io_types=not fp16_io)
            say(f"Wrote {source.name} (FP16 weights and compute, {'FP16' if fp16_io else 'FP32'} input/output)")
        cache_path = None if timing_cache in (None, "", "none") else (
            default_timing_cache(why) if timing_cache == "default" else Path(timing_cache))
        with atomic_path(out_path) as tmp:
            details = build_engine_file(source, tmp, fp16=fp16, int8=int8 or is_qdq, onnx_is_qdq=is_qdq,
                                        calibration_cache=cache if implicit else None,
                                        input_shape=(3, spec.height, spec.width), max_batch=batch[2],
                                        min_batch=batch[0], opt_batch=batch[1], workspace_mb=workspace_mb,
                                        float_layers=float_layers, layer_precisions=precisions, dla_core=dla_core,
                                        timing_cache=cache_path, version_compatible=version_compatible)
        details["rebuild"] = _rebuild_command(Path(model), int8=int8, fp16=fp16, shape=shape, dla_core=dla_core,
                                              layer_precisions=precisions, version_compatible=version_compatible,
                                              int8_source=int8_source)
        details["int8"] = _int8_record(implicit, is_qdq, source)
        kind = "engine"
    else:
        default = model_path.with_name(f"{base}.{precision}.ort.onnx")
        out_path = Path(out) if out else default
        if out_path.suffix in (".engine", ".plan", ".trt"):
            out_path = out_path.with_name(_strip(out_path.name, out_path.suffix) + ".ort.onnx")
        check_output_path(out_path)
        reason = why if backend == "auto" else "--backend onnxruntime was asked for"
        say(f"Backend: ONNX Runtime (CPU), because {reason}; writing {out_path.name}")
        if fp16:
            say("[yellow]--fp16 has no effect on ONNX Runtime's CPU provider; the artifact stays FP32[/yellow]")
            precision = "int8" if is_qdq else "fp32"
        from edgeseg.engine.onnxruntime_build import build_ort_artifact

        with atomic_path(out_path) as tmp:
            details = build_ort_artifact(model_path, tmp)
        kind = "onnx"
    say(f"Wrote {out_path}")
    return write_sidecar(out_path, kind, input_spec=spec, dataset=info, parent=model_path, stage="build-engine",
                         model=meta.get("model"), precision=precision, onnx=meta.get("onnx"),
                         quantization=meta.get("quantization"),
                         engine=dict(details, backend="tensorrt" if use_trt else "onnxruntime"))


def implicit_int8_source(model_path: Path, base: str) -> Tuple[Path, list]:
    """The ONNX and the layers to pin to float for implicit INT8 from the calibration cache.

    calibrate writes ``<base>.calib.onnx``: the FP32 graph with the same bias correction as
    the Q/DQ model, and its sidecar lists the layers the Q/DQ model keeps in float (the
    classifier and whatever --max-miou-drop kept); TensorRT is told to keep those in FP32.
    An older calibration without it builds from the plain FP32 ONNX with only the accuracy
    budget's layers pinned, and says so.
    """
    twin = model_path.with_name(f"{base}.calib.onnx")
    if twin.exists():
        quantization = read_sidecar(twin, required=True).get("quantization") or {}
        weights = "trained by qat" if quantization.get("source") == "qat" else "bias-corrected"
        say(f"Implicit INT8 from {base}.calib.cache on {twin.name} ({weights}, "
            f"{len(quantization.get('float_layers') or [])} layer(s) pinned to FP32)")
        return twin, list(quantization.get("float_layers") or [])
    qdq = read_sidecar(model_path.with_name(f"{base}.int8.onnx")) or {}
    say(f"[yellow]Implicit INT8 from {base}.calib.cache on {model_path.name}: no bias correction and an INT8 "
        f"classifier (rerun edgeseg calibrate to get {twin.name})[/yellow]")
    return model_path, list((qdq.get("quantization") or {}).get("fallback_layers") or [])


def _quantized_by(meta: dict) -> str:
    """The verb whose scales an INT8 artifact carries: "qat" (trained) or "calibrate" (measured)."""
    return "qat" if (meta.get("quantization") or {}).get("source") == "qat" else "calibrate"


def _int8_record(implicit: bool, is_qdq: bool, source: Path) -> Optional[dict]:
    """What the sidecar says about where the engine's INT8 came from and what accuracy to expect of it."""
    verb = _quantized_by(read_sidecar(source) or {})
    if is_qdq:
        how = "trained with fake quantisation" if verb == "qat" else "bias-corrected"
        return {"source": "qdq", "onnx": source.name, "quantized_by": verb,
                "accuracy": f"as measured by edgeseg {verb} on the Q/DQ model ({how}, logits in float)"}
    if implicit:
        corrected = source.name.endswith(".calib.onnx") and verb == "calibrate"
        ranges = "qat's learned ranges" if verb == "qat" else "calibrate's ranges"
        return {"source": "calibration cache", "onnx": source.name, "bias_corrected": corrected, "quantized_by": verb,
                "accuracy": (f"TensorRT's implicit INT8 with {ranges}; not measured by edgeseg: TensorRT "
                             "chooses the INT8 layers itself, so check it with edgeseg eval on this engine")}
    return None


def _print_trtexec(model_path: Path, meta: dict, out: Optional[str], base: str, cache: Path, version: str, *,
                   int8: bool, fp16: bool, is_qdq: bool, batch, workspace_mb: int, precisions: Dict[str, str],
                   dla_core: Optional[int], version_compatible: bool, timing_cache: Optional[str],
                   int8_source: str = "auto") -> dict:
    """Print the trtexec command that builds what ``build-engine`` would build with TensorRT ``version``."""
    from edgeseg.engine.tensorrt_build import int8_uses_cache, make_plan
    from edgeseg.engine.trtexec import files_to_copy, trtexec_command

    spec, _ = spec_from_sidecar(meta)
    use_cache = int8 and not is_qdq and int8_uses_cache(version, int8_source=int8_source, dla_core=dla_core,
                                                         has_cache=cache.exists())
    source, float_layers, headed_cache = model_path, [], None
    if use_cache:
        source, float_layers = implicit_int8_source(model_path, base)
        headed_cache = cache_for_tensorrt(cache, version)
    elif int8 and not is_qdq:
        source, is_qdq = model_path.with_name(f"{base}.int8.onnx"), True
        if not source.exists():
            raise ConfigError(f"--int8 needs a calibrated model; run edgeseg calibrate {model_path.name} first.")
        require_symmetric(read_sidecar(source) or {}, source.name)
    elif is_qdq:
        require_symmetric(meta, model_path.name)
    require_class_map_type(meta, model_path.name, version)
    precisions = dict(dict.fromkeys(float_layers, "fp32"), **precisions)
    plan = make_plan(version, fp16=fp16, int8=int8 or is_qdq, onnx_is_qdq=is_qdq, has_cache=use_cache,
                     float_layers=bool(float_layers), layer_precisions=precisions, dla_core=dla_core,
                     version_compatible=version_compatible)
    from edgeseg.engine.trt_rules import require_tensorrt_parsable

    require_tensorrt_parsable(source, version)  # the line must not fail on the device's parser
    if plan.needs_fp16_onnx:
        source = model_path.with_name(f"{base}.fp16.onnx")  # written by build-engine --fp16 on TensorRT 11
    precision = "int8" if (int8 or is_qdq) else "fp16" if fp16 else "fp32"
    engine = Path(out) if out else model_path.with_name(f"{base}.{precision}.engine")
    # the default timing cache lives in this machine's home folder: not on the line (the cache is optional)
    cache_path = None if timing_cache in (None, "", "none", "default") else Path(timing_cache)
    command = trtexec_command(plan, source, engine, input_name=(meta.get("onnx") or {}).get("input", "input"),
                              input_shape=(3, spec.height, spec.width), batch=batch, workspace_mb=workspace_mb,
                              static_batch=onnx_fixed_batch(model_path) is not None,  # its FP16/Q/DQ twins share it
                              calibration_cache=headed_cache, timing_cache=cache_path,
                              layer_precisions=precisions, trt_version=version)
    copy = files_to_copy(source, headed_cache, cache_path if cache_path and cache_path.exists() else None)
    say(f"Copy {', '.join(p.name for p in copy)} to the target (from {copy[0].parent}) and run there, in that folder:")
    click.echo(command)
    return {"trtexec": command, "tensorrt": version}


def cache_for_tensorrt(cache: Path, version: str) -> Path:
    """``<base>.calib.trt<code>.cache``: the calibration cache headed for TensorRT ``version`` (for trtexec)."""
    from edgeseg.fileio import write_text_atomic
    from edgeseg.quant.trt_cache import for_tensorrt, tensorrt_version_code

    if len(version.split(".")) < 3:
        # TensorRT compares the whole version in the header, and trtexec calibrates on random data when it
        # rejects the cache: 8.5 must not silently become 8.5.0 when JetPack 5 runs 8.5.2
        raise ConfigError(f"--trt-version {version}: give major.minor.patch (e.g. 8.5.2 on JetPack 5.1, 10.3.0 on "
                          f"JetPack 6); the calibration cache's header must name the exact version.")
    text = cache.read_text()
    headed = cache.with_name(f"{_strip(cache.name, '.cache')}.trt{tensorrt_version_code(version)}.cache")
    write_text_atomic(headed, for_tensorrt(text, version))
    return headed


def onnx_fixed_batch(onnx_path: Path) -> Optional[int]:
    """The batch size fixed in the ONNX graph's input, or None when it is dynamic (edgeseg exports are)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def require_symmetric(meta: dict, name: str) -> None:
    """TensorRT's ONNX parser takes only symmetric INT8 (zero points of 0)."""
    if (meta.get("quantization") or {}).get("symmetric") is False:
        raise ConfigError(f"{name} was calibrated with --asymmetric, which TensorRT's ONNX parser rejects (it takes "
                          f"symmetric INT8 only); recalibrate without --asymmetric, or use --int8-source cache on "
                          f"TensorRT 8.5-10.x.")


def require_class_map_type(meta: dict, name: str, trt_version: str) -> None:
    """TensorRT 8.5's ONNX parser turns ArgMax into TopK, whose indices are int32 and cannot become uint8."""
    onnx_facts = meta.get("onnx") or {}
    if onnx_facts.get("output_kind") == "class_map" and onnx_facts.get("output_dtype") == "uint8" and \
            int(trt_version.split(".")[0]) < 10:
        raise ConfigError(f"{name} outputs a uint8 class map, which TensorRT {trt_version} cannot produce (its ArgMax "
                          f"is a TopK with int32 indices); re-export it with edgeseg export --argmax --argmax-dtype "
                          f"int32.")
