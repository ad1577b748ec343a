r"""SpikeGPT (Zhu, Zhao, Li & Eshraghian 2023, arXiv 2302.13939): a spiking RWKV language model.

Tokens ``idx [T, B]`` (time-first). With ``spiking=True`` (SpikeGPT) / ``False`` (the same
network without spikes: RWKV-4, Peng et al. 2023), per layer l:

.. code-block:: text

    x0       = H(E[idx])                       binary embedding (Heaviside, atan surrogate)
             | E[idx]                           (spiking=False)
    x        = LN0(x0)                          (layer 0 only)
    # time mixing (spiking RWKV): token shift, then the WKV recurrence of kernels/wkv.py
    z        = LN1(x);  z'[t] = z[t-1]  (z[-1] from the state)
    k, v, r  = W_k mix_k(z, z'), W_v mix_v(z, z'), W_r mix_r(z, z'),  mix(a, b) = m a + (1-m) b
    a        = W_o (sigmoid(r) * WKV(exp(time_decay), time_first, k, v))
    x        = x + LIF_att(a)                   (spiking=False: x + a)
    # channel mixing (spiking RFFN)
    z        = LN2(x);  z'[t] = z[t-1]
    h        = LIF_hid(W_k mix_k(z, z'))        binary hidden layer (spiking=False: relu(.)^2)
    f        = sigmoid(W_r mix_r(z, z')) * (W_v h)
    x        = x + LIF_ffn(f)                   (spiking=False: x + f)
    logits   = W_head LN_out(x)

The block layout (``x + LIF(att(LN1 x))``, ``x + LIF(ffn(LN2 x))``, LN0 at layer 0, binary
embedding through an atan surrogate) follows SpikeGPT's released ``src/model.py``; its LIF
neurons are spikingjelly ``MultiStepLIFNode(tau=2, v_threshold=1)`` with a hard reset to 0,
reproduced here by ``spiking.LIF(tau_mem=2, dt=1, discretization="euler",
normalize_input=True, reset="zero")``: ``v = v/2 + x/2``, spike when ``v > 1`` (our reset is
detached, spikingjelly's default is not). SpikeGPT keeps RWKV's ``relu^2`` hidden layer;
here the hidden layer spikes too, so that ``W_v`` runs on binary inputs (spike-driven
accumulates, counted by :meth:`SpikeGPT.op_counts`). Neuron "time" is the token index.

Two modes that agree: ``mode="parallel"`` runs every layer over the whole sequence (WKV on
the fused kernel, LIF on its sequence kernel) for training by BPTT with surrogate gradients;
``mode="recurrent"`` runs token by token with per-layer state (token-shift inputs, WKV state,
LIF states) for generation (:func:`generate`).

Configurations :data:`CONFIGS`: the paper's sizes (``45m``: 12 layers x 512, ``216m``:
18 layers x 768, the latter with the 50,277-token GPT-NeoX vocabulary of SpikeGPT's
OpenWebText2 pre-training; parameter counts depend on the vocabulary) and small ones
(``tiny``, ``small``) that train on a CPU.
"""

from __future__ import annotations

import math
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from spiking import surrogate as _surrogate
from spiking.kernels import wkv as W
from spiking.models.registry import register_model
from spiking.neurons import LIF


@dataclass
class SpikeGPTConfig:
    vocab_size: int = 128
    n_layer: int = 2
    n_embd: int = 64
    ffn_mult: int = 4
    spiking: bool = True
    spiking_hidden: bool = True
    tau_steps: float = 2.0       # SpikeGPT's MultiStepLIFNode(tau=2.)
    threshold: float = 1.0       # v_threshold=1
    surrogate_alpha: float = 2.0  # surrogate.ATan(alpha=2.0)
    backend: str = "auto"


CONFIGS = {
    "tiny": {"n_layer": 2, "n_embd": 64},
    "small": {"n_layer": 4, "n_embd": 128},
    "45m": {"n_layer": 12, "n_embd": 512},
    "216m": {"n_layer": 18, "n_embd": 768, "vocab_size": 50277},
}


class BlockState(NamedTuple):
    att_x: torch.Tensor          # last LN1 output [B, C] (token shift)
    wkv: W.WKVState
    ffn_x: torch.Tensor          # last LN2 output [B, C]
    att_lif: object = None       # LIFState or None
    hid_lif: object = None
    ffn_lif: object = None


def _lif(cfg: SpikeGPTConfig) -> LIF:
    return LIF(tau_mem=cfg.tau_steps, threshold=cfg.threshold, dt=1.0, discretization="euler",
               normalize_input=True, reset="zero", surrogate="atan",
               surrogate_alpha=cfg.surrogate_alpha, backend=cfg.backend)


def _ramp(c: int, power: float) -> torch.Tensor:
    return (torch.arange(c, dtype=torch.float32) / c) ** power


class Block(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig, layer: int):
        super().__init__()
        c, hid = cfg.n_embd, cfg.n_embd * cfg.ffn_mult
        self.cfg = cfg
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        # RWKV-4 initialisation (RWKV-LM, RWKV_TimeMix): per-channel decays spread over
        # [-5, 3] in log space, bonus log(0.3) +- 0.5 zigzag, token-shift mixes as ramps.
        r01 = layer / max(cfg.n_layer - 1, 1)
        r10 = 1.0 - layer / cfg.n_layer
        h = torch.arange(c, dtype=torch.float32) / max(c - 1, 1)
        self.time_decay = nn.Parameter(-5 + 8 * h ** (0.7 + 1.3 * r01))
        zig = torch.tensor([((i + 1) % 3 - 1) * 0.5 for i in range(c)])
        self.time_first = nn.Parameter(torch.full((c,), math.log(0.3)) + zig)
        self.att_mix_k = nn.Parameter(_ramp(c, r10))
        self.att_mix_v = nn.Parameter(_ramp(c, r10) + 0.3 * r01)
        self.att_mix_r = nn.Parameter(_ramp(c, 0.5 * r10))
        self.key, self.value = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
        self.receptance, self.output = nn.Linear(c, c, bias=False), nn.Linear(c, c, bias=False)
        self.ffn_mix_k = nn.Parameter(_ramp(c, r10))
        self.ffn_mix_r = nn.Parameter(_ramp(c, r10))
        self.ffn_key = nn.Linear(c, hid, bias=False)
        self.ffn_receptance = nn.Linear(c, c, bias=False)
        self.ffn_value = nn.Linear(hid, c, bias=False)
        if cfg.spiking:
            self.lif_att, self.lif_ffn = _lif(cfg), _lif(cfg)
        if cfg.spiking and cfg.spiking_hidden:
            self.lif_hid = _lif(cfg)

    def initial_state(self, x_t: torch.Tensor) -> BlockState:
        z = torch.zeros_like(x_t)
        return BlockState(z, W.initial_state(z), z.clone())

    @staticmethod
    def _mix(z, zs, m):
        return z * m + zs * (1 - m)

    def _neuron(self, name, x, st, seq: bool):
        """LIF ``name`` over a sequence (seq) or one step; identity when absent."""
        if not hasattr(self, name):
            return x, None
        lif = getattr(self, name)
        return lif(x, st) if seq else lif.step(x, st)

    def extra_op_counts(self, x: torch.Tensor, st=None, seq: bool = True) -> dict:
        """Work of a forward outside the block's child modules, for
        :func:`spiking.hardware.counting.count`: the WKV recurrence (``kernels.wkv.op_counts``:
        18 elementwise operations per token and channel) as neuron operations."""
        t, b = (x.shape[0], x.shape[1]) if seq else (1, x.shape[0])
        c = W.op_counts(int(t), int(b), self.cfg.n_embd)
        return {"neuron_ops": c["dense_macs"] + c["exp"] + c["elementwise"]}

    def forward(self, x: torch.Tensor, st: BlockState, seq: bool = True):
        """``x`` ``[T, B, C]`` (seq) or ``[B, C]`` (one step) -> ``(x, BlockState)``."""
        cfg = self.cfg
        z = self.ln1(x)
        zs = torch.cat([st.att_x[None], z[:-1]]) if seq else st.att_x
        k = self.key(self._mix(z, zs, self.att_mix_k))
        v = self.value(self._mix(z, zs, self.att_mix_v))
        r = torch.sigmoid(self.receptance(self._mix(z, zs, self.att_mix_r)))
        w, u = torch.exp(self.time_decay).to(k.dtype), self.time_first.to(k.dtype)
        if seq:
            y, wkv = W.run(w, u, k, v, st.wkv, backend=cfg.backend)
        else:
            y, wkv = W.step(k, v, st.wkv, w, u)
        a, att_lif = self._neuron("lif_att", self.output(r * y), st.att_lif, seq)
        x = x + a
        att_x = z[-1] if seq else z
        z = self.ln2(x)
        zs = torch.cat([st.ffn_x[None], z[:-1]]) if seq else st.ffn_x
        hk = self.ffn_key(self._mix(z, zs, self.ffn_mix_k))
        if hasattr(self, "lif_hid"):
            h, hid_lif = self._neuron("lif_hid", hk, st.hid_lif, seq)
        else:
            h, hid_lif = torch.relu(hk) ** 2, None
        f = torch.sigmoid(self.ffn_receptance(self._mix(z, zs, self.ffn_mix_r))) * self.ffn_value(h)
        f, ffn_lif = self._neuron("lif_ffn", f, st.ffn_lif, seq)
        x = x + f
        ffn_x = z[-1] if seq else z
        self._last = {"att": a, "hid": h, "ffn": f}
        return x, BlockState(att_x, wkv, ffn_x, att_lif, hid_lif, ffn_lif)


class SpikeGPT(nn.Module):
    """``logits, state = SpikeGPT(cfg)(idx [T, B], state=None, mode="parallel")``.

    ``state`` is a tuple of per-layer :class:`BlockState`; logits are ``[T, B, vocab]``.
    """

    def __init__(self, cfg: SpikeGPTConfig | None = None, **kw):
        super().__init__()
        cfg = cfg or SpikeGPTConfig(**kw)
        if cfg.vocab_size < 2 or cfg.n_layer < 1 or cfg.n_embd < 2:
            raise ValueError(f"need vocab_size >= 2, n_layer >= 1, n_embd >= 2, got {cfg}")
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.spike_fn = _surrogate.get("atan", cfg.surrogate_alpha)
        self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def initial_state(self, batch: int, device=None, dtype=None) -> tuple:
        x = torch.zeros(batch, self.cfg.n_embd, device=device,
                        dtype=dtype or self.emb.weight.dtype)
        return tuple(b.initial_state(x) for b in self.blocks)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        e = self.emb(idx)
        return self.spike_fn(e) if self.cfg.spiking else e

    def forward(self, idx: torch.Tensor, state: tuple | None = None, mode: str = "parallel"):
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"SpikeGPT expects integer tokens [T, B], got "
                             f"{idx.dtype} {tuple(idx.shape)}")
        if mode not in ("parallel", "recurrent"):
            raise ValueError(f"mode must be 'parallel' or 'recurrent', got {mode!r}")
        if state is None:
            state = self.initial_state(idx.shape[1], idx.device)
        if mode == "recurrent":
            outs = []
            for t in range(idx.shape[0]):
                lg, state = self.step(idx[t], state)
                outs.append(lg)
            return torch.stack(outs), state
        x = self.ln0(self.embed(idx))
        new = []
        for blk, st in zip(self.blocks, state):
            x, st = blk(x, st, seq=True)
            new.append(st)
        return self.head(self.ln_out(x)), tuple(new)

    def step(self, tok: torch.Tensor, state: tuple | None = None):
        """One token ``[B]`` -> ``(logits [B, vocab], state)``: the recurrent mode."""
        if state is None:
            state = self.initial_state(tok.shape[0], tok.device)
        x = self.ln0(self.embed(tok))
        new = []
        for blk, st in zip(self.blocks, state):
            x, st = blk(x, st, seq=False)
            new.append(st)
        return self.head(self.ln_out(x)), tuple(new)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def op_counts(self, idx: torch.Tensor) -> dict:
        """Operations of one forward pass over ``idx`` ``[T, B]``, measured on its spikes.

        ``dense_macs``: multiply-accumulates with real-valued inputs; ``spike_acs``:
        accumulates of weight columns for binary input spikes (``nnz(spikes) * fan_out``);
        ``dense_equivalent_macs``: the same network with every layer dense (what the
        non-spiking RWKV of this size computes); ``ratio`` = dense_equivalent / (MACs + ACs).
        Elementwise work (WKV, LayerNorm, LIF updates) is listed separately.
        """
        t, b = idx.shape
        n, c, v = t * b, self.cfg.n_embd, self.cfg.vocab_size
        hid = c * self.cfg.ffn_mult
        with torch.no_grad():
            self(idx)
        dense, acs, spikes = 0, 0, 0
        for blk in self.blocks:
            dense += n * (4 * c * c + c * hid + c * c)      # k, v, r, o; ffn key, receptance
            h = blk._last["hid"]
            if hasattr(blk, "lif_hid"):
                nnz = int((h != 0).sum())
                acs += nnz * c
                spikes += nnz
            else:
                dense += n * hid * c
            for key in ("att", "ffn"):
                if self.cfg.spiking:
                    spikes += int((blk._last[key] != 0).sum())
        dense += n * c * v                                  # head
        equiv = n * self.cfg.n_layer * (5 * c * c + 2 * c * hid) + n * c * v
        lif_layers = (3 if self.cfg.spiking_hidden else 2) if self.cfg.spiking else 0
        neurons = n * self.cfg.n_layer * (2 * c + (hid if lif_layers == 3 else 0))
        out = {"dense_macs": dense, "spike_acs": acs, "dense_equivalent_macs": equiv,
               "ratio": equiv / max(dense + acs, 1), "spikes": spikes,
               "lif_neuron_updates": neurons if lif_layers else 0,
               "wkv": W.op_counts(t, b, c), "params": self.num_params(), "tokens": n}
        return out


# ---- character data, generation, checkpoints ------------------------------------------------

def stdlib_text(n_chars: int = 1_000_000) -> str:
    """A real text corpus available offline: the Python standard library's top-level ``*.py``
    files (``sysconfig.get_paths()["stdlib"]``), concatenated in sorted file-name order and cut
    at ``n_chars``; deterministic for a given Python version."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for p in sorted(root.glob("*.py")):
        s = p.read_text(encoding="utf-8", errors="replace")
        parts.append(s)
        total += len(s)
        if total >= n_chars:
            break
    if not parts:
        raise FileNotFoundError(f"no *.py files under the stdlib directory {root}")
    return "".join(parts)[:n_chars]


class CharVocab:
    """Character vocabulary; characters outside it map to index 0."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor([self.index.get(ch, 0) for ch in s], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@torch.no_grad()
def generate(model: SpikeGPT, prompt: torch.Tensor, n_new: int, *, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = 0):
    """Yield ``n_new`` token ids after ``prompt`` ``[T]`` one at a time (recurrent mode).

    Deterministic for a given ``seed`` (sampling uses its own ``torch.Generator``);
    ``temperature=0`` is greedy.
    """
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError(f"prompt must be a non-empty 1-D token tensor, got {tuple(prompt.shape)}")
    gen = torch.Generator(device=prompt.device)
    if seed is not None:
        gen.manual_seed(int(seed))
    logits, state = model(prompt[:, None], mode="recurrent")
    lg = logits[-1, 0]
    for _ in range(int(n_new)):
        if temperature <= 0:
            tok = int(lg.argmax())
        else:
            lg = lg / temperature
            if top_k:
                kth = torch.topk(lg, min(top_k, lg.numel())).values[-1]
                lg = lg.masked_fill(lg < kth, float("-inf"))
            tok = int(torch.multinomial(torch.softmax(lg, -1), 1, generator=gen))
        yield tok
        lg, state = model.step(torch.tensor([tok], device=prompt.device), state)
        lg = lg[0]


def save_checkpoint(path, model: SpikeGPT, vocab: CharVocab, **extra) -> None:
    torch.save({"kind": "spikegpt", "config": asdict(model.cfg), "vocab": vocab.chars,
                "state_dict": model.state_dict(), **extra}, path)


def load_checkpoint(path, map_location="cpu"):
    """``(model, vocab, checkpoint dict)`` from :func:`save_checkpoint`'s file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SpikeGPT checkpoint {p} does not exist")
    ck = torch.load(p, map_location=map_location, weights_only=False)
    if not isinstance(ck, dict) or ck.get("kind") != "spikegpt":
        raise ValueError(f"{p} is not a SpikeGPT checkpoint (expected a dict with kind='spikegpt')")
    model = SpikeGPT(SpikeGPTConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model, CharVocab(ck["vocab"]), ck


def build(name: str = "tiny", **overrides) -> SpikeGPT:
    """A model from a named configuration (:data:`CONFIGS`) with overrides."""
    if name not in CONFIGS:
        raise ValueError(f"unknown SpikeGPT config {name!r}; known: {', '.join(CONFIGS)}")
    return SpikeGPT(SpikeGPTConfig(**{**CONFIGS[name], **overrides}))


class SpikeGPTClassifier(nn.Module):
    """Sequence classifier on real-valued inputs ``x [T, B, ...]`` (for ``spiking train``):
    a linear encoder replaces the token embedding, blocks as above, head on the time mean."""

    def __init__(self, input_shape, n_classes: int, config: str = "tiny", **overrides):
        super().__init__()
        n_in = math.prod(int(s) for s in input_shape)
        self.lm = build(config, vocab_size=n_classes, **overrides)
        self.enc = nn.Linear(n_in, self.lm.cfg.n_embd)

    def forward(self, x: torch.Tensor):
        h = self.lm.ln0(self.enc(x.flatten(2)))
        st = self.lm.initial_state(x.shape[1], x.device, h.dtype)
        for blk, s in zip(self.lm.blocks, st):
            h, _ = blk(h, s, seq=True)
        return self.lm.head(self.lm.ln_out(h).mean(0))


def _factory(input_shape=None, n_classes=None, **kw):
    if input_shape is not None:
        return SpikeGPTClassifier(input_shape, n_classes or 10, **kw)
    return build(kw.pop("config", "tiny"), **kw)


register_model("spikegpt", _factory, overwrite=True)
