"""gguf_runtime/quantize_mix.py: the type of every tensor in every llama-quantize file
type, on both real models, with and without an importance matrix, against what
llama-quantize --dry-run prints (tests/data/quantize_refs.json, make_quantize_refs.py)."""
import json
from pathlib import Path

import pytest

from gguf_runtime.quantize import loader_order, model_shape, type_name
from gguf_runtime.quantize_mix import FILE_TYPES, Options, TypeChooser
from gguf_runtime.reader import GGUFFile

REFS = json.loads((Path(__file__).parents[1] / "data" / "quantize_refs.json").read_text())
MODELS = {"smollm2": "smollm2_path", "gemma3": "gemma3_path"}
CASES = [(m, ft, w) for m in REFS["mix"] for ft in REFS["mix"][m] if ft != "names"
         for w in ("none", "imatrix")]


@pytest.fixture(scope="module")
def model_files(request):
    files = {name: GGUFFile(request.getfixturevalue(fixture)) for name, fixture in MODELS.items()}
    yield files
    for f in files.values():
        f.close()


def chosen_types(gguf_file, file_type, has_imatrix):
    tensors = loader_order(gguf_file.tensors)
    chooser = TypeChooser([t.name for t in tensors], model_shape(gguf_file.metadata),
                          Options(file_type=file_type, has_imatrix=has_imatrix))
    return [t.name for t in tensors], \
        [type_name(chooser.choose(t.name, t.shape[-1], len(t.shape), t.type)) for t in tensors]


@pytest.mark.parametrize("model,file_type,weighting", CASES)
def test_types_equal_llama_quantize_dry_run(model_files, model, file_type, weighting):
    names, types = chosen_types(model_files[model], file_type, weighting == "imatrix")
    assert names == REFS["mix"][model]["names"]
    expected = REFS["mix"][model][file_type][weighting].split()
    differing = [(n, ours, theirs) for n, ours, theirs in zip(names, types, expected)
                 if ours != theirs]
    assert not differing, differing[:5]


def test_every_llama_quantize_type_is_covered():
    assert set(FILE_TYPES) >= {ft for ft in REFS["mix"]["smollm2"] if ft != "names"}
