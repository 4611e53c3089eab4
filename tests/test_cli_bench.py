"""gguf-bench: llama-bench's tests, table columns and JSON field names."""
import json
import subprocess
import sys


def gguf_bench(*args):
    code = "import sys, cli; sys.argv = ['gguf-bench'] + sys.argv[1:]; cli.bench_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def test_json_has_llama_bench_fields(smollm2_path):
    out = gguf_bench("-m", str(smollm2_path), "-p", "16", "-n", "4", "-r", "2", "-t", "1",
                     "-o", "json")
    assert out.returncode == 0, out.stderr
    pp, tg = json.loads(out.stdout)
    assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (16, 0, 0, 4)
    for r in (pp, tg):
        assert r["model_filename"] == str(smollm2_path) and r["n_threads"] == 1
        assert r["avg_ts"] > 0 and r["stddev_ts"] >= 0 and len(r["samples_ts"]) == 2
        assert r["type_k"] == "f16" and r["model_n_params"] == 134515008


def test_quantized_cache_types_run_and_show_in_the_json(smollm2_path):
    out = gguf_bench("-m", str(smollm2_path), "-p", "16", "-n", "4", "-r", "1", "-t", "1",
                     "-ctk", "q8_0", "-ctv", "f16", "-o", "json")
    assert out.returncode == 0, out.stderr
    for r in json.loads(out.stdout):
        assert (r["type_k"], r["type_v"]) == ("q8_0", "f16") and r["avg_ts"] > 0


def test_markdown_table_as_llama_bench(smollm2_path):
    out = gguf_bench("-m", str(smollm2_path), "-p", "8", "-n", "2", "-r", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "model", "size", "params", "backend", "threads", "test", "t/s"]
    assert "pp8" in lines[2] and "tg2" in lines[3] and "92.10 MiB" in lines[2]


def test_depth_fills_the_cache_first_as_llama_bench(smollm2_path):
    """-d 300: the tests run at positions 300.. (past 256: split-KV attention), named as
    llama-bench names them; the table's test column and the JSON's n_depth."""
    out = gguf_bench("-m", str(smollm2_path), "-p", "8", "-n", "2", "-d", "300", "-r", "2",
                     "-o", "json")
    assert out.returncode == 0, out.stderr
    pp, tg = json.loads(out.stdout)
    assert pp["n_depth"] == tg["n_depth"] == 300 and len(tg["samples_ts"]) == 2
    out = gguf_bench("-m", str(smollm2_path), "-p", "0", "-n", "2", "-d", "300", "-r", "1")
    assert out.returncode == 0, out.stderr
    assert "tg2 @ d300" in out.stdout.strip().splitlines()[2]
