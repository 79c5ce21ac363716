"""Dynamic tiling parity (spec §5.3) and per-template prompts and loss masks (spec §6)."""

import pytest
from PIL import Image

from internvl_chat.data.templates import (
    IGNORE_INDEX,
    SampleError,
    encode,
    get_template,
    normalize_conversation,
    render,
)
from internvl_chat.data.tiling import find_grid, num_image_token, num_tiles, tile_image
from internvl_chat.tokenizer import load_tokenizer, save_tiny_tokenizer


@pytest.mark.parametrize(
    ("size", "grid", "tiles"),
    [
        ((448, 448), (1, 1), 1),  # area 200704 is not > 0.5*448^2*4: stays 1x1, no thumbnail
        ((800, 800), (2, 2), 5),  # exact tie 1x1 vs 2x2: area 640000 > 401408 -> 2x2
        ((634, 634), (2, 2), 5),  # 401956 > 401408
        ((633, 633), (1, 1), 1),  # 400689 < 401408
        ((896, 448), (2, 1), 3),  # 2x1; the 4x2 tie needs area > 802816
        ((1000, 10), (12, 1), 13),  # extreme aspect ratios clamp at 12 tiles
        ((10, 1000), (1, 12), 13),
        ((640, 480), (4, 3), 13),  # 4:3 exactly -> 12 + thumbnail
        ((1920, 1080), (4, 2), 9),
        ((300, 1000), (1, 3), 4),
    ],
)
def test_tile_grid_table(size, grid, tiles):
    assert find_grid(*size, 1, 12, 448) == grid
    assert num_tiles(grid, use_thumbnail=True) == tiles


def test_tokens_per_tile_and_tile_order():
    assert num_image_token(448, 14, 0.5) == 256
    assert num_image_token(224, 14, 1.0) == 256
    # A 2x1 image whose left half is red and right half blue: tiles are row-major, thumb last.
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))
    tiles = tile_image(img, (2, 1), 28, use_thumbnail=True)
    assert [t.size for t in tiles] == [(28, 28)] * 3
    assert tiles[0].getpixel((14, 14)) == (255, 0, 0)
    assert tiles[1].getpixel((14, 14)) == (0, 0, 255)
    assert tiles[2].getpixel((2, 14)) == (255, 0, 0) and tiles[2].getpixel((25, 14)) == (0, 0, 255)
    assert len(tile_image(img, (1, 1), 28, use_thumbnail=True)) == 1


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    return {
        fam: load_tokenizer(save_tiny_tokenizer(tmp_path_factory.mktemp(fam), fam))
        for fam in ("internlm2", "qwen2")
    }


CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the shape? "},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "What shape is this?"},
    {"from": "gpt", "value": " circle "},
]
EXPECTED = {
    "internlm2-chat": (
        "<s><|im_start|>system\nSYS<|im_end|><|im_start|>user\n<img>{ctx}</img>\nWhat colour is "
        "the shape?<|im_end|><|im_start|>assistant\nred<|im_end|><|im_start|>user\nWhat shape is "
        "this?<|im_end|><|im_start|>assistant\ncircle<|im_end|>",
        ["red<|im_end|>", "circle<|im_end|>"],
    ),
    "Hermes-2": (  # only internlm2-chat strips values (as the official preprocess functions)
        "<|im_start|>system\nSYS<|im_end|><|im_start|>user\n<img>{ctx}</img>\nWhat colour is "
        "the shape? <|im_end|><|im_start|>assistant\nred<|im_end|><|im_start|>user\nWhat shape "
        "is this?<|im_end|><|im_start|>assistant\n circle <|im_end|>",
        ["red<|im_end|>", " circle <|im_end|>"],
    ),
    "phi3-chat": (
        "<|system|>\nSYS<|end|><|user|>\n<img>{ctx}</img>\nWhat colour is the shape? <|end|>"
        "<|assistant|>\nred<|end|><|user|>\nWhat shape is this?<|end|><|assistant|>\n circle "
        "<|end|>",
        ["red<|end|>", " circle <|end|>"],
    ),
    "internvl2_5": (  # values are not stripped; "\n" after every <|im_end|> is not supervised
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n<img>{ctx}</img>\nWhat colour is "
        "the shape? <|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\nWhat "
        "shape is this?<|im_end|>\n<|im_start|>assistant\n circle <|im_end|>\n",
        ["red<|im_end|>", " circle <|im_end|>"],
    ),
}


def _spans(ids, labels):
    """Contiguous supervised runs as id lists."""
    runs, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize(
    ("family", "style"), [("internlm2", "internlm2-chat")] + [("qwen2", s) for s in EXPECTED]
)
def test_prompt_and_loss_mask(toks, style, family):
    tok = toks[family]
    t = get_template(style)
    system, turns = normalize_conversation(CONV, t, 1, insert_image=True)
    enc = encode(render(t, "SYS", turns), tok, [2], 3, 4096)
    text, supervised = EXPECTED[style]
    if family == "qwen2":
        text = text.removeprefix("<s>")
    assert tok.decode(enc.input_ids) == text.format(ctx="<IMG_CONTEXT>" * 6)
    assert enc.num_image_tokens == 6
    assert [tok.decode(r) for r in _spans(enc.input_ids, enc.labels)] == supervised


def test_image_placeholder_inserted_and_counted():
    t = get_template("Hermes-2")
    conv = [
        {"from": "gpt", "value": "hi"},
        {"from": "human", "value": "Q"},
        {"from": "gpt", "value": "A"},
    ]
    system, turns = normalize_conversation(conv, t, 0, insert_image=False)
    assert system is None and turns == [("human", "Q"), ("gpt", "A")]  # leading gpt dropped
    # official order: "<image>\n" goes onto the FIRST entry (the gpt turn), which is then
    # dropped, so the image has no placeholder left: refused (HEAD asserts, PIN mis-trains)
    with pytest.raises(SampleError, match="0 <image> placeholder"):
        normalize_conversation(conv, t, 1, insert_image=True)
    conv[1]["value"] = "<image>\nQ"
    assert normalize_conversation(conv, t, 1, insert_image=True)[1][0] == ("human", "<image>\nQ")
    with pytest.raises(SampleError, match="1 <image> placeholder.*for 2 image"):
        normalize_conversation(CONV, t, 2, insert_image=False)
    with pytest.raises(SampleError, match="alternate.*no assistant") as e:
        normalize_conversation(
            [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], t, 0, False
        )
    assert "alternate" in str(e.value)
    with pytest.raises(SampleError, match="only supported by internvl2_5"):
        normalize_conversation([{"from": "system", "value": "s"}] + CONV, t, 1, False)
    system, _ = normalize_conversation(
        [{"from": "system", "value": "mine"}] + CONV, get_template("internvl2_5"), 1, False
    )
    assert system == "mine"


@pytest.mark.parametrize(("size", "grid"), [((1000, 750), (4, 3)), ((700, 300), (2, 1))])
def test_fused_tiles_match_pil_tiles_within_a_level(size, grid):
    """The eval path (torch uint8 resize, one reshape) against ``tile_image`` + the per-tile
    PIL ``Transform``: same layout (row-major, thumbnail last), and pixel values within 2 of
    255 on under 1% of values (the fixed-point rounding of the two bicubic kernels)."""
    import numpy as np
    import torch

    from internvl_chat.data.dataset import Transform, image_tiles

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    base = np.stack([x / size[0], y / size[1], (x + y) / sum(size)], -1) * 200
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    tf = Transform(False, 56, False, "imagenet")
    fused = image_tiles(img, grid, tf, use_thumbnail=True, rng=None)
    ref = torch.stack([tf(t, None) for t in tile_image(img, grid, 56, use_thumbnail=True)])
    assert fused.shape == ref.shape == (grid[0] * grid[1] + 1, 3, 56, 56)
    levels = ((fused - ref) * tf.std * 255).abs()  # back to 0..255 steps
    assert levels.max() < 2.01
    assert (levels > 0.5).float().mean() < 0.01
    white = Image.new("RGB", (224, 224), (255, 255, 255))  # the text-only dummy tile
    w_fused = image_tiles(white, (1, 1), tf, use_thumbnail=False, rng=None)
    assert torch.equal(w_fused[0], tf(white, None))
