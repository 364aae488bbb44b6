"""Options ``gtc serve`` and ``gtc profile`` share (:mod:`cli.runtime_cmds`, :mod:`cli.profile_cmd`): the server's
limits as defaults, ``--providers``, and ``--device``/``--cuda-graphs`` with the user mistakes they refuse.

``--device`` (``cpu``, ``cuda``, ``cuda:N``) takes a *checkpoint* directory: torch and our Triton kernel on a
GPU without TensorRT, ``--cuda-graphs`` replaying small batches (:mod:`runtime.torch_backend`); exported
``.onnx``/``.plan`` files run on ONNX Runtime or TensorRT (``--providers``). Mixing the two up is one
sentence, as is a GPU that is not there. Kept apart so that both commands import it and neither the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.library_values import library_defaults

#: ``gtc serve``'s limits default to the server's (read from source: runtime.served imports numpy); ``gtc
#: profile`` counts its configurations against the same.
SERVER_LIMITS = library_defaults("runtime.served", "ServerLimits")


def providers_option(text: str | None) -> list[str] | None:
    """``--providers``: ``None`` when not given. An empty value is refused: it was taken as not given, so
    ``--providers "$PROVIDERS"`` with the variable unset ran on the default providers without a word."""
    if text is None:
        return None
    providers = [p.strip() for p in text.split(",") if p.strip()]
    if not providers:
        from gtcompress.errors import GTCompressError

        raise GTCompressError(
            f"--providers {text!r}: names no provider; give ONNX Runtime providers in order, e.g. cuda,cpu, "
            "or leave --providers out for the default"
        )
    return providers


DeviceOpt = Annotated[
    str | None,
    typer.Option(
        help="Torch device for checkpoint directories: cpu, cuda or cuda:N (default: a GPU if torch sees one)."
    ),
]
CudaGraphsOpt = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="With --device cuda: replay captured CUDA graphs, inputs padded to power-of-two size buckets (GT only); "
        "calls past 8,192 nodes or 65,536 edges run eagerly.",
    ),
]


def _is_exported(path: Path) -> bool:
    """Whether ``path`` (not a checkpoint) is an exported model: a file, or a Triton model directory
    holding one. Another directory (a checkpoint without its config.json, a runs/ folder) is not, and
    is left to the checkpoint loader, which names what is missing."""
    from runtime.errors import SessionError
    from runtime.session import resolve_model_path

    if path.is_file():
        return True
    if not path.is_dir():
        return False
    try:
        resolve_model_path(path)
    except SessionError:
        return False
    return True


def check_device(models: list[Path], device: str | None, cuda_graphs: bool, *, all_checkpoints: bool) -> None:
    """The user mistakes of --device/--cuda-graphs, each as one sentence (before any model is loaded)."""
    from gtcompress.errors import GTCompressError
    from runtime.session import is_checkpoint

    if cuda_graphs and not (device or "").strip().lower().startswith("cuda"):
        got = f"--device {device}" if device else "no --device"
        raise GTCompressError(f"--cuda-graphs needs --device cuda (CUDA graphs replay on a GPU only); got {got}")
    if device is None:
        return
    exported = [m for m in models if not is_checkpoint(m) and _is_exported(m)]
    if exported and (all_checkpoints or len(exported) == len(models)):
        raise GTCompressError(
            f"--device {device}: {exported[0]} is an exported model, which runs on ONNX Runtime or TensorRT; "
            "--device takes a checkpoint directory (for ONNX Runtime on a GPU use --providers cuda)"
        )
    from runtime.torch_backend import resolve_device  # imports torch, which --device needs anyway

    resolve_device(device)  # a GPU that is not there fails now, not under a progress bar
