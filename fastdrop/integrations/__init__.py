"""Integrations: scikit-learn estimators (``sklearn``) and dropout-rate search on joblib/Dask (``tune``).  Optional extras; ``import fastdrop`` imports neither."""
