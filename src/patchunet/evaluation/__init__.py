"""Evaluation on the official test set: the protocol that makes scores comparable."""
