"""onnxruntime sessions for the tier-1 image models (OCR, explicit-imagery detector).

onnxruntime's intra-op threads busy-wait ("spin") for a while after every run, waiting for the
next one. On a few cores shared by several models run one after the other (OCR detection,
recognition, NudeNet, then the torch text encoder) those spinning threads take the CPU from the
next model: on 2 cores, turning spinning off cut the analyzer's p50 per image request from
305 ms to 185 ms, most of it in the text encoder that follows OCR (bench/RESULTS.md). The
libraries that wrap the models build their sessions themselves, so they are rebuilt here with
the options we want.
"""

from __future__ import annotations

import os
from typing import Any


def session_options(*, threads: int = 0, spinning: bool = False) -> Any:
    """onnxruntime ``SessionOptions`` for a CPU image model.

    Args:
        threads: Intra-op threads; 0 leaves onnxruntime's default (one per physical core).
            Clamped to the machine's CPU count.
        spinning: Let idle intra-op threads busy-wait between runs (onnxruntime's default).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = min(threads, os.cpu_count() or 1)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def cpu_session(model_path: str, *, threads: int = 0, spinning: bool = False,
                mem_arena: bool = True) -> Any:
    """A CPU ``InferenceSession`` of ``model_path`` built with :func:`session_options`.

    Args:
        model_path: The ``.onnx`` file.
        threads: See :func:`session_options`.
        spinning: See :func:`session_options`.
        mem_arena: Keep onnxruntime's CPU memory arena (RapidOCR turns it off; kept off there).
    """
    import onnxruntime as ort

    opts = session_options(threads=threads, spinning=spinning)
    opts.enable_cpu_mem_arena = mem_arena
    return ort.InferenceSession(model_path, sess_options=opts,
                                providers=["CPUExecutionProvider"])
