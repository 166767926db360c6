"""Tiny model configurations shared by the tests."""
from codec import Codec, CodecConfig
from codec.seanet import SEANetConfig


def tiny_config(bottleneck="rvq", causal=False, strides=(2, 4, 5, 8), **kw) -> CodecConfig:
    seanet = SEANetConfig(base_channels=2, max_channels=16, latent_dim=8, strides=strides, causal=causal)
    kw.setdefault("n_q", 3)
    kw.setdefault("codebook_size", 16)
    return CodecConfig(bottleneck=bottleneck, seanet=seanet, **kw)


def tiny_model(bottleneck="rvq", **kw) -> Codec:
    return Codec(tiny_config(bottleneck, **kw))


def ddp_rvq_worker(rank: int, world: int, init_file: str, out_dir: str, steps: int, per_sample: bool) -> None:
    """One rank of a CPU (gloo) DDP run of the RVQ on rank-specific data; saves its codebook state."""
    import json

    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from codec.rvq import ResidualVQ

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(1000 + rank)          # different data AND different local random draws per rank
    rvq = ResidualVQ(4, 3, 32, dropout=True, dropout_per_sample=per_sample)
    used, resets = [], 0
    for _ in range(steps):
        out = rvq(torch.randn(2, 4, 6) + rank)
        used.append(out.codes.shape[1])
        resets += sum(int(v) for v in out.metrics.values())
    save_file({k: v.contiguous() for k, v in rvq.state_dict().items()}, f"{out_dir}/rank{rank}.safetensors")
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"used": used, "resets": resets}, f)
    dist.destroy_process_group()


def ddp_bypass_worker(rank: int, world: int, init_file: str, out_dir: str, steps: int) -> None:
    """One rank of a gloo run of an RVQ with quantizer bypass, every rank seeded alike and fed
    the same data (so a local draw would be the same on every rank); saves which of its samples
    were bypassed at each step."""
    import json

    import torch
    import torch.distributed as dist

    from codec.rvq import ResidualVQ

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(1000)                 # the same local random stream on every rank
    rvq = ResidualVQ(4, 2, 8, dropout=False, bypass_p=0.5)
    masks = []
    for _ in range(steps):
        x = torch.randn(8, 4, 6)
        masks.append([bool(torch.equal(a, b)) for a, b in zip(rvq(x).latent, x)])
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(masks, f)
    dist.destroy_process_group()


# A child process that imports what it needs, then caps its own address space at what it has
# mapped plus ``headroom`` bytes before it runs the code under test: an allocation that grows
# with a number an input claims fails there with a MemoryError instead of taking the machine down.
_LIMITED_PREAMBLE = """
import resource, sys
{imports}
def _mapped():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (_mapped() + {headroom}, resource.RLIM_INFINITY))
"""


def run_with_memory_headroom(imports: str, code: str, headroom: int, timeout: float = 120):
    """Runs ``code`` in a fresh Python after ``imports``, with only ``headroom`` more bytes of
    address space; returns the CompletedProcess (stdout and stderr as text)."""
    import subprocess
    import sys
    script = _LIMITED_PREAMBLE.format(imports=imports, headroom=int(headroom)) + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
