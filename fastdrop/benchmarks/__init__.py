"""Benchmark cases behind ``python -m fastdrop bench`` (the runner and report live in
``fastdrop._bench``; model-level CNN/RNN cases in ``models``)."""
