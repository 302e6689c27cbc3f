"""Our ONNX export + int8 quantisation against sentence-transformers' own.

Ours: :func:`stagecache.embeddings._onnx_export.export_onnx` (torch.onnx.export of
the transformer, onnxruntime ``quantize_dynamic`` with per-channel QInt8 weights).
The library's: ``SentenceTransformer(path, backend="onnx")`` (an optimum export)
then ``export_dynamic_quantized_onnx_model(model, "avx2", ...)`` (optimum's
``ORTQuantizer``, the config matching this CPU: no AVX-512 here).

sentence-transformers 6.2 (the installed one) cannot use its own ONNX backend: its
``[onnx]`` extra needs ``optimum-onnx``, whose only releases require
``transformers<4.58`` while sentence-transformers 6 requires ``transformers>=5``
(``pip install "sentence-transformers[onnx]==6.2.0"`` ends in ResolutionImpossible).
So the library's export runs in a subprocess with a side folder (``--st-path``)
holding the last compatible set, installed with ``pip install --no-deps --target
DIR "sentence-transformers==5.7.0" "transformers>=4.57,<4.58" "optimum==2.1.0"
"optimum-onnx==0.1.0" "huggingface-hub>=0.34,<1.0" "tokenizers>=0.22,<=0.23.0"
"datasets==4.0.0"``; everything else (torch, onnxruntime, onnx) is the venv's.

Both int8 graphs are then run by the same runtime (stagecache's ONNX runtime:
``tokenizers`` + ``onnxruntime``, one intra-op thread, same tokenizer and pooling)
and compared with the torch model of the venv on questions of
``../shared/data/qqp_pairs_val.csv`` (validation split, never the test split;
``STAGECACHE_DATA`` overrides the folder).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/onnx_export.py --st-path DIR``.
Writes ``benchmarks/results/onnx_export.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "onnx_export.md"
DATA = Path(os.environ.get("STAGECACHE_DATA", ROOT.parent / "shared" / "data"))
VAL = DATA / "qqp_pairs_val.csv"

OURS = """
import json, sys, time
from pathlib import Path
from stagecache.embeddings._onnx_export import export_onnx
from stagecache.embeddings._paths import resolve_model
model = resolve_model(None).path
t0 = time.perf_counter()
export_onnx(model, Path(sys.argv[1]))
print(json.dumps({"export_s": time.perf_counter() - t0}))
"""

LIBRARY = """
import json, logging, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)
from sentence_transformers import SentenceTransformer
from sentence_transformers import export_dynamic_quantized_onnx_model
from stagecache.embeddings._paths import resolve_model
model_path = str(resolve_model(None).path)
out = Path(sys.argv[1])
t0 = time.perf_counter()
model = SentenceTransformer(model_path, backend="onnx", device="cpu")  # exports
model.save_pretrained(str(out))
t1 = time.perf_counter()
export_dynamic_quantized_onnx_model(model, "avx2", str(out))
t2 = time.perf_counter()
import sentence_transformers, transformers
print(json.dumps({"export_s": t2 - t0, "fp32_s": t1 - t0, "quantize_s": t2 - t1,
                  "versions": [sentence_transformers.__version__,
                               transformers.__version__]}))
"""


def run_json(
    code: str, target: Path, extra_path: str | None = None
) -> dict[str, object]:
    env = dict(os.environ)
    paths = [p for p in (extra_path, str(ROOT)) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1200,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"export failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def questions(n: int) -> tuple[list[str], list[tuple[str, str, int]]]:
    with VAL.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["question1"] and r["question2"]]
    pairs = [(r["question1"], r["question2"], int(r["is_duplicate"])) for r in rows[:n]]
    return [p[0] for p in pairs], pairs


def _seconds(result: dict[str, object]) -> float:
    value = result["export_s"]
    assert isinstance(value, float)
    return value


def mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--st-path", required=True, help="the side folder, see above")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from stagecache.embeddings._onnx import _Runtime
    from stagecache.embeddings._onnx_export import META_FILE
    from stagecache.embeddings._paths import resolve_model

    texts, pairs = questions(args.texts)
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    try:
        ours_dir, lib_dir = work / "ours", work / "library"
        ours = run_json(OURS, ours_dir)
        lib = run_json(LIBRARY, lib_dir, args.st_path)
        lib_int8 = next((lib_dir / "onnx").glob("model_*avx2*.onnx"))
        lib_fp32 = lib_dir / "onnx" / "model.onnx"
        # The library's graphs in our runtime: same tokenizer, pooling and inputs.
        run_dir = work / "library-run"
        run_dir.mkdir()
        for name in ("tokenizer.json", META_FILE):
            shutil.copy(ours_dir / name, run_dir / name)
        shutil.copy(lib_int8, run_dir / "model-int8.onnx")
        shutil.copy(lib_fp32, run_dir / "model.onnx")

        model_path = resolve_model(None).path
        torch_model = SentenceTransformer(str(model_path), device="cpu")
        ref = torch_model.encode(texts, normalize_embeddings=True, batch_size=64)
        ref_a = torch_model.encode(
            [p[0] for p in pairs], normalize_embeddings=True, batch_size=64
        )
        ref_b = torch_model.encode(
            [p[1] for p in pairs], normalize_embeddings=True, batch_size=64
        )
        runtimes = {
            "ours": _Runtime(ours_dir, "int8", 1),
            "library": _Runtime(run_dir, "int8", 1),
        }
        rows: dict[str, dict[str, float]] = {}
        threshold = 0.92  # [cache] threshold's default
        labels = np.asarray([p[2] for p in pairs])
        ref_pair = (ref_a * ref_b).sum(axis=1)
        for name, runtime in runtimes.items():
            got = np.concatenate(
                [
                    runtime.encode(texts[i : i + 64], name)
                    for i in range(0, len(texts), 64)
                ]
            )
            cos = (got * ref).sum(axis=1)
            a = np.concatenate(
                [
                    runtime.encode([p[0] for p in pairs][i : i + 64], name)
                    for i in range(0, len(pairs), 64)
                ]
            )
            b = np.concatenate(
                [
                    runtime.encode([p[1] for p in pairs][i : i + 64], name)
                    for i in range(0, len(pairs), 64)
                ]
            )
            pair = (a * b).sum(axis=1)
            hit = pair >= threshold
            rows[name] = {
                "mean_cos": float(cos.mean()),
                "min_cos": float(cos.min()),
                "p1_cos": float(np.percentile(cos, 1)),
                "flips": int(((ref_pair >= threshold) != hit).sum()),
                "right": int((hit & (labels == 1)).sum()),
                "wrong": int((hit & (labels == 0)).sum()),
                "pair_dev": float(np.abs(pair - ref_pair).mean()),
            }
        ref_hit = ref_pair >= threshold
        torch_row = {
            "right": int((ref_hit & (labels == 1)).sum()),
            "wrong": int((ref_hit & (labels == 0)).sum()),
        }
        # Latency: one text per call, the two graphs interleaved (shared machine).
        times: dict[str, list[float]] = {name: [] for name in runtimes}
        for name, runtime in runtimes.items():
            for text in texts[:20]:
                runtime.encode([text], name)
        for text in texts[: args.queries]:
            for name, runtime in runtimes.items():
                t0 = time.perf_counter()
                runtime.encode([text], name)
                times[name].append((time.perf_counter() - t0) * 1000)
        for name in runtimes:
            rows[name]["p50_ms"] = statistics.median(times[name])
            rows[name]["p95_ms"] = float(np.percentile(times[name], 95))
        sizes = {
            "ours": (mb(ours_dir / "model.onnx"), mb(ours_dir / "model-int8.onnx")),
            "library": (mb(lib_fp32), mb(lib_int8)),
        }
        write(ours, lib, rows, torch_row, sizes, len(texts), len(pairs), args.queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write(
    ours: dict[str, object],
    lib: dict[str, object],
    rows: dict[str, dict[str, float]],
    torch_row: dict[str, int],
    sizes: dict[str, tuple[float, float]],
    n_texts: int,
    n_pairs: int,
    n_queries: int,
) -> None:
    versions = lib["versions"]
    assert isinstance(versions, list)
    st_version, tf_version = versions
    o, li = rows["ours"], rows["library"]
    lines = [
        "# ONNX export and int8 quantisation: ours vs sentence-transformers'",
        "",
        f"Produced by `benchmarks/onnx_export.py` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores (AVX2, no AVX-512), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}; one run. Model: "
        "all-MiniLM-L6-v2. **The machine is shared with other jobs: times are "
        "indicative.**",
        "",
        f"The library side is sentence-transformers {st_version} with transformers "
        f"{tf_version} and optimum-onnx 0.1.0 (the installed sentence-transformers "
        "6.2 cannot install its `[onnx]` extra: optimum-onnx requires "
        "transformers<4.58, sentence-transformers 6 requires transformers>=5). "
        "Quantisation config `avx2` (dynamic, u8/u8, per channel); ours: dynamic, "
        "QInt8 weights, per channel.",
        "",
        "## Export",
        "",
        "| | export + int8 (s) | fp32 graph (MB) | int8 graph (MB) |",
        "|---|---:|---:|---:|",
        f"| ours (`export_onnx`) | {_seconds(ours):.1f} | "
        f"{sizes['ours'][0]:.1f} | {sizes['ours'][1]:.1f} |",
        f'| sentence-transformers (`backend="onnx"` + '
        f"`export_dynamic_quantized_onnx_model`) | {_seconds(lib):.1f} | "
        f"{sizes['library'][0]:.1f} | {sizes['library'][1]:.1f} |",
        "",
        "Export times include loading the model (each in a fresh interpreter).",
        "",
        "## Run time and accuracy (int8 graphs, same runtime, 1 thread)",
        "",
        f"Latency: {n_queries} one-question calls, the two graphs interleaved. "
        f"Cosine to the torch model: {n_texts} QQP validation questions. Hits: "
        f"{n_pairs} QQP validation pairs at the default threshold 0.92 (torch: "
        f"{torch_row['right']} right, {torch_row['wrong']} wrong hits); *flips* "
        "counts pairs whose side of 0.92 differs from torch's.",
        "",
        "| int8 graph | p50 (ms) | p95 (ms) | mean cos | p1 cos | min cos | "
        "right hits | wrong hits | flips | mean pair-cosine error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in (("ours", o), ("sentence-transformers", li)):
        lines.append(
            f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
            f"{row['mean_cos']:.4f} | {row['p1_cos']:.4f} | {row['min_cos']:.4f} | "
            f"{int(row['right'])} | {int(row['wrong'])} | {int(row['flips'])} | "
            f"{row['pair_dev']:.4f} |"
        )
    lines += [
        "",
        'Which export stagecache uses, and why: docs/design.md ("The ONNX export '
        'stays ours").',
    ]
    RESULTS.write_text("\n".join(lines) + "\n", "utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
