r"""Knowledge distillation from the dense model: task loss + :math:`\lambda \cdot \mathrm{KL}(p_s \,\|\, p_t)`.

Per output row (node or graph), with temperature :math:`T`,

.. math::
    \mathrm{KL}(p_s \| p_t) = \sum_c p_s(c)\,\big(\log p_s(c) - \log p_t(c)\big), \qquad
    p = \mathrm{softmax}(z / T),

scaled by :math:`T^2` (Hinton et al.) and averaged over rows. This is the reverse of what TEDDY's
published code computes, ``F.kl_div(log_softmax(student), softmax(teacher))`` = KL(teacher ‖ student)
at T = 1 (github.com/hyunjin72/TEDDY, ``main_teddy.py``). It is not what costs TEDDY its accuracy:
on GT NCI1, fine-tuned with this loss, its weights half cost 0.5 points and its edges half 12.9, about
what removing random edges costs (``bench/HISTORY.md``, "TEDDY's cost split"). Binary tasks use
the Bernoulli KL of the sigmoid outputs; regression uses the squared error to the teacher's prediction.

The teacher's logits are computed **once** on the original (uncompressed) graphs and stored on
each training graph as the node-level tensor ``pe[TEACHER_KEY]`` (graph-level logits repeated on
every node, pooled back by a per-graph mean). Batching carries them along with every shuffle, the
model ignores the key, and the teacher costs one inference pass instead of one per step — and for
TEDDY the student sees the sparsified graph while the teacher saw the original, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gtcompress.data.base import DatasetInfo, GraphDataset, iterate_batches
from gtcompress.errors import ConfigError
from gtcompress.graph import GraphBatch
from gtcompress.nn.scatter import scatter_mean
from gtcompress.preprocess.batching import MAX_EVAL_CELLS
from gtcompress.train.loop import ExtraLoss

__all__ = ["TEACHER_KEY", "attach_teacher", "check_distillation", "distillation_loss", "has_teacher", "kd_loss"]

TEACHER_KEY = "kd_teacher"


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_distillation(weight: float, temperature: float, weight_option: str, temperature_option: str) -> None:
    """Refuse distillation settings that poison the loss instead of waiting for it to happen.

    :func:`kd_loss` divides the logits by the temperature: 0 gives inf/inf = NaN in the first step,
    and every weight after it is NaN (``gtc sparsify --kd-temperature 0`` wrote such a checkpoint
    and exited 0); a negative temperature flips the softmax, so the student learns the teacher's
    *least* likely class. A negative weight rewards diverging from the teacher, and a NaN weight
    is NaN loss again."""
    if not _finite_number(weight) or weight < 0:
        raise ConfigError(f"{weight_option} must be a finite number >= 0 (0 = no distillation), got {weight!r}")
    if not _finite_number(temperature) or temperature <= 0:
        raise ConfigError(f"{temperature_option} must be a finite number > 0 (1 = plain softmax), got {temperature!r}")


def kd_loss(student: Tensor, teacher: Tensor, info: DatasetInfo, temperature: float = 1.0) -> Tensor:
    """Mean KL(student ‖ teacher) per row (see module docstring)."""
    t = temperature
    if info.task == "multiclass":
        s = student.reshape(-1, student.shape[-1]) / t
        q = teacher.reshape(-1, teacher.shape[-1]) / t
        log_ps, log_pt = F.log_softmax(s, -1), F.log_softmax(q, -1)
        return (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean() * t * t
    if info.task == "binary":
        s, q = student.reshape(-1) / t, teacher.reshape(-1) / t
        ps = torch.sigmoid(s)
        kl = ps * (F.logsigmoid(s) - F.logsigmoid(q)) + (1 - ps) * (F.logsigmoid(-s) - F.logsigmoid(-q))
        return kl.mean() * t * t
    return F.mse_loss(student, teacher.reshape(student.shape))


@torch.no_grad()
def attach_teacher(
    dataset: GraphDataset,
    teacher: nn.Module,
    splits: tuple[str, ...] = ("train",),
    source: GraphDataset | None = None,
    batch_size: int = 128,
) -> GraphDataset:
    """A dataset whose graphs carry the teacher's logits (computed on ``source``, default
    ``dataset`` itself — pass the original graphs when ``dataset`` is a sparsified copy with the
    same nodes). Graphs are shallow copies; tensors are shared."""
    src = source if source is not None else dataset
    teacher.eval()
    graph_level = dataset.info.task_level == "graph"
    new_splits = dict(dataset.splits)
    for split in splits:
        graphs = src[split]
        outs = []
        for b in iterate_batches(graphs, batch_size, max_cells=MAX_EVAL_CELLS):
            outs.append(teacher(b))
        logits = torch.cat(outs) if outs else torch.zeros(0)
        tagged: list[GraphBatch] = []
        row = 0
        for g_src, g in zip(graphs, dataset[split], strict=True):
            if g.num_nodes != g_src.num_nodes:
                raise ValueError("attach_teacher: source and target graphs differ in node count")
            if graph_level:
                t = logits[row : row + 1].reshape(1, -1).expand(g.num_nodes, -1).contiguous()
                row += 1
            else:
                t = logits[row : row + g.num_nodes].reshape(g.num_nodes, -1)
                row += g.num_nodes
            tagged.append(replace(g, pe={**g.pe, TEACHER_KEY: t}))
        new_splits[split] = tagged
    return GraphDataset(dataset.info, new_splits)


def has_teacher(dataset: GraphDataset, split: str = "train") -> bool:
    """Whether every graph of ``split`` carries teacher logits."""
    graphs = dataset.splits.get(split) or []
    return bool(graphs) and all(TEACHER_KEY in g.pe for g in graphs)


def teacher_logits(batch: GraphBatch, info: DatasetInfo) -> Tensor:
    """The teacher logits stored on ``batch`` (graph-level ones pooled back per graph)."""
    t = batch.pe[TEACHER_KEY]
    if info.task_level == "graph":
        t = scatter_mean(t, batch.batch_vector, batch.num_graphs)
    return t


def distillation_loss(info: DatasetInfo, weight: float = 1.0, temperature: float = 1.0) -> ExtraLoss:
    """``extra_loss`` for :func:`gtcompress.train.loop.train`: ``weight · KL(student ‖ teacher)``
    on batches that carry teacher logits (others contribute 0)."""

    def loss(model: nn.Module, batch: GraphBatch, logits: Tensor) -> Tensor:
        if weight == 0.0 or TEACHER_KEY not in batch.pe:
            return logits.new_zeros(())
        return weight * kd_loss(logits, teacher_logits(batch, info), info, temperature)

    return loss
