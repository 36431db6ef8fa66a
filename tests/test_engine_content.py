"""What edgeseg hands TensorRT and trtexec, word for word and flag for flag, per TensorRT generation.

The references are independent of edgeseg's code: the trtexec options as NVIDIA's trtexec
documents them, written out here by hand for each case; and what TensorRT was really
configured with (flags, profiles, pinned precisions, calibrator, DLA core, workspace),
recorded by the TensorRT double (tests/trt_double.py) that Polygraphy's real code drives.
Each test was written against a surviving mutant of ``make mutate`` on
edgeseg/engine/trtexec.py or edgeseg/engine/tensorrt_build.py
(benchmarks/results/mutation/engine-*.md).
"""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edgeseg.engine.tensorrt_build import make_plan
from edgeseg.engine.trtexec import files_to_copy, trtexec_binary, trtexec_command
from edgeseg.errors import ConfigError

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def words(plan, **options):
    """The printed line as the shell splits it (names with spaces are quoted)."""
    defaults = dict(input_name="input", input_shape=(3, 64, 96), batch=(1, 2, 4), workspace_mb=1024)
    defaults.update(options)
    return shlex.split(trtexec_command(plan, Path("/data/m.onnx"), Path("/out/m.engine"), **defaults))


# --- trtexec: the whole line, per generation -----------------------------------------------------------------

def test_trtexec_line_for_implicit_int8_on_jetpack_5_is_exactly_trtexecs_words():
    plan = make_plan("8.5.2", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True, float_layers=True,
                     layer_precisions={"/head/Conv": "fp32", "/up/Resize": "fp16"})
    got = words(plan, calibration_cache=Path("/x/c.cache"), timing_cache=Path("/y/t.cache"), trt_version="8.5.2",
                layer_precisions={"/head/Conv": "fp32", "/up/Resize": "fp16"})
    pins = "/head/Conv:fp32,/up/Resize:fp16"
    assert got == [JETSON_TRTEXEC, "--onnx=m.onnx", "--saveEngine=m.engine",
                   "--minShapes=input:1x3x64x96", "--optShapes=input:2x3x64x96", "--maxShapes=input:4x3x64x96",
                   "--memPoolSize=workspace:1024", "--fp16", "--int8", "--calib=c.cache",
                   f"--layerPrecisions={pins}", f"--layerOutputTypes={pins}", "--precisionConstraints=obey",
                   "--timingCacheFile=t.cache"]


def test_trtexec_line_for_a_version_compatible_fp16_engine_on_a_desktop():
    plan = make_plan("10.7.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False, version_compatible=True)
    got = words(plan, trt_version="10.7.0", batch=(2, 2, 2), workspace_mb=256)
    assert got == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=input:2x3x64x96",
                   "--optShapes=input:2x3x64x96", "--maxShapes=input:2x3x64x96", "--memPoolSize=workspace:256",
                   "--fp16", "--versionCompatible"]


def test_trtexec_line_for_the_dla_with_a_static_model():
    plan = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False, dla_core=1)
    got = words(plan, static_batch=True, input_name="images")
    assert got == [JETSON_TRTEXEC, "--onnx=m.onnx", "--saveEngine=m.engine", "--memPoolSize=workspace:1024",
                   "--fp16", "--int8", "--useDLACore=1", "--allowGPUFallback"]


def test_trtexec_line_for_tensorrt_11_names_no_cache_and_no_pins_it_was_handed():
    """Strongly typed trtexec has no --calib and takes no precision flags: a cache or pins given anyway stay off."""
    plan = make_plan("11.4.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False)
    got = words(plan, calibration_cache=Path("c.cache"), layer_precisions={"/head/Conv": "fp32"},
                trt_version="11.4.0")
    assert got == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=input:1x3x64x96",
                   "--optShapes=input:2x3x64x96", "--maxShapes=input:4x3x64x96", "--memPoolSize=workspace:1024",
                   "--stronglyTyped"]


def test_a_qdq_plan_on_10_ignores_a_cache_and_obeys_without_pins():
    qdq = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False)
    assert not any(w.startswith("--calib") for w in words(qdq, calibration_cache=Path("c.cache")))
    # implicit INT8 with float layers but none named: obey, and no empty --layerPrecisions= for trtexec to reject
    obey = make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=False, has_cache=True, float_layers=True)
    got = words(obey, calibration_cache=Path("c.cache"))
    assert "--precisionConstraints=obey" in got and "--calib=c.cache" in got
    assert not any(w.startswith(("--layerPrecisions", "--layerOutputTypes")) for w in got)


def test_file_names_with_spaces_survive_the_shell():
    plan = make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False)
    line = trtexec_command(plan, Path("/my models/road seg.onnx"), Path("out dir/road seg.engine"),
                           input_name="input", input_shape=(3, 8, 8), batch=(1, 1, 1), workspace_mb=64,
                           timing_cache=Path("/c/t cache.bin"))
    got = shlex.split(line)
    assert got[1:3] == ["--onnx=road seg.onnx", "--saveEngine=road seg.engine"]
    assert got[-1] == "--timingCacheFile=t cache.bin"


@pytest.mark.parametrize("version,dla,binary", [
    (None, None, "trtexec"), ("", None, "trtexec"), ("8.5.2", None, JETSON_TRTEXEC), ("8.5", None, JETSON_TRTEXEC),
    ("10.3.0", None, JETSON_TRTEXEC), ("10.3.1", None, JETSON_TRTEXEC), ("8.6.1", None, "trtexec"),
    ("10.7.0", None, "trtexec"), ("11.4.0", None, "trtexec"), ("10", None, "trtexec"),
    ("10.7.0", 0, JETSON_TRTEXEC), (None, 1, JETSON_TRTEXEC)])
def test_trtexec_binary_is_jetpacks_path_only_on_jetpack_releases_and_the_dla(version, dla, binary):
    plan = make_plan("10.3.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False, dla_core=dla)
    assert trtexec_binary(plan, version) == binary


def test_files_to_copy_are_the_named_files_in_line_order():
    onnx, cache, timing = Path("/a/m.onnx"), Path("/a/c.cache"), Path("/b/t.cache")
    assert files_to_copy(onnx, cache, timing) == [onnx, cache, timing]
    assert files_to_copy(onnx, None, timing) == [onnx, timing]
    assert files_to_copy(onnx, None, None) == [onnx]



# --- make_plan: the whole plan for each TensorRT generation ----------------------------------------------------

def plan_fields(plan):
    return (plan.trt_major, plan.explicit_batch_flag, plan.strongly_typed, plan.fp16_flag, plan.int8_flag,
            plan.use_calibration_cache, plan.obey_precision_constraints, plan.needs_fp16_onnx, plan.dla_core,
            plan.layer_precisions, plan.version_compatible)


@pytest.mark.parametrize("version,options,expected", [
    # (major, explicit batch, strongly typed, FP16, INT8, cache, obey, FP16 ONNX, DLA, pins, version compatible)
    ("8.5.0", dict(fp16=True), (8, True, False, True, False, False, False, False, None, {}, False)),
    ("8.5.2", dict(int8=True, has_cache=True), (8, True, False, True, True, True, False, False, None, {}, False)),
    ("8.5.2", dict(int8=True, has_cache=True, float_layers=True),
     (8, True, False, True, True, True, True, False, None, {}, False)),
    ("8.6.1", dict(fp16=True, version_compatible=True), (8, True, False, True, False, False, False, False, None, {},
                                                         True)),
    ("10.3.0", dict(int8=True, onnx_is_qdq=True, float_layers=True),
     (10, False, False, True, True, False, False, False, None, {}, False)),
    ("10.3.0", dict(onnx_is_qdq=True, dla_core=1), (10, False, False, False, False, False, False, False, 1, {}, False)),
    ("10", dict(), (10, False, False, False, False, False, False, False, None, {}, False)),
    ("9.0.0", dict(fp16=True), (9, True, False, True, False, False, False, False, None, {}, False)),
    ("10.3.0", dict(int8=True, has_cache=True, layer_precisions={"/a": "int8", "/b": "fp16", "/c": "fp32"}),
     (10, False, False, True, True, True, True, False, None, {"/a": "int8", "/b": "fp16", "/c": "fp32"}, False)),
    ("11", dict(fp16=True), (11, False, True, False, False, False, False, True, None, {}, False)),
    ("11.4.0", dict(int8=True, onnx_is_qdq=True, dla_core=0, version_compatible=True),
     (11, False, True, False, False, False, False, False, 0, {}, True)),
    ("11.4.0", dict(onnx_is_qdq=True), (11, False, True, False, False, False, False, False, None, {}, False)),
    ("11.4.0", dict(), (11, False, True, False, False, False, False, False, None, {}, False)),
])
def test_make_plan_asks_each_generation_for_exactly_this(version, options, expected):
    options = dict(dict(fp16=False, int8=False, onnx_is_qdq=False, has_cache=False), **options)
    assert plan_fields(make_plan(version, **options)) == expected


@pytest.mark.parametrize("version,options,message", [
    ("8.4.3", dict(fp16=True), "TensorRT 8.4.3 is too old; edgeseg supports 8.5 and newer."),
    ("8", dict(fp16=True), "TensorRT 8 is too old; edgeseg supports 8.5 and newer."),
    ("8.5.2", dict(fp16=True, version_compatible=True),
     "--version-compatible engines need TensorRT 8.6 or newer; this is 8.5.2."),
    ("10.3.0", dict(dla_core=0), "The DLA runs only FP16 or INT8; add --fp16 or --int8 to --dla-core."),
    ("11.4.0", dict(int8=True), "TensorRT 11 builds INT8 only from a Q/DQ ONNX; pass the model.int8.onnx written by "
                                "edgeseg calibrate."),
    ("11.4.0", dict(fp16=True, onnx_is_qdq=True),
     "TensorRT 11 takes precision only from the ONNX, and edgeseg's Q/DQ model keeps its float layers in FP32, so "
     "--fp16 cannot apply to an INT8 build there; drop --fp16."),
    ("11.4.0", dict(layer_precisions={"/a": "fp32"}),
     "TensorRT 11 networks are strongly typed, so --layer-precision cannot apply; keep layers in float with edgeseg "
     "calibrate --max-miou-drop, which leaves them unquantized."),
    ("10.3.0", dict(fp16=True, layer_precisions={"/a": "int8"}),
     "--layer-precision /a=int8 needs --int8 too: TensorRT refuses a int8 layer in a build that does not allow int8."),
    ("10.3.0", dict(layer_precisions={"/a": "fp16"}),
     "--layer-precision /a=fp16 needs --fp16 too: TensorRT refuses a fp16 layer in a build that does not allow fp16."),
    ("10.3.0", dict(fp16=True, layer_precisions={"/a": "bf16"}),
     "--layer-precision /a=bf16: the precision must be one of fp32, fp16, int8."),
    ("10.3.0", dict(int8=True), "--int8 needs a calibration cache (model.calib.cache from edgeseg calibrate) or a Q/DQ "
                                "ONNX model."),
])
def test_make_plan_refuses_in_one_exact_sentence(version, options, message):
    options = dict(dict(fp16=False, int8=False, onnx_is_qdq=False, has_cache=False), **options)
    with pytest.raises(ConfigError) as error:
        make_plan(version, **options)
    assert str(error.value) == message


def test_make_plan_accepts_the_boundaries():
    assert make_plan("8.6.0", fp16=True, int8=False, onnx_is_qdq=False, has_cache=False,
                     version_compatible=True).version_compatible
    assert make_plan("10.3.0", fp16=False, int8=True, onnx_is_qdq=True, has_cache=False,
                     layer_precisions={"/a": "fp16"}).layer_precisions == {"/a": "fp16"}
    assert make_plan("10.3.0", fp16=False, int8=False, onnx_is_qdq=False, has_cache=False,
                     layer_precisions={"/a": "fp32"}).obey_precision_constraints
    assert make_plan("10.3.0", fp16=False, int8=False, onnx_is_qdq=True, has_cache=False, dla_core=0).dla_core == 0


# --- int8_uses_cache and the DLA batch ---------------------------------------------------------------------------

@pytest.mark.parametrize("version,source,dla,has_cache,uses", [
    ("8.5.2", "auto", None, True, True), ("8.5.2", "auto", None, False, False), ("8.5.2", "qdq", None, True, False),
    ("9.0.0", "auto", None, True, True), ("10.0.0", "auto", None, True, False), ("10.3.0", "auto", 0, True, True),
    ("10.3.0", "auto", 0, False, False), ("10.3.0", "cache", None, True, True), ("11.4.0", "auto", 0, True, False),
    ("11", "qdq", None, True, False), ("10", "auto", None, True, False)])
def test_int8_uses_cache_per_generation(version, source, dla, has_cache, uses):
    from edgeseg.engine.tensorrt_build import int8_uses_cache

    assert int8_uses_cache(version, int8_source=source, dla_core=dla, has_cache=has_cache) is uses


@pytest.mark.parametrize("version,source,has_cache,message", [
    ("10.3.0", "calib", True, "--int8-source 'calib' is not auto, qdq or cache."),
    ("11.4.0", "cache", True, "TensorRT 11 has no calibration caches (INT8 comes only from Q/DQ nodes); use "
                              "--int8-source qdq or auto."),
    ("10.3.0", "cache", False, "--int8-source cache needs the model.calib.cache that edgeseg calibrate writes; run "
                               "edgeseg calibrate first."),
])
def test_int8_uses_cache_refuses_in_one_exact_sentence(version, source, has_cache, message):
    from edgeseg.engine.tensorrt_build import int8_uses_cache

    with pytest.raises(ConfigError) as error:
        int8_uses_cache(version, int8_source=source, dla_core=None, has_cache=has_cache)
    assert str(error.value) == message


def test_static_dla_batch():
    from edgeseg.engine.tensorrt_build import static_dla_batch

    assert static_dla_batch((1, 4, 8), False) == (1, 1, 1)
    assert static_dla_batch((4, 4, 4), True) == (4, 4, 4)
    for batch in [(1, 4, 4), (4, 4, 8), (2, 4, 8)]:
        with pytest.raises(ConfigError) as error:
            static_dla_batch(batch, True)
        assert str(error.value) == (f"--dla-core needs a static batch (the DLA runs no dynamic shapes); use --shape "
                                    f"{batch[1]}:{batch[1]}:{batch[1]} or build one engine per batch size.")


# --- small pieces: refusals, names, placement, timing cache folder ---------------------------------------------

def test_a_polygraphy_refusal_is_one_sentence_cut_at_400_characters():
    from edgeseg.engine.tensorrt_build import polygraphy_failure

    short = polygraphy_failure(RuntimeError("parse\n  failed\tat node x"), "TensorRT could not build m.onnx")
    assert str(short) == "TensorRT could not build m.onnx: parse failed at node x; see the TensorRT messages above."
    exact = polygraphy_failure(RuntimeError("a" * 400), "W")
    assert str(exact) == "W: " + "a" * 400 + "; see the TensorRT messages above."
    long = polygraphy_failure(RuntimeError("b" * 399 + "cd"), "W")
    assert str(long) == "W: " + "b" * 399 + "c...; see the TensorRT messages above."


def test_without_polygraphy_the_refusal_says_what_to_install(monkeypatch):
    import sys

    from edgeseg.engine.tensorrt_build import polygraphy_trt
    from edgeseg.errors import MissingDependencyError

    import polygraphy.backend.trt as backend

    assert polygraphy_trt() is backend
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", None)  # what an absent package looks like to import
    with pytest.raises(MissingDependencyError) as error:
        polygraphy_trt()
    assert str(error.value) == ("Building or running a TensorRT engine needs NVIDIA's Polygraphy; pip install "
                                "'edgeseg[trt]' (or pip install polygraphy). ONNX files run without it on ONNX "
                                "Runtime.")


def test_default_timing_cache_follows_xdg_and_the_version(monkeypatch, tmp_path):
    from edgeseg.engine.tensorrt_build import default_timing_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_timing_cache("10.3.0") == tmp_path / "xdg" / "edgeseg" / "tensorrt" / "timing-10.3.0.cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_timing_cache("8.5.2") == tmp_path / "home" / ".cache" / "edgeseg" / "tensorrt" / \
        "timing-8.5.2.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: the spec says use the default
    assert default_timing_cache("8.5.2").parent == tmp_path / "home" / ".cache" / "edgeseg" / "tensorrt"


class Layer:
    def __init__(self, name, metadata=None):
        self.name = name
        if metadata is not None:
            self.metadata = metadata


@pytest.mark.parametrize("layer,node", [
    (Layer("conv_3", "[ONNX Layer: /enc/Conv]"), "/enc/Conv"),
    (Layer("x", "[ONNX Layer: /enc/Conv | /enc/Relu]"), "/enc/Conv"),
    (Layer("x", "[ONNX Layer: a|b]"), "a|b"),
    (Layer("/enc/Conv_7"), "/enc/Conv_7"), (Layer("y", ""), "y"), (Layer("y", None), "y"),
    (Layer("z", "[ONNX Layer: /a] trailing"), "z"), (Layer("w", "prefix [ONNX Layer: /a]"), "w")])
def test_onnx_node_of_reads_the_parser_metadata_or_the_name(layer, node):
    from edgeseg.engine.tensorrt_build import onnx_node_of

    assert onnx_node_of(layer) == node


def test_layers_of_nodes_gives_name_n_to_name_unless_it_is_a_node_of_its_own():
    from types import SimpleNamespace

    from edgeseg.engine.tensorrt_build import layers_of_nodes

    layers = [Layer("/a"), Layer("/a_1"), Layer("/a_x"), Layer("/b_2"), Layer("/b"), Layer("/c_3"), Layer("/g_h_4"),
              Layer("m", "[ONNX Layer: /d]"), Layer("/d_4", "[ONNX Layer: /e]"), Layer("_5")]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    found = layers_of_nodes(network, ["/a", "/b", "/c", "/d", "/e", "/f", "", "/g_h"], onnx_nodes={"/b_2", "/c"})
    assert {k: [layer.name for layer in v] for k, v in found.items()} == {
        "/a": ["/a", "/a_1"], "/b": ["/b"], "/c": ["/c_3"], "/d": ["m"], "/e": ["/d_4"], "/f": [], "": ["_5"],
        "/g_h": ["/g_h_4"]}


def test_layer_placement_without_a_summary_says_it_does_not_know():
    from edgeseg.engine.tensorrt_build import layer_placement

    assert layer_placement(["[I] building", "", "[DlaLayer] x"], ["l1", "l2"]) == {
        "source": "unknown (TensorRT logged no placement summary)", "dla_layers": [], "gpu_layers": [],
        "engine_layers": ["l1", "l2"]}
    placement = layer_placement(["  ---------- Layers Running on GPU ----------  ", "", "  [GpuLayer] CONV: c1  ",
                                 "[GpuLayer] RESIZE: r", "Total Activation Memory: 1, Weights: 2", "[GpuLayer] late",
                                 "---- layers running on dla:", "{a, b}, {c}", "d"], ())
    assert placement == {"source": "TensorRT build log", "dla_layers": ["{a, b}", "{c}"],
                         "gpu_layers": ["CONV: c1", "RESIZE: r"], "engine_layers": []}
    # an older release's summary ends at the next logged line, whatever its tag
    old = layer_placement(["--- Layers running on DLA:", "[I] [TRT] next", "x, y"], None)
    assert old == {"source": "unknown (TensorRT logged no placement summary)", "dla_layers": [], "gpu_layers": [],
                   "engine_layers": None}
    dla_only = layer_placement(["--- Layers Running on DLA ---", "[DlaLayer] {ForeignNode[a...z]}"], ["a"])
    assert dla_only["source"] == "TensorRT build log" and dla_only["dla_layers"] == ["{ForeignNode[a...z]}"]


@pytest.mark.parametrize("dla,gpu,said", [
    ([], [], "[yellow]TensorRT did not report where the layers run; check the build log[/yellow]"),
    ([], ["g"], "[yellow]No layer runs on the DLA: the whole engine fell back to the GPU[/yellow]"),
    (["d1", "d2"], ["g"], "DLA runs 2 subgraph(s); 1 layer(s) run on the GPU"),
    (["d1"], [], "DLA runs 1 subgraph(s); 0 layer(s) run on the GPU")])
def test_the_placement_summary_said(monkeypatch, dla, gpu, said):
    from edgeseg.engine import tensorrt_build

    told = []
    monkeypatch.setattr(tensorrt_build, "say", told.append)
    tensorrt_build._say_placement({"dla_layers": dla, "gpu_layers": gpu})
    assert told == [said]


def test_engine_layers_from_the_inspector_or_none():
    from types import SimpleNamespace

    from edgeseg.engine.tensorrt_build import _engine_layers

    trt = SimpleNamespace(LayerInformationFormat=SimpleNamespace(JSON="json"))

    def engine(text, fmt_seen=None):
        def info(fmt):
            assert fmt == "json"
            return text
        return SimpleNamespace(create_engine_inspector=lambda: SimpleNamespace(get_engine_information=info))

    assert _engine_layers(trt, engine('{"Layers": [{"Name": "a"}, {"LayerType": "x"}, "b c"]}')) == ["a", "", "b c"]
    assert _engine_layers(trt, engine('{"Other": 1}')) == []
    assert _engine_layers(trt, engine("not json")) is None
    assert _engine_layers(trt, engine("[1, 2]")) is None
    assert _engine_layers(trt, SimpleNamespace(create_engine_inspector=lambda: None)) is None


# --- whole builds through Polygraphy on a hand-made ONNX (no training): what TensorRT was configured with ------

def tiny_model(folder: Path, batch="n") -> Path:
    """input -> /enc/Conv -> /enc/Relu -> /up/Resize (x2) -> /head/Conv -> logits: 3x8x12 in, 2x16x24 out."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
               numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2"),
               numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="/enc/Conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="/enc/Relu"),
         helper.make_node("Resize", ["r1", "", "scales"], ["up"], name="/up/Resize", mode="nearest"),
         helper.make_node("Conv", ["up", "w2"], ["logits"], name="/head/Conv")],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2, 16, 24])], weights)
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def build_tiny(folder, **options):
    from edgeseg.engine.tensorrt_build import build_engine_file

    defaults = dict(fp16=False, int8=False, onnx_is_qdq=False, calibration_cache=None, input_shape=(3, 8, 12),
                    max_batch=4, workspace_mb=96)
    defaults.update(options)
    return build_engine_file(tiny_model(folder), folder / "tiny.engine", **defaults)


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0", "11.4.0"])
def test_an_fp32_build_records_exactly_what_tensorrt_was_asked(tmp_path, monkeypatch, version):
    from tests import trt_double

    trt = trt_double.install(monkeypatch, version)
    meta = build_tiny(tmp_path, min_batch=1, opt_batch=2, max_batch=4)
    record = trt.engine_record(tmp_path / "tiny.engine")
    assert record["flags"] == ["TF32"] and record["strongly_typed"] is (version == "11.4.0")
    assert record["profiles"] == [{"input": [[1, 3, 8, 12], [2, 3, 8, 12], [4, 3, 8, 12]]}]
    assert record["workspace"] == 96 * 1024 * 1024 and record["calibration"] is None and record["pinned"] == {}
    assert record["dla_core"] is None and record["version_compatible"] is False
    assert meta["tensorrt"] == version and meta["built_with"].startswith("polygraphy ")
    assert meta["built_with"] != "polygraphy unknown"
    assert meta["batch"] == {"min": 1, "opt": 2, "max": 4} and meta["max_batch"] == 4 and meta["workspace_mb"] == 96
    assert meta["float_layers"] == [] and meta["layer_precisions"] == {} and meta["dla"] is None
    assert meta["timing_cache"] is None and meta["gpu"] == {"name": "Orin", "compute_capability": "8.7"}
    assert set(meta) == {"tensorrt", "built_with", "plan", "batch", "max_batch", "workspace_mb", "float_layers",
                         "layer_precisions", "dla", "timing_cache", "io", "gpu"}
    assert meta["io"] == [{"name": "input", "mode": "input", "dtype": "FLOAT", "shape": [-1, 3, 8, 12]},
                          {"name": "logits", "mode": "output", "dtype": "FLOAT", "shape": [-1]}]
    assert meta["plan"] == {k: v for k, v in make_plan(version, fp16=False, int8=False, onnx_is_qdq=False,
                                                       has_cache=False).__dict__.items()}


def test_implicit_int8_on_8_5_pins_the_float_layers_and_reads_the_cache_headed_for_it(tmp_path, monkeypatch):
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "8.5.2")
    cache = tmp_path / "tiny.calib.cache"
    text = "TRT-100300-MinMaxCalibration\ninput: 3c010204\nc1: 3d010204\n"
    cache.write_text(text)
    meta = build_tiny(tmp_path, int8=True, calibration_cache=cache, float_layers=["/head/Conv"],
                      layer_precisions={"/up/Resize": "fp16"})
    record = trt.engine_record(tmp_path / "tiny.engine")
    assert record["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "TF32"]
    assert record["calibration"] == {"calibrator": "EntropyCalibration2",
                                     "cache_header": "TRT-8502-EntropyCalibration2",
                                     "profile": {"input": [[1, 3, 8, 12], [1, 3, 8, 12], [4, 3, 8, 12]]}}
    # each node is two layers in the double (NAME, NAME_<n>); both are pinned, to the precision asked
    assert record["pinned"] == {"/head/Conv": "FLOAT", "/head/Conv_3": "FLOAT", "/up/Resize": "HALF",
                                "/up/Resize_2": "HALF"}
    assert meta["layer_precisions"] == {"/head/Conv": "fp32", "/up/Resize": "fp16"}
    assert meta["float_layers"] == ["/head/Conv"]
    assert cache.read_text() == text  # the user's cache is left as it was


def test_the_pins_set_the_output_types_too(tmp_path, monkeypatch):
    """trtexec's --layerPrecisions with --layerOutputTypes: every output of a pinned layer gets the type."""
    from edgeseg.engine.tensorrt_build import _pin_layer_precisions
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    network = trt.Builder(None).create_network(0)
    assert trt.OnnxParser(network, None).parse_from_file(str(tiny_model(tmp_path)))
    names = {"/enc/Conv", "/enc/Relu", "/up/Resize", "/head/Conv"}
    _pin_layer_precisions(trt, network, {"/enc/Conv": "int8", "/up/Resize": "fp16", "/head/Conv": "fp32"}, names,
                          required={"/head/Conv"})
    got = {layer.name: (layer._precision, layer.output_types) for layer in network.layers}
    assert got == {"/enc/Conv": (trt.int8, {0: trt.int8}), "/enc/Conv_0": (trt.int8, {0: trt.int8}),
                   "/enc/Relu": (None, {}), "/enc/Relu_1": (None, {}),
                   "/up/Resize": (trt.float16, {0: trt.float16}), "/up/Resize_2": (trt.float16, {0: trt.float16}),
                   "/head/Conv": (trt.float32, {0: trt.float32}), "/head/Conv_3": (trt.float32, {0: trt.float32})}
    with pytest.raises(ConfigError) as error:
        _pin_layer_precisions(trt, network, dict.fromkeys(["/z", "/y", "/enc/Relu"], "fp32"), names,
                              required={"/z", "/y"})
    assert str(error.value) == ("--layer-precision names layers the network does not have: /y, /z; use ONNX node names "
                                "(edgeseg calibrate's sensitivity list prints them).")


def test_a_dla_build_on_core_1_reports_what_the_dla_cannot_run(tmp_path, monkeypatch):
    from edgeseg.engine import tensorrt_build
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0", dla_cores=2)
    told = []
    monkeypatch.setattr(tensorrt_build, "say", told.append)
    meta = build_tiny(tmp_path, fp16=True, dla_core=1, min_batch=2, opt_batch=2, max_batch=2)
    record = trt.engine_record(tmp_path / "tiny.engine")
    # Polygraphy's CreateConfig(use_dla=True) also prefers precision constraints, as trtexec --useDLACore does
    assert record["dla_core"] == 1
    assert record["flags"] == ["FP16", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS", "TF32"]
    assert record["profiles"] == [{"input": [[2, 3, 8, 12]] * 3}]
    dla = meta["dla"]
    assert set(dla) == {"core", "layers_dla_cannot_run", "placement"}
    assert dla["core"] == 1 and dla["layers_dla_cannot_run"] == ["/up/Resize", "/up/Resize_2"]
    assert dla["placement"]["engine_layers"] == record["layers"]
    assert dla["placement"]["dla_layers"] == ["{ForeignNode[/enc/Conv.../head/Conv_3]}"]
    assert told == ["[yellow]2 of 8 layers cannot run on DLA and fall back to the GPU: /up/Resize, /up/Resize_2"
                    "[/yellow]", "DLA runs 1 subgraph(s); 3 layer(s) run on the GPU"]
    for cores, core, message in [(2, 2, "--dla-core 2: this device has 2 DLA core(s) (0 to 1); pick one of them."),
                                 (2, -1, "--dla-core -1: this device has 2 DLA core(s) (0 to 1); pick one of them."),
                                 (0, 0, "--dla-core 0: this device has 0 DLA core(s); drop --dla-core.")]:
        trt_double.install(monkeypatch, "10.3.0", dla_cores=cores)
        with pytest.raises(ConfigError) as error:
            build_tiny(tmp_path, fp16=True, dla_core=core, max_batch=1)
        assert str(error.value) == message


def test_a_dla_build_with_a_dynamic_batch_is_refused_before_tensorrt(tmp_path, monkeypatch):
    from tests import trt_double

    trt_double.install(monkeypatch, "10.3.0")
    for low, opt, high in [(1, 1, 2), (1, 2, 2), (2, 1, 2)]:
        with pytest.raises(ConfigError) as error:
            build_tiny(tmp_path, fp16=True, dla_core=0, min_batch=low, opt_batch=opt, max_batch=high)
        assert str(error.value) == "--dla-core needs a static batch (MIN = OPT = MAX); the DLA runs no dynamic shapes."
    assert not (tmp_path / "tiny.engine").exists()


def test_a_version_compatible_build_and_a_timing_cache(tmp_path, monkeypatch):
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    timing = tmp_path / "deep" / "er" / "t.cache"
    meta = build_tiny(tmp_path, fp16=True, version_compatible=True, timing_cache=timing)
    record = trt.engine_record(tmp_path / "tiny.engine")
    assert record["version_compatible"] is True and record["flags"] == ["FP16", "TF32", "VERSION_COMPATIBLE"]
    assert meta["timing_cache"] == {"path": str(timing), "reused": False}
    assert timing.read_bytes() == b"FAKECACHE:Orin-8.7"
    assert build_tiny(tmp_path, fp16=True, timing_cache=timing)["timing_cache"] == {"path": str(timing),
                                                                                     "reused": True}


def test_a_model_with_two_inputs_is_refused_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.engine.tensorrt_build import onnx_input_name

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add"), helper.make_node("Add", ["c", "k"], ["d"], name="k")],
        "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("a", "b", "k")],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [1])], [numpy_helper.from_array(
            __import__("numpy").ones(1, "float32"), "k")])
    onnx.save(helper.make_model(graph), str(tmp_path / "two.onnx"))
    with pytest.raises(ConfigError) as error:
        onnx_input_name(tmp_path / "two.onnx")
    assert str(error.value) == "two.onnx has 2 inputs (a, b); edgeseg builds engines for models with one image input."
    assert onnx_input_name(tiny_model(tmp_path)) == "input"


def test_qdq_int8_pins_nothing_and_implicit_int8_obeys_its_float_layers(tmp_path, monkeypatch):
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    meta = build_tiny(tmp_path, int8=True, onnx_is_qdq=True, float_layers=["/head/Conv"])
    record = trt.engine_record(tmp_path / "tiny.engine")
    # a Q/DQ model says itself which layers are INT8: the float layers are not pinned over it
    assert record["flags"] == ["FP16", "INT8", "TF32"] and record["pinned"] == {} and record["calibration"] is None
    assert meta["layer_precisions"] == {} and meta["plan"]["use_calibration_cache"] is False
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    build_tiny(tmp_path, int8=True, calibration_cache=cache, float_layers=["/head/Conv"])
    record = trt.engine_record(tmp_path / "tiny.engine")
    assert record["flags"] == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "TF32"]
    assert record["pinned"] == {"/head/Conv": "FLOAT", "/head/Conv_3": "FLOAT"}
    assert record["calibration"]["cache_header"] == "TRT-100300-EntropyCalibration2"


def test_a_build_leaves_no_scratch_folder_and_no_stray_timing_cache(tmp_path, monkeypatch):
    import tempfile

    from tests import trt_double

    trt_double.install(monkeypatch, "8.5.2")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    build_tiny(tmp_path, int8=True, calibration_cache=cache)
    assert list(scratch.iterdir()) == [] and list(work.iterdir()) == []


def test_a_layer_the_user_named_must_exist(tmp_path, monkeypatch):
    from tests import trt_double

    trt_double.install(monkeypatch, "10.3.0")
    with pytest.raises(ConfigError) as error:
        build_tiny(tmp_path, fp16=True, layer_precisions={"/no/such": "fp32", "/head/Conv": "fp16"})
    assert str(error.value) == ("--layer-precision names layers the network does not have: /no/such; use ONNX node "
                                "names (edgeseg calibrate's sensitivity list prints them).")


def test_tensorrt_sees_detailed_profiling_and_the_dla_core_0(tmp_path, monkeypatch):
    """DETAILED profiling lets the engine inspector name each layer; core 0 is a core like any other."""
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    seen = []
    original = trt.Builder.build_serialized_network

    def spy(self, network, config):
        seen.append((config.profiling_verbosity, config.DLA_core))
        return original(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", spy)
    meta = build_tiny(tmp_path, fp16=True, dla_core=0, max_batch=1)
    assert seen == [(trt.ProfilingVerbosity.DETAILED, 0)] and meta["dla"]["core"] == 0


def test_a_failed_build_and_an_engine_that_does_not_load_are_one_sentence(tmp_path, monkeypatch):
    import re

    from edgeseg.errors import EdgesegError
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(EdgesegError) as error:
        build_tiny(tmp_path, fp16=True)
    found = re.fullmatch(r"TensorRT could not parse or build tiny\.onnx: (.+); see the TensorRT messages above\.",
                         str(error.value))
    assert found and found.group(1) != "None" and "engine" in found.group(1).lower()
    trt = trt_double.install(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, data: None)
    with pytest.raises(EdgesegError) as error:
        build_tiny(tmp_path, fp16=True)
    assert str(error.value) == ("TensorRT built an engine from tiny.onnx but could not load it back; see the TensorRT "
                                "messages above.")


def test_polygraphy_without_a_version_is_recorded_as_unknown(monkeypatch):
    import polygraphy

    from edgeseg.engine.tensorrt_build import _polygraphy_version

    assert _polygraphy_version() == polygraphy.__version__
    monkeypatch.delattr(polygraphy, "__version__")
    assert _polygraphy_version() == "unknown"


def test_an_onnx_with_external_weights_is_read_without_them(tmp_path):
    """Naming the input and the nodes needs the graph, not the weights (which may be gigabytes, or elsewhere)."""
    import onnx

    from edgeseg.engine.tensorrt_build import onnx_input_name, onnx_node_names

    model = onnx.load(str(tiny_model(tmp_path)))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    assert onnx_input_name(tmp_path / "ext.onnx") == "input"
    assert onnx_node_names(tmp_path / "ext.onnx") == {"/enc/Conv", "/enc/Relu", "/up/Resize", "/head/Conv"}


def test_a_model_with_five_inputs_names_four(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.engine.tensorrt_build import onnx_input_name

    names = ["a", "b", "c", "d", "e"]
    graph = helper.make_graph([helper.make_node("Sum", names, ["s"], name="sum")], "five",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in names],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "five.onnx"))
    with pytest.raises(ConfigError) as error:
        onnx_input_name(tmp_path / "five.onnx")
    assert str(error.value) == ("five.onnx has 5 inputs (a, b, c, d); edgeseg builds engines for models with one "
                                "image input.")


def test_timing_cache_fits_reuses_its_own_and_moves_aside_the_rest(tmp_path, monkeypatch):
    from edgeseg.engine import tensorrt_build
    from tests import trt_double

    trt_double.install(monkeypatch, "10.3.0")
    told = []
    monkeypatch.setattr(tensorrt_build, "say", told.append)
    fits = tensorrt_build._timing_cache_fits
    assert fits(None) is False and fits(tmp_path / "missing.cache") is False and told == []
    own = tmp_path / "own.cache"
    own.write_bytes(b"FAKECACHE:Orin-8.7")
    assert fits(own) is True and own.read_bytes() == b"FAKECACHE:Orin-8.7"
    assert told == [f"Reusing the timing cache {own}"]
    for name, data in [("foreign.cache", b"FAKECACHE:Xavier-7.2"), ("garbage.cache", b"not a timing cache")]:
        told.clear()
        path = tmp_path / name
        path.write_bytes(data)
        assert fits(path) is False and not path.exists()
        assert (tmp_path / f"{name}.stale").read_bytes() == data
        assert told == [f"[yellow]{path} was written by another GPU or TensorRT (kept as {name}.stale); building "
                        f"with a fresh timing cache[/yellow]"]


def test_build_log_keeps_info_lines_and_passes_every_line_on(monkeypatch):
    from polygraphy.backend.trt import util as trt_util

    from edgeseg.engine.tensorrt_build import BuildLog
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    logger = trt_util.get_trt_logger()
    passed = []

    def recorder(self, severity, msg):
        passed.append((self, severity, msg))

    monkeypatch.setattr(type(logger), "log", recorder)
    with BuildLog() as log:
        logger.log(trt.ILogger.Severity.INFO, "placement")
        logger.log(trt.ILogger.Severity.WARNING, "careful")
    assert log.info == ["placement"]
    assert passed == [(logger, trt.ILogger.Severity.INFO, "placement"),
                      (logger, trt.ILogger.Severity.WARNING, "careful")]
    assert type(logger).log is recorder


class FakeTensor:
    def __init__(self, dtype, execution=True):
        self.dtype, self.is_execution_tensor = dtype, execution


class FakeLayer:
    def __init__(self, trt, name, layer_type, dtypes, execution=True):
        self.name, self.type, self.precision, self.types = name, layer_type, None, {}
        self.outputs = [FakeTensor(getattr(trt, d), execution) for d in dtypes]
        self.num_outputs = len(self.outputs)

    def get_output(self, index):
        return self.outputs[index]

    def set_output_type(self, index, dtype):
        self.types[index] = dtype


def test_pinning_skips_each_layer_that_cannot_take_a_float_type_and_pins_the_rest(monkeypatch):
    from types import SimpleNamespace

    from edgeseg.engine.tensorrt_build import _pin_layer_precisions
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "8.5.2")
    kinds = trt.LayerType
    layers = [FakeLayer(trt, "n", kinds.SHAPE, ["float32"]),
              FakeLayer(trt, "n_1", kinds.CONVOLUTION, ["float32", "float16"]),
              FakeLayer(trt, "n_2", kinds.CONSTANT, ["float32"]), FakeLayer(trt, "n_3", kinds.ELEMENTWISE, ["int32"]),
              FakeLayer(trt, "n_4", kinds.ELEMENTWISE, ["float32"], execution=False),
              FakeLayer(trt, "n_5", kinds.ELEMENTWISE, ["float16", "int8"]),
              FakeLayer(trt, "n_6", kinds.ELEMENTWISE, ["float32"]),
              FakeLayer(trt, "m", kinds.ELEMENTWISE, ["float32"])]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    # "n_6" is a node of its own: its layer is not one of n's
    _pin_layer_precisions(trt, network, {"n": "fp16"}, {"n", "n_6", "m"})
    assert {layer.name: (layer.precision, layer.types) for layer in layers if layer.precision} == {
        "n_1": (trt.float16, {0: trt.float16, 1: trt.float16})}
    missing = [f"/m{i}" for i in range(6)]
    with pytest.raises(ConfigError) as error:
        _pin_layer_precisions(trt, network, dict.fromkeys(missing, "fp32"), set(), required=missing)
    assert str(error.value).startswith("--layer-precision names layers the network does not have: /m0, /m1, /m2, "
                                       "/m3, /m4; use ONNX")


@pytest.mark.parametrize("count,listed", [(8, 8), (9, 8)])
def test_use_dla_core_lists_at_most_eight_layers_it_cannot_run(monkeypatch, count, listed):
    from types import SimpleNamespace

    from edgeseg.engine import tensorrt_build

    told = []
    monkeypatch.setattr(tensorrt_build, "say", told.append)
    layers = [SimpleNamespace(name=f"r{i}") for i in range(count)] + [SimpleNamespace(name="conv")]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    config = SimpleNamespace(DLA_core=-1, can_run_on_DLA=lambda layer: layer.name == "conv")
    got = tensorrt_build._use_dla_core(None, SimpleNamespace(num_DLA_cores=2), config, network, 0)
    assert got == {"core": 0, "layers_dla_cannot_run": [f"r{i}" for i in range(count)]} and config.DLA_core == 0
    names = ", ".join(f"r{i}" for i in range(listed))
    assert told == [f"[yellow]{count} of {count + 1} layers cannot run on DLA and fall back to the GPU: {names}"
                    f"{' ...' if count > 8 else ''}[/yellow]"]


def test_a_reused_timing_cache_is_the_one_tensorrt_loads(tmp_path, monkeypatch):
    """Polygraphy hands TensorRT the file's bytes only when edgeseg asks it to load the cache; else an empty one."""
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    loaded = []
    original = trt.Builder.create_builder_config

    def spy_config(self):
        config = original(self)
        create = config.create_timing_cache

        class Spy:  # the double's config has __slots__: wrap the one method Polygraphy calls to load
            def __getattr__(self, name):
                return getattr(config, name)

            def __setattr__(self, name, value):
                setattr(config, name, value)

            def create_timing_cache(self, data):
                loaded.append(bytes(data))
                return create(data)

        return Spy()

    monkeypatch.chdir(tmp_path)  # a path that is not the cache (e.g. "None") names no file here
    timing = tmp_path / "t.cache"
    build_tiny(tmp_path, fp16=True, timing_cache=timing)  # first build: nothing to load
    monkeypatch.setattr(trt.Builder, "create_builder_config", spy_config)
    build_tiny(tmp_path, fp16=True, timing_cache=timing)
    # the probe that checks the file reads it, the build loads it, and Polygraphy merges it when saving the new one
    assert loaded == [b"FAKECACHE:Orin-8.7"] * 3
    loaded.clear()
    build_tiny(tmp_path, fp16=True)
    assert loaded == [b""]  # no cache asked for: TensorRT starts from an empty one
    loaded.clear()
    timing.write_bytes(b"FAKECACHE:Xavier-7.2")
    build_tiny(tmp_path, fp16=True, timing_cache=timing)
    assert loaded == [b"FAKECACHE:Xavier-7.2", b""]  # probed, moved aside, never loaded


def test_tensorrt_objects_get_a_logger(tmp_path, monkeypatch):
    """trt.Runtime and trt.Builder take an ILogger (TensorRT's bindings refuse None)."""
    from tests import trt_double

    trt = trt_double.install(monkeypatch, "10.3.0")
    given = []
    runtime, builder = trt.Runtime, trt.Builder

    def strict(cls):
        class Strict(cls):
            __slots__ = ()

            def __init__(self, logger):
                given.append((cls.__name__, type(logger).__name__, getattr(logger, "min_severity", None)))
                super().__init__(logger)
        return Strict

    monkeypatch.setattr(trt, "Runtime", strict(runtime))
    monkeypatch.setattr(trt, "Builder", strict(builder))
    timing = tmp_path / "t.cache"
    timing.write_bytes(b"FAKECACHE:Orin-8.7")
    build_tiny(tmp_path, fp16=True, timing_cache=timing)
    assert ("Runtime", "Logger", trt.Logger.WARNING) in given and ("Builder", "Logger", trt.Logger.ERROR) in given
