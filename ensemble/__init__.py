"""Stacking ensembles of a sweep's top trials: fit, export to a bundle, load and predict.

Not built yet (issue 6); the package exists so the distribution's layout is the design's.
"""

__all__: list[str] = []
