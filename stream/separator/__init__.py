"""Causal BGM/OST separator: data, model, streamer, training, evaluation, pipeline stage."""
