"""Loading matrices: the decode layout packed slice by slice equals it packed whole."""
import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import quant_formats
from gguf_runtime import GGUFFile, weights


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q8_0, T.Q6_K])
def test_pack_in_slices_equals_whole(tmp_path, monkeypatch, qtype):
    rng = np.random.default_rng(3)
    values = rng.standard_normal((640 + 64 + 32, 256)).astype(np.float32)  # last group partial
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    blocks = quant_formats.get(qtype).quantize_blocks(values, None)
    writer.add_tensor("w", blocks, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    monkeypatch.setattr(weights, "_PACK_ROWS", 128)
    with GGUFFile(path) as f:
        tensor = f.tensor("w")
        whole = quant_formats.pack(tensor.data, qtype)
        sliced = weights._pack(tensor)  # drops each slice's pages as it goes
        assert len(sliced) == len(whole)
        for a, b in zip(sliced, whole):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b
        # the dropped pages read back from the file
        np.testing.assert_array_equal(
            quant_formats.dequantize(tensor.data, qtype).reshape(values.shape),
            gguf.quants.dequantize(blocks, qtype))
