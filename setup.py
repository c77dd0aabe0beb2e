"""Build sedd_kernels._C from csrc/ with torch.utils.cpp_extension.

Environment variables (all optional):
  SEDD_KERNELS_CUDA      auto (default) | 1 | 0. auto builds the CUDA kernels when torch is a
                         CUDA build and the CUDA toolkit (nvcc) is found; 1 requires them (a clear
                         error if impossible); 0 builds the CPU kernels only.
  SEDD_KERNELS_CPU_ARCH  native (default: AVX2/AVX-512 as this machine has them) | portable (the
                         compiler's baseline, e.g. x86-64 SSE2) | any value for -march=...
  CUDA_HOME              the toolkit folder holding bin/nvcc and lib64/libcudart.so; found from
                         nvcc when unset (also when the nvcc on PATH is a wrapper script).
  TORCH_CUDA_ARCH_LIST   GPU architectures; default: those of the visible GPUs, else "8.0;9.0+PTX".
  MAX_JOBS               parallel compile jobs (ninja).

Install without build isolation so the extension is compiled against the torch you run:
    pip install --no-build-isolation -e .
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _fail(msg):
    sys.stderr.write(f"\nsedd-kernels build error: {msg}\n\n")
    raise SystemExit(1)


def _has_cudart(home):
    return bool(home) and os.path.exists(os.path.join(home, "bin", "nvcc")) and bool(
        glob.glob(os.path.join(home, "lib64", "libcudart.so*"))
        or glob.glob(os.path.join(home, "lib", "libcudart.so*"))
        or glob.glob(os.path.join(home, "targets", "*", "lib", "libcudart.so*"))
    )


def find_cuda_home():
    """The CUDA toolkit folder (bin/nvcc + libcudart), or None.

    torch guesses dirname(dirname(which nvcc)); when nvcc on PATH is a wrapper script outside the
    toolkit that guess has no lib64/libcudart and linking fails. Ask nvcc itself instead: its
    --dryrun output names the toolkit folder (TOP=...).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            if not _has_cudart(home):
                _fail(f"{var}={home} does not hold bin/nvcc and lib64/libcudart.so")
            return os.path.realpath(home)
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        real = os.path.realpath(nvcc)
        candidates.append(os.path.dirname(os.path.dirname(real)))
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", "sedd_probe.cu"], capture_output=True, text=True,
                                 timeout=60)
            for m in re.finditer(r"TOP=(\S+)", out.stdout + out.stderr):
                candidates.append(os.path.realpath(m.group(1)))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in candidates:
        if _has_cudart(home):
            return os.path.realpath(home)
    return None


def cpu_arch_flags():
    arch = os.environ.get("SEDD_KERNELS_CPU_ARCH", "native").strip()
    if arch == "portable":
        return []
    return [f"-march={arch}"]


def main():
    import torch  # noqa: F401  (the installed torch: build without isolation)

    mode = os.environ.get("SEDD_KERNELS_CUDA", "auto").strip().lower()
    if mode not in ("auto", "1", "0", "true", "false", "yes", "no"):
        _fail(f"SEDD_KERNELS_CUDA must be auto, 1 or 0, got {mode!r}")
    want = {"auto": None, "1": True, "true": True, "yes": True}.get(mode, False)

    cuda_home = None
    why_not = None
    if want is not False:
        if torch.version.cuda is None:
            why_not = f"the installed torch {torch.__version__} is not a CUDA build"
        else:
            cuda_home = find_cuda_home()
            if cuda_home is None:
                why_not = "no CUDA toolkit found (set CUDA_HOME to the folder with bin/nvcc)"
    if want is True and cuda_home is None:
        _fail(f"SEDD_KERNELS_CUDA=1 but CUDA kernels cannot be built: {why_not}")
    with_cuda = cuda_home is not None
    if with_cuda:
        # Must be set before torch.utils.cpp_extension is imported (it reads CUDA_HOME then).
        os.environ["CUDA_HOME"] = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    print(f"sedd-kernels: building {'CPU + CUDA' if with_cuda else 'CPU'} kernels"
          + (f" (CUDA_HOME={cuda_home})" if with_cuda else f" ({why_not or 'SEDD_KERNELS_CUDA=0'})"))

    from torch.utils import cpp_extension as ce

    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    # -fopenmp: at::parallel_for is an inline OpenMP region; without the flag it runs serially.
    cxx = ["-O3", "-g0", "-fno-math-errno", "-fopenmp"] + cpu_arch_flags()
    link = ["-fopenmp"]
    define = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        define = [("SEDD_WITH_CUDA", None)]
        nvcc = ["-O3", "-Xcompiler", "-g0", "--expt-relaxed-constexpr", "-DSEDD_WITH_CUDA"]
        ext = ce.CUDAExtension("sedd_kernels._C", sources, define_macros=define,
                               include_dirs=[os.path.join(ROOT, "csrc")],
                               extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                               extra_link_args=link)
    else:
        ext = ce.CppExtension("sedd_kernels._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
                              extra_compile_args={"cxx": cxx}, extra_link_args=link)

    setup(
        packages=find_packages(include=["sedd_kernels", "sedd_kernels.*"]) + ["sedd"]
        + ["sedd." + p for p in find_packages(os.path.join(ROOT, "python", "sedd"))],
        package_dir={"sedd": "python/sedd"},
        ext_modules=[ext],
        cmdclass={"build_ext": ce.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
    )


if __name__ == "__main__":
    main()
