"""Timings: throughput, speed, latency and memory of training, inference, serving and the team stack."""
