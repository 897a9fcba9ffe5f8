"""Visual prompt tuning (Jia et al. 2022, arXiv 2203.12119), shallow and deep; only the prompts and the head train.

Shallow: p learnable tokens are inserted after the prefix tokens ([CLS], and registers where a model has
them), before the patch tokens, at the input of the first block, after the position embedding (prompts have
none). Deep: every block gets p tokens of its own; before block i > 0 the previous block's prompt outputs are
replaced by them (KMnP/vpt src/models/vit_prompt/vit.py, forward_deep_prompt). After the last block the prompt
tokens are taken out again, so the final norm, pooling and the k-NN feature see the model's own tokens; for the
CLS token this changes nothing (the final norm is per token), and an average-pooled model pools its patches only.

The timm model keeps every module and name: the tokens live in `model.vpt.tokens` (1 or depth, p, width) and
enter through forward hooks on the blocks. Initialisation as the authors' code: uniform in +-sqrt(6 / (3 *
patch area + width)) (Xavier for a patch's worth of inputs). Routed view: the hooks step aside, and the model
computes exactly the pretrained function (the same operations on the same tokens).
"""

import functools
import math

import torch
from torch import nn

from vitpeft.methods.arguments import VptShallow as Config
from vitpeft.methods.common import device_of, freeze, switched_off, train_head

ATTR = "vpt"


class Prompts(nn.Module):
    """The prompt tokens of every prompted block, and the hooks that put them into the token sequence."""

    def __init__(self, layers: int, length: int, width: int, patch_area: int, dropout: float, prefix: int, device):
        super().__init__()
        bound = math.sqrt(6.0 / (3 * patch_area + width))
        self.tokens = nn.Parameter(torch.empty(layers, length, width, device=device).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)
        self.prefix, self.enabled = prefix, True

    def _tokens(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.tokens[layer].to(x.dtype)).expand(x.shape[0], -1, -1)

    def insert(self, block, args):
        """Before the first block: [prefix, prompts, patches]."""
        if not self.enabled:
            return None
        x, *rest = args
        prompts = self._tokens(0, x)
        return (torch.cat([x[:, :self.prefix], prompts, x[:, self.prefix:]], dim=1), *rest)

    def replace(self, layer: int, block, args):
        """Before block `layer` > 0 (deep): the previous block's prompt outputs give way to this block's prompts."""
        if not self.enabled:
            return None
        x, *rest = args
        end = self.prefix + self.tokens.shape[1]
        return (torch.cat([x[:, :self.prefix], self._tokens(layer, x), x[:, end:]], dim=1), *rest)

    def remove(self, block, args, output):
        """After the last block: the prompt tokens out again."""
        if not self.enabled:
            return None
        return torch.cat([output[:, :self.prefix], output[:, self.prefix + self.tokens.shape[1]:]], dim=1)


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    blocks = list(model.blocks)
    patch = model.patch_embed.patch_size
    layers = len(blocks) if cfg.method == "vpt_deep" else 1
    prompts = Prompts(layers, cfg.length, model.embed_dim, patch[0] * patch[1], cfg.dropout, model.num_prefix_tokens,
                      device_of(model))
    # a submodule, in the model's mode: its tokens are the model's parameters, saved and loaded by name
    setattr(model, ATTR, prompts.train(model.training))
    blocks[0].register_forward_pre_hook(prompts.insert)
    for layer in range(1, layers):
        blocks[layer].register_forward_pre_hook(functools.partial(prompts.replace, layer))  # bound: deep-copyable
    blocks[-1].register_forward_hook(prompts.remove)
    train_head(model)


def routed(model: nn.Module):
    """Yield `model` without its prompts (the pretrained function, exactly); restore on exit."""
    return switched_off(model, [getattr(model, ATTR)])
