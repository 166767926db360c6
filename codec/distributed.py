"""Thin wrappers over torch.distributed that are no-ops in a single process.

The quantizer uses them to keep codebook state identical on every rank: EMA statistics
are summed over ranks, and every random decision (k-means init, dead-code samples,
quantizer dropout) is made on rank 0 and broadcast.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

_backend_threads_left = False


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum of ``tensor`` over all ranks, in place."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s copy, in place."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def shut_down() -> None:
    """Destroy the default process group of a job of several ranks (every rank calls it once
    the job is over); a no-op in a single process.

    With torch 2.14 a process group that DistributedDataParallel has wrapped is never freed:
    after ``destroy_process_group`` and a garbage collection its gloo threads (pt_gloo_runloop,
    gloo_tcp_loop) still run, and tearing them down while the interpreter finalises can abort a
    run that succeeded (SIGABRT, "terminate called without an active exception"). The process
    is marked so that :func:`exit_process` ends it without that teardown.
    """
    global _backend_threads_left
    if is_distributed():
        dist.destroy_process_group()
        _backend_threads_left = True


def exit_process(code: int) -> None:
    """In a process that ran a distributed job (:func:`shut_down`), flush stdout and stderr and
    exit at once with ``code``, skipping interpreter finalisation; elsewhere, do nothing."""
    if not _backend_threads_left:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):       # a closed or broken stream: nothing more to save
            pass
    os._exit(code)
