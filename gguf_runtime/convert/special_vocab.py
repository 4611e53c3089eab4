"""Special tokens, add-BOS/EOS flags, merges and chat template, as llama.cpp's
gguf-py SpecialVocab (gguf-py/gguf/vocab.py, the version in llama.cpp's tree)
finds them. Written here because the gguf package on PyPI lags the one their
converter runs (it misses the ByteLevel post-processor flags and the normalizer
keys), and those change the output.

Sources, in order: tokenizer.json (merges, normalizer, added tokens, the
post-processor's BOS/EOS/SEP template), tokenizer_config.json (special token
names, add_*_token, chat_template; else chat_template.jinja / .json), then
config.json's *_token_id for types still unset.
"""
import json
from pathlib import Path

from ..errors import ModelError

TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path.name}: cannot read ({e})") from None


def _special_id(entry):
    return (entry or {}).get("SpecialToken", {}).get("id")


class SpecialVocab:
    def __init__(self, model_dir: Path, load_merges=False, n_vocab=None, types=TYPES):
        self.dir, self.n_vocab, self.types = Path(model_dir), n_vocab, tuple(types)
        self.ids, self.add, self.merges = {}, {}, []
        self.chat_template = None
        self.lowercase = self.strip_accents = None
        tok_path = self.dir / "tokenizer.json"
        tokenizer = _read(tok_path) if tok_path.is_file() else None
        config_path = self.dir / "tokenizer_config.json"
        tok_config = _read(config_path) if config_path.is_file() else None
        added = []
        if tokenizer:
            if load_merges:
                self.merges = _merges(tokenizer.get("model", {}).get("merges"))
            if normalizer := tokenizer.get("normalizer"):
                self._normalizer(normalizer)
            added = tokenizer.get("added_tokens", [])
            self._post_processor(tokenizer.get("post_processor"), tok_config)
        if tok_config:
            self._from_tokenizer_config(tok_config, added)
        if (self.dir / "config.json").is_file():
            config = _read(self.dir / "config.json")
            for typ in self.types:
                tid = config.get(f"{typ}_token_id")
                if tid is None and "text_config" in config:
                    tid = config["text_config"].get(f"{typ}_token_id")
                self.set_id(typ, tid)
        if load_merges and not self.merges:
            self.merges = _merges_txt(self.dir / "merges.txt")

    def set_id(self, typ, tid):
        """_set_special_token: the first valid id of a type wins."""
        if not isinstance(tid, int):
            return
        if tid < 0:
            raise ModelError(f"invalid id {tid} for special token type {typ}")
        if (self.n_vocab is None or tid < self.n_vocab) and typ not in self.ids:
            self.ids[typ] = tid

    def _normalizer(self, normalizer: dict):
        kind = normalizer.get("type")
        if kind == "Lowercase":
            self.lowercase = True
        elif kind == "StripAccents":
            self.strip_accents = True
        elif kind == "BertNormalizer":
            self.lowercase = normalizer.get("lowercase", self.lowercase)
            self.strip_accents = normalizer.get("strip_accents", self.strip_accents)
        elif kind == "Sequence":
            for sub in normalizer.get("normalizers", []):
                self._normalizer(sub)

    def _post_processor(self, post, tc):
        """Which special tokens the tokenizer adds around a sequence."""
        if not post:
            return
        tc_get = (tc or {}).get
        bos, cls = tc_get("bos_token"), tc_get("cls_token")
        eos, sep = tc_get("eos_token"), tc_get("sep_token")
        if not bos and cls and tc:
            tc["bos_token"] = bos = cls
        if not eos and sep and tc:
            tc["eos_token"] = eos = sep
        for proc in post.get("processors", [post]):
            kind = proc.get("type")
            if kind == "ByteLevel":
                self.add.setdefault("bos", False)
                self.add.setdefault("eos", False)
            elif kind == "RobertaProcessing":
                self.add.update(bos=True, eos=True, sep=True)
                if not cls and tc:
                    tc["cls_token"] = cls = proc.get("cls", [bos])[0]
                if not sep and tc:
                    tc["sep_token"] = sep = proc.get("sep", [eos])[0]
            elif kind == "TemplateProcessing":
                bos, cls, eos, sep = self._template(proc, tc, bos, cls, eos, sep)

    def _template(self, proc, tc, bos, cls, eos, sep):
        single, pair = proc.get("single", []), proc.get("pair", [])
        first = last = None
        if len(single) > 1:
            if first := _special_id(single[0]):
                if not tc:
                    bos = first
                elif first not in (bos, cls):
                    if not bos:
                        tc["bos_token"] = bos = first
                    if not cls:
                        tc["cls_token"] = cls = first
                self.add["bos"] = first in (bos, cls)
            if last := _special_id(single[-1]):
                if not tc:
                    eos = last
                elif last != eos:
                    for extra in ("eot", "eom"):  # the old EOS becomes EOT (or EOM)
                        if extra not in self.types:
                            self.types += (extra,)
                            tc[f"{extra}_token"] = eos
                            break
                    tc["eos_token"] = eos = last
                self.add["eos"] = last == eos
        if pair:
            start = 1 if first and _special_id(pair[0]) == first else 0
            stop = -1 if last and _special_id(pair[-1]) == last else None
            pair = pair[start:stop]
            if pair and self._pair_has_sep(pair, sep, eos, last):
                if not sep and tc:
                    tc["sep_token"] = eos
        return bos, cls, eos, sep

    def _pair_has_sep(self, pair, sep, eos, last) -> bool:
        """A [sep] [eos] B: records add_sep; True when a separator is added."""
        a, b = pair[0].get("Sequence", {}).get("id"), pair[-1].get("Sequence", {}).get("id")
        middle = pair[1:-1]
        if a != "A" or b != "B" or not middle:
            return False
        add_sep = False
        entry = _special_id(middle[0])
        if entry and entry in (sep, eos) and not last:
            add_sep = True
        if len(middle) == 2 and (entry := _special_id(middle[1])) and entry in (sep, eos):
            add_sep = True
        self.add["sep"] = add_sep
        return add_sep

    def _from_tokenizer_config(self, tc, added):
        jinja, as_json = self.dir / "chat_template.jinja", self.dir / "chat_template.json"
        alt = None
        if jinja.is_file():
            alt = jinja.read_text(encoding="utf-8")
            # glob order, as theirs
            extra = list((self.dir / "additional_chat_templates").glob("*.jinja"))
            if extra:
                alt = [{"name": "default", "template": alt}] + [
                    {"name": p.stem, "template": p.read_text(encoding="utf-8")} for p in extra]
        elif as_json.is_file():
            alt = _read(as_json).get("chat_template")
        template = tc.get("chat_template", alt)
        if template is None or isinstance(template, (str, list)):
            self.chat_template = template
        for typ in self.types:
            if isinstance(flag := tc.get(f"add_{typ}_token"), bool):
                self.add.setdefault(typ, flag)  # the post-processor's answer wins
            entry = tc.get(f"{typ}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if isinstance(content, str):
                matches = (t.get("id") for t in added if t.get("content") == content)
                self.set_id(typ, next(matches, None))

    def add_to_gguf(self, writer):
        if self.merges:
            writer.add_token_merges(self.merges)
        for typ, tid in self.ids.items():
            if (method := getattr(writer, f"add_{typ}_token_id", None)) is not None:
                method(tid)
        for typ, flag in self.add.items():
            if (method := getattr(writer, f"add_add_{typ}_token", None)) is not None:
                method(flag)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)
        if self.lowercase is not None:
            writer.add_bool("tokenizer.ggml.normalizer.lowercase", self.lowercase)
        if self.strip_accents is not None:
            writer.add_bool("tokenizer.ggml.normalizer.strip_accents", self.strip_accents)


def _merges(merges) -> list:
    if not isinstance(merges, list) or not merges:
        return []
    if isinstance(merges[0], str):
        return merges
    if isinstance(merges[0], list) and len(merges[0]) == 2 and isinstance(merges[0][0], str):
        # pairs (transformers >= 4.45): spaces inside a part are stored shifted by 256
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                         for part in pair) for pair in merges]
    raise ModelError("tokenizer.json: unknown merges format")


def _merges_txt(path: Path) -> list:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].strip().startswith("#"):
        lines = lines[1:]
    merges = []
    for line in lines:
        parts = line.strip().split(None, 3)
        if len(parts) == 2:
            merges.append(f"{parts[0]} {parts[1]}")
    return merges
