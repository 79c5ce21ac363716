"""`.venv-xtuner/bin/python xtuner_cfgs/make_tiny_llava.py OUT_DIR [--samples N]`

Writes, with no download, everything a tiny XTuner LLaVA pretrain needs:

    OUT_DIR/llm/             random LlamaForCausalLM + fast tokenizer (HF folder layout)
    OUT_DIR/clip/            random CLIPVisionModel + CLIPImageProcessor (28 px, 14 px patches)
    OUT_DIR/data/blip_laion_cc_sbu_558k.json   JSON array in LLaVA-Pretrain format
    OUT_DIR/data/images/00000/*.jpg            small coloured-shape images it refers to

The LLM is Llama, a class native to transformers 4.48, so nothing needs remote code; and
XTuner's LLaVA -> HuggingFace export (`pth_to_hf --save-format huggingface`) only supports a
Llama LLM. InternLM2 (the real seed-001 LLM) is remote code only, so it is not used here; the
tokenizer carries its chat tokens (<|im_start|>, <|im_end|>) so the internlm2_chat template of
seed 001 applies unchanged. Runs in the XTuner environment (transformers 4.48).
"""

import argparse
import json
import random
from pathlib import Path

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 170),
    "white": (245, 245, 245),
}
SHAPES = ("square", "circle", "bar", "cross")
ASKS = (
    "Describe the image briefly.",
    "What is in this picture?",
    "Give a short caption.",
    "Summarize the visual content.",
)
SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def caption_for(rng):
    fg, bg = rng.sample(sorted(COLOURS), 2)
    shape = rng.choice(SHAPES)
    return fg, bg, shape, f"a {fg} {shape} on a {bg} background"


def draw(fg, bg, shape, size, rng):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, COLOURS[bg])
    d = ImageDraw.Draw(img)
    x0, y0 = rng.randint(0, w // 3), rng.randint(0, h // 3)
    x1, y1 = x0 + w // 2, y0 + h // 2
    if shape == "square":
        d.rectangle([x0, y0, x1, y1], fill=COLOURS[fg])
    elif shape == "circle":
        d.ellipse([x0, y0, x1, y1], fill=COLOURS[fg])
    elif shape == "bar":
        d.rectangle([0, y0, w, y0 + h // 6], fill=COLOURS[fg])
    else:
        d.rectangle([x0, (y0 + y1) // 2 - 2, x1, (y0 + y1) // 2 + 2], fill=COLOURS[fg])
        d.rectangle([(x0 + x1) // 2 - 2, y0, (x0 + x1) // 2 + 2, y1], fill=COLOURS[fg])
    return img


def make_data(out: Path, samples: int, seed: int) -> None:
    rng = random.Random(seed)
    images = out / "data" / "images" / "00000"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(samples):
        fg, bg, shape, caption = caption_for(rng)
        name = f"00000/{i:09d}.jpg"
        size = (rng.randint(28, 64), rng.randint(28, 64))
        draw(fg, bg, shape, size, rng).save(out / "data" / "images" / name, quality=90)
        ask = rng.choice(ASKS)
        human = f"<image>\n{ask}" if i % 2 == 0 else f"{ask}\n<image>"
        # Integer ids occur in the real file; XTuner turns them into strings.
        rid = i if i % 5 == 0 else f"{i:09d}"
        records.append(
            {
                "id": rid,
                "image": name,
                "conversations": [
                    {"from": "human", "value": human},
                    {"from": "gpt", "value": caption},
                ],
            }
        )
    (out / "data" / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records, indent=1))


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # A fixed corpus (every caption and prompt this script can write), so the vocabulary does
    # not depend on --samples: the configs give ThroughputHook its size.
    corpus = (
        [
            f"a {fg} {shape} on a {bg} background"
            for fg in COLOURS
            for bg in COLOURS
            for shape in SHAPES
        ]
        + list(ASKS)
        + ["user", "assistant", "system", "\n"]
    )
    tok.train_from_iterator(corpus * 2, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        # XTuner's collate pads with id 0 and masks `input_ids != 0`: id 0 is <unk>.
        pad_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def make_llm(out: Path, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    LlamaForCausalLM(cfg).save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")


def make_clip(out: Path, seed: int):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,  # LLaVA reads hidden_states[-2]
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        torch_dtype="float32",
    )
    CLIPVisionModel(cfg).save_pretrained(out / "clip")
    CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    ).save_pretrained(out / "clip")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="model,data", help="comma list of: model, data")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    parts = set(a.parts.split(","))
    if "data" in parts:
        make_data(a.out, a.samples, a.seed)
    tokenizer = make_tokenizer()
    if "model" in parts:
        make_llm(a.out, tokenizer, a.seed)
        make_clip(a.out, a.seed)
    print(json.dumps({"out": str(a.out), "samples": a.samples, "vocab_size": len(tokenizer)}))


if __name__ == "__main__":
    main()
