"""Serving: the BentoML service that blends the batch and online rankers over Feast's online features."""
