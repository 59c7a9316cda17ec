#!/bin/sh
# One container per GPU group on synthetic-dgx-h100 (nodetune 0.1.0): each gets the GPUs
# of one NUMA node, that node's cores (--cpuset-cpus) and memory (--cpuset-mems), unlimited
# locked memory for RDMA/pinned copies and a large /dev/shm for NCCL and data loaders.
# Replace the image and append your command.

# GPUs 0,1,2,3 on NUMA node 0: CPUs 2-47,98-143, memory node 0
docker run --rm -it --name nodetune-gpu-numa0 --gpus '"device=0,1,2,3"' --cpuset-cpus 2-47,98-143 --cpuset-mems 0 --ulimit memlock=-1 --ulimit stack=67108864 --shm-size 64g --device /dev/infiniband --cap-add IPC_LOCK nvcr.io/nvidia/pytorch:24.12-py3

# GPUs 4,5,6,7 on NUMA node 1: CPUs 50-95,146-191, memory node 1
docker run --rm -it --name nodetune-gpu-numa1 --gpus '"device=4,5,6,7"' --cpuset-cpus 50-95,146-191 --cpuset-mems 1 --ulimit memlock=-1 --ulimit stack=67108864 --shm-size 64g --device /dev/infiniband --cap-add IPC_LOCK nvcr.io/nvidia/pytorch:24.12-py3
