"""One decode step of the 8B shape in every weight format, the notebook's beside llama.cpp's,
from one run.

    python -m benchmarks.quantized_decode [--data build/checkpoints] [--kernels native|avx2]
                                          [--formats float32,float32-plain,bfloat16,int8,int4]
                                          [--gguf BF16,Q8_0,Q4_0]

1. Weights: the random 8B of benchmarks/scale.py, in Hugging Face's layout (both layouts are
   written first, 32 GB; the Meta-layout copy is then deleted to leave room for the GGUF
   files, unless --keep-meta).
2. llama.cpp, the engine most readers use, in its own environment under build/llama-cpp:
   llama-cpp-python 0.3.36 from the package registry (built from source, about 5 minutes on
   2 cores), never in the notebook's requirements. Its source distribution carries
   llama.cpp's own `convert_hf_to_gguf.py`, which writes the same 8B as GGUF BF16; llama.cpp's
   quantizer (`llama_model_quantize`) makes Q8_0 and Q4_0 from that (16.1, 8.5, 4.7 GB).
3. The notebook, each format in a fresh process whose anonymous memory is sampled (the
   Jupyter kernel included, and a driver, testbeds/notebook_kernel.py, as light as `make run`'s):
   the whole notebook on the 8B (demos skipped), then benchmarks/kernel_figures.decode_timing:
   the prefill of the 17-token prompt and one decode step, (t(8 tokens) - t(1 token)) / 7,
   best of 2, and the floor in the same kernel (one token through every matrix, nothing else;
   in bfloat16 that is the file's bytes read once). Formats: float32 (its one-row products as
   LLAMA3_ONE_ROW=auto routes them: at the 8B, fused over the file's bf16), float32-plain
   (LLAMA3_ONE_ROW=plain: each weight converted, then multiplied), bfloat16, and int8 and
   int4 (LLAMA3_QUANTIZE) in the dtype `auto` picks here.
4. llama.cpp on the three GGUF files, the same prompt's token ids, 2 threads
   (benchmarks/llama_cpp_step.py): the median decode step.
5. A table, the ratios (notebook step ÷ llama.cpp step: bfloat16 and float32 ÷ BF16 within
   1.2, int8 ÷ Q8_0 and int4 ÷ Q4_0 within 1.5; float32's step ÷ the bf16 floor within 1.2)
   and the memory target (peak anonymous memory at most the quantized matrices as the
   notebook holds them, zero points included, + 1 GB), reported whatever they are.

--kernels avx2 sets ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 for the notebook's
processes: the path of CPUs without AVX-512.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

from benchmarks.common import DATA, header
from benchmarks.scale import make_checkpoint, measure, warm_page_cache
from plumbing import REPO_DIR
from testbeds.notebook_kernel import CANONICAL_TOKENS

LLAMA_CPP_VERSION = "0.3.36"
GGUF_TYPES = {"BF16": None, "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
PAIRS = {"bfloat16": "BF16", "float32": "BF16", "float32-plain": "BF16", "int8": "Q8_0"}
PAIRS["int4"] = "Q4_0"
TARGETS = {"bfloat16": 1.2, "float32": 1.2, "int8": 1.5, "int4": 1.5}
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def llama_cpp_environment(root: Path) -> tuple[Path, Path]:
    """(its python, llama.cpp's source folder), installed once under `root`."""
    python = root / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    ready = subprocess.run([str(python), "-c", "import llama_cpp, torch, sentencepiece"])
    if ready.returncode != 0:
        print(f"installing llama-cpp-python {LLAMA_CPP_VERSION} (builds from source)", flush=True)
        packages = ["torch==2.13.0", "numpy", "sentencepiece", "transformers", "safetensors"]
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *packages, f"llama-cpp-python=={LLAMA_CPP_VERSION}"], check=True)
    source = root / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
    if not (source / "convert_hf_to_gguf.py").exists():
        download = [str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary"]
        download += ["llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", str(root)]
        subprocess.run(download, check=True)
        with tarfile.open(next(root.glob("llama_cpp_python-*.tar.gz"))) as archive:
            archive.extractall(root, filter="data")
    return python, source


def gguf_files(
    hf_folder: Path, root: Path, python: Path, source: Path, kinds=tuple(GGUF_TYPES)
) -> dict[str, Path]:
    """The 8B as GGUF BF16 (llama.cpp's converter), then Q8_0 and Q4_0 (its quantizer)."""
    files = {kind: root / f"8b-{kind.lower()}.gguf" for kind in ["BF16", *kinds]}
    env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
    if not files["BF16"].exists():
        print("converting the 8B to GGUF BF16 with llama.cpp's convert_hf_to_gguf.py", flush=True)
        convert = [str(python), str(source / "convert_hf_to_gguf.py"), str(hf_folder)]
        convert += ["--outtype", "bf16", "--outfile", str(files["BF16"])]
        subprocess.run(convert, check=True, env=env, stdout=subprocess.DEVNULL)
    for kind, ftype in GGUF_TYPES.items():
        if ftype and kind in files and not files[kind].exists():
            print(f"quantizing to {kind} with llama_model_quantize", flush=True)
            code = (
                "import llama_cpp, sys\n"
                "params = llama_cpp.llama_model_quantize_default_params()\n"
                f"params.ftype = llama_cpp.{ftype}\n"
                "params.nthread = 2\n"
                "status = llama_cpp.llama_model_quantize(sys.argv[1].encode(), "
                "sys.argv[2].encode(), params)\n"
                "sys.exit(status)\n"
            )
            subprocess.run(
                [str(python), "-c", code, str(files["BF16"]), str(files[kind])], check=True
            )
    return files


def llama_cpp_step(python: Path, model: Path) -> dict:
    """llama.cpp's median decode step and its prefill ("batched": whether the prompt went in
    as one batch; llama-cpp-python 0.3.36 built natively on an AMX CPU crashed evaluating a
    Q4_0 8B prompt as one, on 2026-12-07, and ran it one token at a time)."""
    warm_file(model)
    script = REPO_DIR / "benchmarks" / "llama_cpp_step.py"
    command = [str(python), str(script), str(model), json.dumps(CANONICAL_TOKENS)]
    batched = True
    try:
        out = measure(command, {})[2]
    except SystemExit as failure:
        said = str(failure).splitlines()[0][-120:].rstrip(":")
        print(f"{said}: again, one token at a time", flush=True)
        out, batched = measure([*command, "--batch", "1"], {})[2], False
    figures = json.loads(out.strip().splitlines()[-1])
    median = statistics.median(figures["steps"])
    return {"step": median, "prefill": figures["prefill"], "batched": batched}


def warm_file(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def notebook_step(hf_folder: Path, form: str, kernels: str) -> dict:
    """The notebook's prefill and decode step in a fresh process, and its peak memory."""
    settings = {"LLAMA3_CKPT": str(hf_folder), "LLAMA3_DEVICE": "cpu", "LLAMA3_EXTRAS": "0"}
    if form in ("float32", "float32-plain", "bfloat16"):
        settings |= {"LLAMA3_DTYPE": form.removesuffix("-plain"), "LLAMA3_QUANTIZE": "none"}
        settings |= {"LLAMA3_ONE_ROW": "plain" if form.endswith("-plain") else "auto"}
    else:
        settings |= {"LLAMA3_DTYPE": "auto", "LLAMA3_QUANTIZE": form}
    warm_page_cache(hf_folder)
    return decode_figures(settings, AVX2 if kernels == "avx2" else {})


def decode_figures(settings: dict[str, str], env: dict[str, str]) -> dict:
    """The notebook with these settings in a fresh process (its driver as light as `make
    run`'s), then kernel_figures.decode_timing in its kernel: its figures, its peak anonymous
    memory (bytes) and wall time."""
    command = [sys.executable, "-m", "testbeds.notebook_kernel", json.dumps(settings)]
    command += ["benchmarks.kernel_figures", "decode_timing", json.dumps([2, 8, []])]
    seconds, peak, out, _ = measure(command, env)
    figures = json.loads(out.strip().splitlines()[-1])
    return {**figures, "peak_anon": peak, "wall": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--llama-cpp", type=Path, default=REPO_DIR / "build" / "llama-cpp")
    parser.add_argument("--formats", default="float32,float32-plain,bfloat16,int8,int4")
    parser.add_argument("--gguf", default="BF16,Q8_0,Q4_0", help="llama.cpp's files to run")
    parser.add_argument("--kernels", choices=["native", "avx2"], default="native")
    parser.add_argument("--keep-meta", action="store_true")
    args = parser.parse_args()

    hf_folder = make_checkpoint("8b-hf", args.data)
    if not args.keep_meta and (args.data / "8b").exists():
        print(f"deleting {args.data / '8b'} (the Meta-layout copy) to make room", flush=True)
        shutil.rmtree(args.data / "8b")
    args.llama_cpp.mkdir(parents=True, exist_ok=True)
    python, source = llama_cpp_environment(args.llama_cpp)
    kinds = args.gguf.split(",")
    files = gguf_files(hf_folder, args.llama_cpp, python, source, kinds)
    files = {kind: path for kind, path in files.items() if kind in kinds}

    print(
        header(
            f"kernels {args.kernels}; 8B shape, 17-token prompt, decode step = median of 16 "
            "(llama.cpp) or (t8 - t1)/7, best of 2 (notebook)"
        )
    )
    ours = {form: notebook_step(hf_folder, form, args.kernels) for form in args.formats.split(",")}
    theirs = {kind: llama_cpp_step(python, path) for kind, path in files.items()}
    sizes = {kind: path.stat().st_size for kind, path in files.items()}
    print(
        f"{'notebook':>18} {'step':>7} {'prefill':>8} {'peak anon.':>11}   llama.cpp  step   ratio"
    )
    for form, figures in ours.items():
        pair = PAIRS[form]
        if pair not in theirs:
            print(f"{form:>18} {figures['step']:6.2f}s {figures['prefill']:7.2f}s")
            continue
        ratio = figures["step"] / theirs[pair]["step"]
        target = f"(target ≤ {TARGETS[form]})" if form in TARGETS else ""
        label = f"{form} ({figures['dtype']})"
        print(
            f"{label:>18} {figures['step']:6.2f}s {figures['prefill']:7.2f}s "
            f"{figures['peak_anon'] / 1e9:9.2f} GB   {pair:>5} {theirs[pair]['step']:5.2f}s "
            f"{ratio:6.2f}× {target}"
        )
    for form, figures in ours.items():
        print(
            f"{form}: floor {figures['floor']:.2f} s; quantized: {figures['quantized']}; "
            f"one row: {figures['one_row']}"
        )
    if "bfloat16" in ours:
        floor = ours["bfloat16"]["floor"]  # one token through every matrix, in the file's bf16
        for form in ("float32", "float32-plain"):
            if form in ours:
                ratio = ours[form]["step"] / floor
                print(f"{form} step ÷ the bf16 floor ({floor:.2f} s): {ratio:.2f}× (target ≤ 1.2)")
    for kind, figures in theirs.items():
        print(
            f"llama.cpp {kind}: {sizes[kind] / 1e9:.1f} GB, step {figures['step']:.3f} s, "
            f"prefill {figures['prefill']:.2f} s"
        )
    for form in ("int8", "int4"):
        if form in ours:
            held = ours[form]["held"]  # the quantized matrices as the notebook holds them
            allowed = held + 1e9
            verdict = "met" if ours[form]["peak_anon"] <= allowed else "NOT met"
            print(
                f"{form}: peak anonymous memory {ours[form]['peak_anon'] / 1e9:.2f} GB, "
                f"target ≤ {held / 1e9:.2f} GB of quantized matrices + 1 GB = "
                f"{allowed / 1e9:.2f} GB: {verdict}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
