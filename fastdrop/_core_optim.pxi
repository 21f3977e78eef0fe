# Bindings of the optim kernels, included into fastdrop/_core.pyx (one file per kernel
# family, so families are added without touching each other).
