"""Inference-time rewrites that keep a network's outputs: batch norms folded into the convolutions before them.

In eval mode a BatchNorm2d is a per-channel affine map, y = scale * x + shift with scale = gamma / sqrt(var + eps)
and shift = beta - mean * scale. When it reads a convolution's output and nothing else reads that output, the
map can live in the convolution's weights and bias: W' = W * scale (per output channel), b' = b * scale + shift.
The norm then becomes an identity, one pass over the activations fewer per layer.
"""

import logging

import torch
from torch import fx, nn

log = logging.getLogger(__name__)


def fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Fold `norm` (eval statistics) into `conv` in place; the caller replaces `norm` by an identity."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("a batch norm without running statistics cannot be folded")
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        if norm.affine:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.affine:
            shift = shift + norm.bias.double()
        weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))


def _pairs_in_sequentials(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, norm name) for a BatchNorm2d right after a Conv2d in the same nn.Sequential: the norm is the
    only reader of the convolution's output there."""
    pairs: list[tuple[str, str]] = []
    for name, parent in module.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (first_name, first), (second_name, second) in zip(children, children[1:], strict=False):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + first_name, prefix + second_name))
    return pairs


def _pairs_in_graph(module: nn.Module) -> list[tuple[str, str]] | None:
    """(conv name, norm name) for every BatchNorm2d whose input is a Conv2d output read by nothing else, from
    the traced graph (ResNet blocks call `self.bn1(self.conv1(x))`: no nn.Sequential shows the pair). None when
    torch.fx cannot trace the network (shape-dependent Python code)."""
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception as err:  # noqa: BLE001 - fx raises many kinds; the Sequential pairs still apply
        log.debug("torch.fx cannot trace %s (%s); folding in nn.Sequential only", type(module).__name__, err)
        return None
    modules = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(str(source.target)), nn.Conv2d)
            and len(source.users) == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every foldable BatchNorm2d of an eval-mode `module` into its convolution, in place; returns how many.

    A convolution or norm used at more than one place of the network (shared modules) is left alone, as is a
    network in training mode (its norms still learn).
    """
    if module.training:
        raise ValueError("fold batch norms of a network in eval mode only")
    # The traced graph knows every reader of a convolution's output; without one, only nn.Sequential order is
    # known to be safe.
    pairs = _pairs_in_graph(module)
    if pairs is None:
        pairs = _pairs_in_sequentials(module)
    uses: dict[int, int] = {}
    for _, child in module.named_modules(remove_duplicate=False):
        uses[id(child)] = uses.get(id(child), 0) + 1
    folded = 0
    for conv_name, norm_name in pairs:
        conv, norm = module.get_submodule(conv_name), module.get_submodule(norm_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(norm, nn.BatchNorm2d):
            continue
        if uses[id(conv)] > 1 or uses[id(norm)] > 1 or norm.running_mean is None:
            continue
        if conv.weight.shape[0] != norm.num_features:
            continue
        fold_into(conv, norm)
        module.set_submodule(norm_name, nn.Identity())
        folded += 1
    return folded
