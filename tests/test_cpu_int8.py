"""ONNX Runtime's fused INT8 kernels saturate on x86 without VNNI: edgeseg says so for --quantize-outputs."""
import pytest

from edgeseg.quant import cpu_int8

EPYC_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_1 sse4_2 avx avx2 fma\n\n" \
            "processor\t: 1\nflags\t\t: fpu sse4_1 avx avx2 fma\n"


def test_the_first_cpus_flags_are_read(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(EPYC_AVX2)
    assert cpu_int8.cpu_flags(cpuinfo) == {"fpu", "sse4_1", "sse4_2", "avx", "avx2", "fma"}
    assert cpu_int8.cpu_flags(tmp_path / "absent") is None
    cpuinfo.write_text("processor\t: 0\n")  # no flags line (some ARM kernels): unknown, not "no VNNI"
    assert cpu_int8.cpu_flags(cpuinfo) is None


@pytest.mark.parametrize("flags, machine, saturates", [
    ({"avx2", "fma"}, "x86_64", True),
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", True),  # AVX-512 without its VNNI extension
    ({"avx2", "avx512_vnni"}, "x86_64", False),
    ({"avx2", "avx_vnni"}, "AMD64", False),
    ({"avx2"}, "AMD64", True),  # Windows spells x86-64 so
    ({"sse4_2"}, "i686", True),  # 32-bit x86 builds use the same kernels
    ({"sse4_2"}, "x86", True),
    ({"avx2", "amx_int8"}, "x86_64", False),
    ({"asimd"}, "aarch64", False),  # Jetson, Graviton: other kernels
    (None, "x86_64", False),  # unknown: say nothing rather than something wrong
])
def test_which_cpus_saturate(flags, machine, saturates):
    assert cpu_int8.saturating_kernels(flags, machine) is saturates
    if flags is not None:
        warning = cpu_int8.outputs_layout_warning(flags, machine)
        assert (warning is not None) is saturates
        if saturates:  # the sentence says what is wrong, where it is not, and what to do
            assert warning == (
                "This CPU has no VNNI (AVX512-VNNI, AVX-VNNI or AMX): ONNX Runtime runs a --quantize-outputs model "
                "through integer kernels whose int16 sums saturate here, which can cost several mIoU points that "
                "the same model keeps on a VNNI CPU, ARM or a GPU; measure it with edgeseg eval on the CPU you "
                "deploy to, or keep the default layout (Q/DQ on op inputs), which ONNX Runtime runs mostly as "
                "float convolutions.")


def test_calibrate_with_quantize_outputs_warns_on_such_a_cpu_only(tiny_onnx, tiny_data, tmp_path, monkeypatch,
                                                                  capsys):
    from edgeseg.quant.api import calibrate

    images, model = tiny_data / "train" / "images", tiny_onnx
    monkeypatch.setattr(cpu_int8.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_int8, "cpu_flags", lambda cpuinfo=None: {"avx2"})
    calibrate(str(model), str(images), str(tmp_path / "o.int8.onnx"), num=2,
              method="minmax", bias_correction=False, quantize_outputs=True)
    said = " ".join(capsys.readouterr().err.split())
    assert "This CPU has no VNNI (AVX512-VNNI, AVX-VNNI or AMX)" in said and "keep the default layout (Q/DQ on op inputs)" in said
    calibrate(str(model), str(images), str(tmp_path / "i.int8.onnx"), num=2,
              method="minmax", bias_correction=False)
    assert "VNNI" not in capsys.readouterr().err  # the default layout runs as float convolutions: nothing to say
    monkeypatch.setattr(cpu_int8, "cpu_flags", lambda cpuinfo=None: {"avx2", "avx512_vnni"})
    calibrate(str(model), str(images), str(tmp_path / "v.int8.onnx"), num=2,
              method="minmax", bias_correction=False, quantize_outputs=True)
    assert "VNNI" not in capsys.readouterr().err
