"""One thread per test process: the tensors in these tests are tiny, `make test` runs two
xdist workers on two cores, and more threads than cores made some tests ten times slower."""
import torch
from threadpoolctl import threadpool_limits

torch.set_num_threads(1)
threadpool_limits(1)  # scikit-learn's BLAS and OpenMP pools
