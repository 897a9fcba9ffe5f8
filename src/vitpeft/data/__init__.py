"""Data: downloads, target datasets, ImageNet shards, the demo's synthetic domains, subsets, augmentation.

catalogue (the target datasets' torch-free table), targets (download, check,
prepare via torchvision), cifar (CIFAR's safe unpickler), imagenet and
imagenet_decode (shards, torch-free workers), store (the uint8 image store),
synthetic, subset, augment (on-device augmentation), download (verified
downloads). The lowest stage: it imports only the shared modules (errors,
fileio, progress).
"""
