"""Write a model back to disk in the Hugging Face folder format, so every stage's output loads like a Hub checkpoint.

    out_dir/config.json          the config the model was built from (copied, or given as a dict)
    out_dir/model.safetensors    metadata {"format": "pt"}; a tied lm_head is written once, as embed_tokens
    out_dir/tokenizer*.json      copied from `tokenizer_dir` when given

The folder is written under a temporary name and renamed into place (the previous folder is set aside first and
deleted last), so a crash never leaves half a checkpoint.
"""

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def save_model(model, out_dir, config, tokenizer_dir=None):
    """Save `model` (CausalLM or bare Transformer) with `config` (a config.json path or dict) to `out_dir`."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config_dict = json.loads(Path(config).read_text()) if not isinstance(config, dict) else config
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if config_dict.get("tie_word_embeddings") and "lm_head.weight" in state:
        state.pop("lm_head.weight")  # shared with embed_tokens, which is written
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).exists():
                shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)  # set aside, not deleted, until the new folder is in place
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
