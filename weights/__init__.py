"""Shipped weights (safetensors + JSON model cards), installed as package data."""
