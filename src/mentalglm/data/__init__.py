"""Datasets: one loader per public dataset, canonical splits, decontamination, PII scrubbing."""
