"""tandem's models: the batch ranker, candidate generation, the online model, blending, registry and evaluation."""
