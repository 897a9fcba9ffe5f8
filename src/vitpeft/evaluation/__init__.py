"""Evaluation: what a run or the untouched backbone scores on both domains.

knn (DINO's weighted k-NN, chunked), features (the untouched backbone's
feature cache), evaluate (target accuracy, source k-NN), curve (accuracy over
steps). Imports vitpeft.training (to rebuild a run's model) and everything below it.
"""
