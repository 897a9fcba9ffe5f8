"""Methods: one module per fine-tuning method, their arguments, and the registry that applies them.

arguments (every method's argument dataclass and checks, torch-free: planning
reads it), registry (apply, check, trainable_state, count_trainable),
one module per method, common and qkv (shared parts). This
file imports nothing, so planning can read arguments without torch. Imports
vitpeft.models, vitpeft.data and the shared modules only.
"""
