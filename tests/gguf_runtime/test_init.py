"""gguf_runtime/__init__.py: the OpenBLAS settings made before numpy loads it."""
import os
import subprocess
import sys

import pytest

import gguf_runtime


@pytest.mark.parametrize("description, family", [
    ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n", 25),
    ("AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD", 25),       # Windows
    ("vendor_id\t: AuthenticAMD\ncpu family\t: 26\n", 26),
    ("vendor_id\t: GenuineIntel\ncpu family\t: 6\n", 0),
    ("Intel64 Family 6 Model 154 Stepping 3, GenuineIntel", 0),
    ("arm", 0), ("", 0),
])
def test_amd_family_from_either_description(description, family):
    assert gguf_runtime._amd_family(description) == family


def test_openblas_settings_are_defaults_a_user_overrides():
    code = ("import os, gguf_runtime; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], "
            "os.environ.get('OPENBLAS_CORETYPE'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    zen = gguf_runtime._amd_family(gguf_runtime._cpu_description()) == 25
    assert out == ["4", "Zen" if zen else "None"]
    env.update(OPENBLAS_THREAD_TIMEOUT="8", OPENBLAS_CORETYPE="SkylakeX")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["8", "SkylakeX"]
