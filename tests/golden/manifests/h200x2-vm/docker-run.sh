#!/bin/sh
# One container per GPU group on node (nodetune 0.1.0): each gets the GPUs
# of one NUMA node, that node's cores (--cpuset-cpus) and memory (--cpuset-mems), unlimited
# locked memory for RDMA/pinned copies and a large /dev/shm for NCCL and data loaders.
# Replace the image and append your command.
# Note: SMT is off or absent: one thread per core
# Note: NUMA nodes hold 4.6 GiB by their meminfo but MemTotal is 251.8 GiB (memory hot-plugged
#   outside the node view?): the kubelet memory manager sizes each node from the per-node figure

# GPUs 0,1 on NUMA node 0: CPUs 1-31, memory node 0
docker run --rm -it --name nodetune-gpu-numa0 --gpus '"device=0,1"' --cpuset-cpus 1-31 --cpuset-mems 0 --ulimit memlock=-1 --ulimit stack=67108864 --shm-size 1g nvcr.io/nvidia/pytorch:24.12-py3
