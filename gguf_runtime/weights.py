"""The model's tensors, by their GGUF names, checked against the config.

Matrices stay as zero-copy views of the memory map; only 1-D tensors (norm
weights, biases) are turned into float32 arrays. Every shape is checked here,
before any kernel sees it: the kernels check no bounds.
"""
from dataclasses import dataclass

import numpy as np

import quant_formats
from .config import ModelConfig
from .errors import ModelError


class Matrix:
    """A weight matrix [n_out, n_in] in its GGML type, optionally with a bias."""

    def __init__(self, tensor, bias=None):
        self.name, self.qtype = tensor.name, tensor.type
        self.data = tensor.data
        self.n_out, self.n_in = tensor.shape
        self.bias = bias
        self.act_type = quant_formats.get(self.qtype).VEC_DOT_TYPE

    def quantize(self, x):
        """x in this matrix's activation format, to share with others of the same."""
        return quant_formats.quantize_activations(x, self.qtype)

    # observer(matrix, x), if set, sees every input before its matmul (gguf-imatrix);
    # unset it costs one attribute test per matmul call, not per token
    observer = None

    def matmul(self, x, out, act=None):
        if self.observer is not None:
            self.observer(self, x)
        quant_formats.matmul(x, self.data, self.qtype, out, act)
        if self.bias is not None:
            out += self.bias

    def matmul_shared(self, x, out, shared):
        """matmul reusing `shared` = (act_type, act) when the formats agree; returns
        the pair to pass on."""
        if shared is None or shared[0] != self.act_type:
            shared = (self.act_type, self.quantize(x))
        self.matmul(x, out, shared[1])
        return shared

    def rows(self, ids, out):
        """Dequantize rows `ids` into out (embedding lookup)."""
        quant_formats.get(self.qtype).dequantize_rows(np.ascontiguousarray(self.data[ids]), out)


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    wq: Matrix
    wk: Matrix
    wv: Matrix
    wo: Matrix
    q_norm: np.ndarray | None
    k_norm: np.ndarray | None
    attn_post_norm: np.ndarray | None
    ffn_norm: np.ndarray
    ffn_gate: Matrix
    ffn_up: Matrix
    ffn_down: Matrix
    ffn_post_norm: np.ndarray | None


@dataclass
class Weights:
    token_embd: Matrix
    output_norm: np.ndarray
    output: Matrix
    layers: list

    def embed(self, ids, out):
        self.token_embd.rows(ids, out)


class _Loader:
    def __init__(self, gguf_file):
        self.by_name = {t.name: t for t in gguf_file.tensors}

    def tensor(self, name, shape, required=True):
        t = self.by_name.get(name)
        if t is None:
            if required:
                raise ModelError(f"tensor '{name}' is missing")
            return None
        if tuple(t.shape) != tuple(shape):
            raise ModelError(f"tensor '{name}' has shape {list(t.shape)}, expected {list(shape)}")
        if not quant_formats.is_supported(t.type):
            raise ModelError(f"tensor '{name}' has unsupported type {t.type.name}")
        return t

    def vector(self, name, width, required=True):
        t = self.tensor(name, (width,), required)
        if t is None:
            return None
        return quant_formats.dequantize(t.data, t.type).reshape(-1).astype(np.float32)

    def matrix(self, name, n_out, n_in, required=True, bias=False):
        t = self.tensor(name + ".weight", (n_out, n_in), required)
        if t is None:
            return None
        block = quant_formats.get(t.type).BLOCK_SIZE
        if n_in % block:
            raise ModelError(f"tensor '{t.name}': rows of {n_in} are not whole "
                             f"{t.type.name} blocks of {block}")
        b = self.vector(name + ".bias", n_out, required=False) if bias else None
        return Matrix(t, b)


def load_weights(gguf_file, cfg: ModelConfig) -> Weights:
    ld = _Loader(gguf_file)
    d, hk, hv = cfg.n_embd, cfg.head_dim, cfg.head_dim_v
    embd = ld.matrix("token_embd", cfg.n_vocab, d)
    output = ld.matrix("output", cfg.n_vocab, d, required=False) or embd
    layers = []
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        q_norm = ld.vector(p + "attn_q_norm.weight", hk, required=False)
        layers.append(LayerWeights(
            attn_norm=ld.vector(p + "attn_norm.weight", d),
            wq=ld.matrix(p + "attn_q", cfg.n_head * hk, d, bias=True),
            wk=ld.matrix(p + "attn_k", cfg.n_head_kv * hk, d, bias=True),
            wv=ld.matrix(p + "attn_v", cfg.n_head_kv * hv, d, bias=True),
            wo=ld.matrix(p + "attn_output", d, cfg.n_head * hv),
            q_norm=q_norm,
            k_norm=ld.vector(p + "attn_k_norm.weight", hk, required=q_norm is not None),
            attn_post_norm=ld.vector(p + "post_attention_norm.weight", d, cfg.post_norms),
            ffn_norm=ld.vector(p + "ffn_norm.weight", d),
            ffn_gate=ld.matrix(p + "ffn_gate", cfg.n_ff, d),
            ffn_up=ld.matrix(p + "ffn_up", cfg.n_ff, d),
            ffn_down=ld.matrix(p + "ffn_down", d, cfg.n_ff),
            ffn_post_norm=ld.vector(p + "post_ffw_norm.weight", d, cfg.post_norms)))
    return Weights(token_embd=embd, output_norm=ld.vector("output_norm.weight", d),
                   output=output, layers=layers)
