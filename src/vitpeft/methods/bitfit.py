"""BitFit (Ben Zaken et al. 2022, arXiv 2106.10199): only the backbone's bias terms and the head train.

Every bias: the patch embedding's, each block's qkv, proj, fc1, fc2 and both LayerNorms', and the final norm's
(102,912 at ViT-B/16). They are pretrained weights trained in place, so BitFit has no routed view; WiSE-FT
interpolates them by name like full fine-tuning's weights.
"""

from torch import nn

from vitpeft.methods.arguments import BitFit as Config
from vitpeft.methods.common import freeze, train_head


def apply(model: nn.Module, cfg: Config) -> None:
    freeze(model)
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            param.requires_grad_(True)
    train_head(model)
