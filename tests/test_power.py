from pathlib import Path

import pytest

from edgeseg.benchmark.power import parse_tegrastats_line, summarize_power

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tegrastats"

# lines written here in each board's format (the shared folder's samples are checked below when present)
XAVIER = ("RAM 4390/31920MB (lfb 6102x4MB) SWAP 0/15960MB (cached 0MB) CPU [31%@2265,27%@2265] EMC_FREQ 39%@2133 "
          "GR3D_FREQ 99%@1377 NVDEC off APE 150 GPU@42C VDD_IN 20000mW/14000mW VDD_CPU_GPU_CV 12000mW/6000mW "
          "VDD_SOC 4000mW/3000mW")
ORIN = ("11-20-2026 10:15:02 RAM 6480/62841MB (lfb 9790x4MB) SWAP 0/31421MB (cached 0MB) CPU [35%@2201] "
        "GR3D_FREQ 97%@[1300,1300] gpu@47.3C VDD_GPU_SOC 17000mW/10000mW VDD_CPU_CV 2000mW/1500mW "
        "VIN_SYS_5V0 5000mW/4000mW")
NANO = "RAM 1902/3964MB (lfb 181x4MB) CPU [41%@1479] GR3D_FREQ 99% GPU@26C POM_5V_IN 6841/4693 POM_5V_GPU 3219/1609"


def test_xavier_total_is_the_input_rail():
    sample = parse_tegrastats_line(XAVIER)
    assert sample.total_mw == 20000 and sample.gpu_util == 99
    assert sample.rails_mw == {"VDD_IN": 20000, "VDD_CPU_GPU_CV": 12000, "VDD_SOC": 4000}


def test_orin_total_is_the_sum_of_rails_and_memory_is_not_a_rail():
    sample = parse_tegrastats_line(ORIN)
    assert sample.total_mw == 24000 and "RAM" not in sample.rails_mw and "SWAP" not in sample.rails_mw


def test_legacy_rails_without_units():
    sample = parse_tegrastats_line(NANO)
    assert sample.total_mw == 6841 and sample.rails_mw["POM_5V_GPU"] == 3219


def test_lines_without_rails_are_skipped():
    assert parse_tegrastats_line("RAM 1/2MB CPU [1%@100]") is None


def test_energy_per_frame():
    samples = [parse_tegrastats_line(XAVIER)] * 4
    summary = summarize_power(samples, frames=100, seconds=2.0)
    assert summary.average_w == 20.0 and summary.energy_per_frame_mj == pytest.approx(400.0)


@pytest.mark.parametrize("name", ["agx_orin_jp6.txt", "agx_xavier_jp5.txt", "nano_legacy.txt"])
def test_real_sample_files_parse(name):
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"tegrastats samples are not at {SHARED}")
    samples = [parse_tegrastats_line(line) for line in path.read_text().splitlines() if line.strip()]
    assert samples and all(s is not None and s.total_mw > 0 for s in samples)
