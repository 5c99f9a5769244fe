"""A tiny random causal LM with a locally trained tokenizer, built offline in ~1 s.

For tests and benchmarks of the serving paths (Triton): real transformers classes, real
generate(), real chat template and special tokens, no downloaded weights.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "Name three colours: red, green and blue.",
    "A recipe for banana bread needs flour, bananas, eggs and sugar.",
]


def build_tiny_lm(out: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a tiny random Llama-architecture causal LM + byte-level BPE tokenizer to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id,
        # Wide init: peaked logits, so greedy output does not flip on float noise (threads,
        # padding) and batched output can be compared token for token.
        initializer_range=0.5,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def reference_generate(model_dir: Path, text: str, max_new_tokens: int) -> tuple[str, int, int]:
    """Greedy answer computed in this process: (text, prompt tokens, new tokens before the stop
    token). What the Triton model must return for the same prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                 dtype=torch.float32).eval()
    rendered = tok.apply_chat_template([{"role": "user", "content": text}],
                                       add_generation_prompt=True, tokenize=False)
    ids = tok(rendered, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id])
    width = ids["input_ids"].shape[1]
    new = [int(t) for t in out[0, width:].tolist()]
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return str(tok.decode(new, skip_special_tokens=True)).strip(), width, len(new)


VLM_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_vlm(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random LLaVA (2-layer CLIP vision tower on 32x32 images, 16 image tokens,
    the tiny Llama as language model) with its processor (PIL image processor: torchvision
    is not needed) to ``out``; loads with ``AutoModelForImageTextToText``/``AutoProcessor``."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    lm = build_tiny_lm(out.parent / f"{out.name}-lm", seed=seed)
    tok = AutoTokenizer.from_pretrained(lm, local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text_cfg = LlamaConfig.from_pretrained(lm, local_files_only=True)
    text_cfg.vocab_size = len(tok)
    vision_cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=32, patch_size=8,
                                  projection_dim=32, initializer_range=0.5)
    cfg = LlavaConfig(vision_config=vision_cfg, text_config=text_cfg,
                      image_token_index=len(tok) - 1,  # the token just added
                      vision_feature_layer=-1, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                              crop_size={"height": 32, "width": 32}),
        # 16 patches + CLS, CLS dropped by the "default" strategy: 16 tokens per image.
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
        chat_template=VLM_CHAT_TEMPLATE, image_token="<image>", num_additional_image_tokens=1,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def reference_generate_vlm(model_dir: Path, text: str, images: list[bytes],
                           max_new_tokens: int) -> tuple[str, int, int]:
    """Greedy VLM answer computed in this process (one request, no padding)."""
    import io

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True,
                                                        dtype=torch.float32).eval()
    content: list[dict[str, str]] = [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": text})
    rendered = proc.apply_chat_template([{"role": "user", "content": content}],
                                        add_generation_prompt=True, tokenize=False)
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    enc = proc(text=[rendered], images=[pil] if pil else None, return_tensors="pt")
    eos = proc.tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=proc.tokenizer.pad_token_id, eos_token_id=[eos])
    width = enc["input_ids"].shape[1]
    new = [int(t) for t in out[0, width:].tolist()]
    if eos in new:
        new = new[: new.index(eos)]
    return (proc.tokenizer.decode(new, skip_special_tokens=True).strip(),
            int(enc["attention_mask"].sum()), len(new))
