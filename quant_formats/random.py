"""Random but valid weight blocks of any registered format, for tests and benchmarks.

Random bytes are valid blocks for every format (grid indices are bit fields that
cannot leave their table); only the f16/bf16/f32 scale fields are replaced with
finite, modest values so results are not drowned in inf/NaN.
"""
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T


def random_blocks(qtype, n_rows: int, n_cols: int, seed: int = 0) -> np.ndarray:
    """uint8 [n_rows, row_bytes] holding n_rows x n_cols weights of type qtype."""
    from . import get
    rng = np.random.default_rng(seed)
    if qtype in (T.F32, T.F16, T.BF16):
        values = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
        return {T.F32: values, T.F16: values.astype(np.float16),
                T.BF16: (values.view(np.uint32) >> 16).astype(np.uint16)}[qtype].view(np.uint8)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_rows, n_cols // block_size * type_size), dtype=np.uint8)
    fmt = get(qtype)
    blocks = raw.reshape(-1).view(fmt.BLOCK_DTYPE)
    for name, (dtype, _) in blocks.dtype.fields.items():
        if dtype.base == np.float16:
            blocks[name] = (rng.standard_normal(blocks[name].shape) * 0.01).astype(np.float16)
    if hasattr(fmt, "set_finite_scale"):  # a scale packed into other fields (IQ1_M)
        fmt.set_finite_scale(blocks, rng)
    return raw
