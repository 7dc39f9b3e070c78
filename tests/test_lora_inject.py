"""inject_lora / disable_adapters / merge_lora / unmerge_lora (minigrpo/lora/inject.py)."""

import pytest
import torch
from torch import nn

from minigrpo.lora import (
    LoRALinear,
    disable_adapters,
    inject_lora,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)


class Attn(nn.Module):
    def __init__(self, c=8, kv=4):
        super().__init__()
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, kv, bias=False)
        self.v_proj = nn.Linear(c, kv, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)
        self.q_proj_extra = nn.Linear(c, c)  # shares a prefix with a target but is not one

    def forward(self, x):  # x: (B, T, C)
        v = self.v_proj(x).repeat(1, 1, 2)  # (B, T, C): a stand-in for attention, enough to route every projection
        return self.o_proj(self.q_proj(x) * torch.tanh(self.k_proj(x).repeat(1, 1, 2)) + v) + self.q_proj_extra(x)


class Toy(nn.Module):
    """Embedding -> 2 blocks (attention stand-in + MLP) -> head: every kind of module inject_lora meets."""

    def __init__(self, v=11, c=8):
        super().__init__()
        self.embed = nn.Embedding(v, c)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"self_attn": Attn(c), "gate_proj": nn.Linear(c, 12)}) for _ in range(2)
        )
        self.norm = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, v, bias=False)

    def forward(self, ids):  # ids: (B, T) -> (B, T, V)
        h = self.embed(ids)
        for layer in self.layers:
            h = h + layer["self_attn"](h) + layer["gate_proj"](h)[..., :8]
        return self.lm_head(self.norm(h))


def randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_state_dict(model).items():
            if name.endswith("lora_B.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_wraps_only_targets_matched_on_last_name_component():
    torch.manual_seed(0)
    model = Toy()
    summary = inject_lora(model, r=2, alpha=4, targets=("q_proj", "v_proj"))
    assert summary.wrapped == ("layers.0.self_attn.q_proj", "layers.0.self_attn.v_proj",
                               "layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj")
    assert isinstance(model.layers[0]["self_attn"].q_proj, LoRALinear)
    assert type(model.layers[0]["self_attn"].q_proj_extra) is nn.Linear
    assert type(model.layers[0]["self_attn"].k_proj) is nn.Linear
    assert model.lora_config.r == 2 and model.lora_config.targets == ("q_proj", "v_proj")


def test_trainable_count_is_sum_of_r_times_in_plus_out():
    torch.manual_seed(0)
    model = Toy()
    total_before = sum(p.numel() for p in model.parameters())
    summary = inject_lora(model, r=2, alpha=4)
    # per block: q 2*(8+8), k 2*(8+4), v 2*(8+4), o 2*(8+8) = 32 + 24 + 24 + 32 = 112; two blocks -> 224
    assert summary.trainable_params == 224
    assert summary.total_params == total_before + 224
    assert sum(p.numel() for p in lora_parameters(model)) == 224
    text = str(summary)
    assert "224" in text and "8 layers wrapped" in text


def test_only_a_and_b_receive_gradients():
    torch.manual_seed(0)
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    randomize_b(model)  # with B = 0 the gradient of A would be exactly zero (but still present)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    adapters = {id(p) for p in lora_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in adapters:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_target_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"\['up_proj'\].*match no module"):
        inject_lora(Toy(), targets=("q_proj", "up_proj"))


def test_non_linear_target_is_an_error():
    with pytest.raises(TypeError, match="norm.*LayerNorm"):
        inject_lora(Toy(), targets=("norm",))


def test_second_injection_is_an_error():
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    with pytest.raises(RuntimeError, match="already"):
        inject_lora(model, r=2, alpha=4)


def test_bare_string_target_is_one_name():
    summary = inject_lora(Toy(), r=2, alpha=4, targets="o_proj")
    assert summary.wrapped == ("layers.0.self_attn.o_proj", "layers.1.self_attn.o_proj")


@pytest.fixture(params=["llama", "qwen3"])
def tiny_lm(request, tmp_path):
    from minigrpo.miniature import make_tiny_checkpoint
    from minigrpo.models import load_causal_lm

    make_tiny_checkpoint(tmp_path, arch=request.param, seed=0)
    return load_causal_lm(tmp_path)


def test_disable_adapters_gives_base_logits_exactly_and_restores(tiny_lm):
    model = tiny_lm
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        base = model(ids)
    inject_lora(model, r=4, alpha=8)
    randomize_b(model)
    with torch.no_grad():
        adapted = model(ids)
        with disable_adapters(model):
            reference = model(ids)
            with disable_adapters(model):  # nests
                pass
            assert torch.equal(model(ids), base)
        again = model(ids)
    assert torch.equal(reference, base)
    assert not torch.allclose(adapted, base)
    assert torch.equal(again, adapted)


def test_disable_adapters_restores_on_exception():
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    with pytest.raises(KeyError):
        with disable_adapters(model):
            raise KeyError("boom")
    assert not any(m.disabled for m in model.modules() if isinstance(m, LoRALinear))


def test_disable_adapters_on_merged_model_is_an_error():
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        with disable_adapters(model):
            pass


def test_helpers_on_a_model_without_adapters_are_errors():
    for fn in (merge_lora, unmerge_lora):
        with pytest.raises(ValueError, match="inject_lora"):
            fn(Toy())
    with pytest.raises(ValueError, match="inject_lora"):
        with disable_adapters(Toy()):
            pass


def test_merge_unmerge_restores_weights_and_merged_equals_unmerged(tiny_lm):
    model = tiny_lm
    inject_lora(model, r=4, alpha=8)
    randomize_b(model)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        unmerged = model(ids)
        merge_lora(model)
        merge_lora(model)  # idempotent
        merged = model(ids)
        unmerge_lora(model)
        unmerge_lora(model)
        restored = model(ids)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(restored, unmerged, rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=1e-6, msg=k)


def test_train_and_eval_never_merge():
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    model.eval()
    assert not any(m.merged for m in layers)
    merge_lora(model)
    model.train()
    assert all(m.merged for m in layers)


LLAMA_8B = dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=False)
# Llama 3.1 8B: q/o are 4096 -> 4096 and k/v are 4096 -> 8*128 = 1024, so r * (in + out) per layer is
# q 32*8192, k 32*5120, v 32*5120, o 32*8192, over 32 layers:
LLAMA_8B_LORA_PARAMS = 32 * 32 * (8192 + 5120 + 5120 + 8192)
LLAMA_8B_BASE_PARAMS = 8_030_261_248


def test_llama_8b_lora_count_formula():
    assert LLAMA_8B_LORA_PARAMS == 27_262_976


def test_llama_8b_trainable_count_on_meta_device():
    from minigrpo.models import CausalLM, ModelConfig

    with torch.device("meta"):  # shapes only: no memory for 8B weights
        model = CausalLM(ModelConfig.from_hf_config(LLAMA_8B))
    summary = inject_lora(model, r=32, alpha=64)
    assert summary.trainable_params == LLAMA_8B_LORA_PARAMS
    assert summary.total_params - LLAMA_8B_LORA_PARAMS == LLAMA_8B_BASE_PARAMS
    assert len(summary.wrapped) == 128


def test_llama_8b_trainable_count_matches_transformers_model():
    transformers = pytest.importorskip("transformers")
    cfg = {k: v for k, v in LLAMA_8B.items() if k != "model_type"}
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    assert inject_lora(model, r=32, alpha=64).trainable_params == LLAMA_8B_LORA_PARAMS


def test_bf16_merge_unmerge_is_close_but_not_bit_exact():
    # Documented limitation: W + d - d rounds twice in bf16, so only ~1 bf16 ulp of |W| is promised back.
    torch.manual_seed(0)
    model = Toy().to(torch.bfloat16)
    inject_lora(model, r=2, alpha=4)
    randomize_b(model)
    w = model.layers[0]["self_attn"].q_proj.base_layer.weight
    w0 = w.detach().clone()
    merge_lora(model)
    unmerge_lora(model)
    torch.testing.assert_close(w.float(), w0.float(), rtol=2**-7, atol=2**-9)


def test_remove_lora_puts_the_original_linears_back():
    from minigrpo.lora import remove_lora

    torch.manual_seed(0)
    model = Toy()
    q = model.layers[0]["self_attn"].q_proj
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        base = model(ids)
    inject_lora(model, r=2, alpha=4)
    randomize_b(model)
    merge_lora(model)
    remove_lora(model)  # unmerges first
    assert model.layers[0]["self_attn"].q_proj is q and not hasattr(model, "lora_config")
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base, rtol=1e-5, atol=1e-6)
