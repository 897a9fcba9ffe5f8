"""Training: one run from its spec to its checkpoint.

train (the loop and model selection), draws (the data on the device and every
draw from (seed, step)), resume (atomic resume checkpoints and curve
snapshots), model (build a spec's model: pretrained, for training, trained),
devices (the device a job runs on), kernels (the CPU kernels pinned for the same bits
on every x86-64 with AVX2), gpu_check (`vitpeft check --gpu`).
Imports vitpeft.study (spec, preflight) and everything below it.
"""
