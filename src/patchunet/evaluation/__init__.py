"""Evaluation: scores of nuclei against the truth (Dice, AJI, PQ), the test protocol, overlays, the val search."""
