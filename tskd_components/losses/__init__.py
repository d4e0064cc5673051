"""Distillation losses."""

from .distillation import FeatureAlignment, PredictionAlignment, TaskAgnosticKDLoss, TaskSpecificKDLoss
