"""The model's tensors, by their GGUF names, checked against the config.

Matrices stay as zero-copy views of the memory map; only 1-D tensors (norm
weights, biases) are turned into float32 arrays. Every shape is checked here,
before any kernel sees it: the kernels check no bounds.
"""
from dataclasses import dataclass

import numpy as np

import quant_formats
from quant_formats import interleave
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
        self.act_format = quant_formats.get(self.act_type)
        # the decode layout (quant_formats/interleave.py) where the format has one:
        # matmuls read it instead of the mapped bytes, whose pages the loader drops
        self.packed = _pack(tensor)
        self._one_token = _activation_buffer(self.act_type, self.n_in, self.packed)

    def quantize(self, x):
        """x in this matrix's activation format, to share with others of the same."""
        return quant_formats.quantize_activations(x, self.qtype)

    # observer(matrix, x), if set, sees every input before its matmul (gguf-imatrix);
    # unset it costs one attribute test per matmul call, not per token
    observer = None

    def matmul(self, x, out, act=None):
        if self.observer is not None:
            self.observer(self, x)
        if self.packed is not None:
            if act is None and x.shape[0] == 1:  # decode: quantize into the buffer
                act = self.act_format.quantize(x, self._one_token)
            quant_formats.matmul_packed(x, self.packed, self.qtype, out, act)
        else:
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


_PACK_ROWS = 8192  # rows packed at a time (a multiple of interleave.ROWS)


def _pack(tensor):
    """The tensor's decode layout (None: its format has none), packed _PACK_ROWS rows
    at a time, each slice's mapped pages dropped once it is copied, so the file's
    bytes and the layout are not both resident: gemma3's 262144-row output matrix
    held 178 MB of file pages beside its 189 MB layout until the whole was packed."""
    data, qtype = tensor.data, tensor.type
    first = quant_formats.pack(data[:_PACK_ROWS], qtype)
    if first is None or data.shape[0] <= _PACK_ROWS:
        return first
    fields = [np.empty((interleave.n_groups(data.shape[0]),) + f.shape[1:], f.dtype)
              if _is_rows_field(f) else f for f in first]
    row_bytes = data.shape[1]
    for r0 in range(0, data.shape[0], _PACK_ROWS):
        part = first if r0 == 0 else quant_formats.pack(data[r0:r0 + _PACK_ROWS], qtype)
        g0 = r0 // interleave.ROWS
        for field, piece in zip(fields, part):
            if _is_rows_field(piece):
                field[g0:g0 + piece.shape[0]] = piece
        tensor.release_pages(r0 * row_bytes, (r0 + _PACK_ROWS) * row_bytes)
    return tuple(fields)


def _is_rows_field(field):
    """A layout array indexed by row group first (not an empty stand-in or a scalar)."""
    return isinstance(field, np.ndarray) and field.size > 0


def _activation_buffer(act_type, n_in, packed):
    """One token's quantized-activation arrays for a packed matrix's decode calls
    (allocated once: the per-token path allocates nothing); None otherwise."""
    if packed is None:
        return None
    return quant_formats.get(act_type).empty(1, n_in)


class FusedMatrix:
    """Matrices that read the same input (Q, K, V; gate, up) as one: their decode
    layouts stacked, so one kernel call computes all of them into the columns of
    one output. Each part keeps views of its own rows (no second copy)."""

    def __init__(self, parts):
        self.parts = parts
        self.qtype, self.act_type = parts[0].qtype, parts[0].act_type
        self.n_out = sum(p.n_out for p in parts)
        self.packed = tuple(np.concatenate([p.packed[i] for p in parts])
                            if _is_rows_field(field) else field
                            for i, field in enumerate(parts[0].packed))
        first = 0
        for p in parts:
            groups = slice(first, first + p.n_out // interleave.ROWS)
            p.packed = tuple(f[groups] if _is_rows_field(f) else f
                             for f in self.packed)
            first = groups.stop
        biases = [p.bias if p.bias is not None else np.zeros(p.n_out, np.float32)
                  for p in parts]
        self.bias = None if all(p.bias is None for p in parts) else np.concatenate(biases)

    @staticmethod
    def possible(parts) -> bool:
        """Same decode kernel and activation format, whole groups of rows each."""
        first = parts[0]
        if any(p.packed is None or p.n_out % interleave.ROWS for p in parts):
            return False
        fmt = quant_formats.get(first.qtype)
        return all(quant_formats.get(p.qtype).packed_matmul is fmt.packed_matmul
                   and p.act_type == first.act_type and p.n_in == first.n_in
                   and all(_same_field(a, b) for a, b in zip(p.packed, first.packed))
                   for p in parts)

    def columns(self, out):
        """Views of out [n, n_out] holding each part's columns."""
        first, views = 0, []
        for p in self.parts:
            views.append(out[:, first:first + p.n_out])
            first += p.n_out
        return views

    def matmul(self, x, out):
        for p in self.parts:
            if p.observer is not None:
                p.observer(p, x)
        first = self.parts[0]
        act = first.act_format.quantize(x, first._one_token) if x.shape[0] == 1 else None
        quant_formats.matmul_packed(x, self.packed, self.qtype, out, act)
        if self.bias is not None:
            out += self.bias


def _same_field(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape[1:] == b.shape[1:] and (a.size == 0) == (b.size == 0))
    return a == b


def fuse(parts):
    """A FusedMatrix of parts where possible, else None."""
    return FusedMatrix(parts) if FusedMatrix.possible(parts) else None


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
    wqkv: FusedMatrix | None = None
    wqk: FusedMatrix | None = None  # Q and K when V's layout differs (Q4_0 V, IQ4_NL Q/K)
    ffn_gate_up: FusedMatrix | None = None


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
    gguf_file.release_pages()
    output = ld.matrix("output", cfg.n_vocab, d, required=False) or embd
    gguf_file.release_pages()
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
        lw = layers[-1]
        lw.wqkv, lw.ffn_gate_up = fuse([lw.wq, lw.wk, lw.wv]), fuse([lw.ffn_gate, lw.ffn_up])
        lw.wqk = fuse([lw.wq, lw.wk]) if lw.wqkv is None else None
        gguf_file.release_pages()  # the layer is packed: peak RSS holds one layer twice
    weights = Weights(token_embd=embd, output_norm=ld.vector("output_norm.weight", d),
                      output=output, layers=layers)
    gguf_file.release_pages()  # packed copies replace what was read; the rest re-reads
    return weights
