"""Tuning: the Optuna study and its storage, the search space, the trial objective, workers and reports."""
