"""Evaluation of saved test predictions: metrics, statistics, figures, reports."""
