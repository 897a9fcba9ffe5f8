"""Models: the backbone, its presets, checkpoint layouts and files, the pretraining stand-in.

presets (the torch-free table), shapes (a model's shape: table or timm on the
meta device), backbone (build_model, read_state_dict, features), layouts
(official checkpoint layouts into timm's names; load_backbone), fetch
(download a checkpoint and check it loads), pretrain (the demo's stand-in for
DINO). Imports vitpeft.data and the shared modules only.
"""
