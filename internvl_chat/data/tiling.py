"""Dynamic tiling (InternVL `dynamic_preprocess`, spec §5.3). PIL only, no torch."""

from __future__ import annotations

from PIL import Image


def candidate_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """Every (cols, rows) with ``min_num <= cols*rows <= max_num``, ascending by tile count.

    Built as a set and then sorted by area, in the same insertion order as the reference, so
    equal-area grids (which only matter on an exact ratio tie) come out in the same order.
    """
    grids = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return sorted(grids, key=lambda g: g[0] * g[1])


def find_grid(
    width: int, height: int, min_num: int, max_num: int, image_size: int
) -> tuple[int, int]:
    """The (cols, rows) grid for an image: the closest aspect ratio; on an exact tie the
    later (larger) grid wins only if the image area exceeds half of that grid's pixel area."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def num_tiles(grid: tuple[int, int], use_thumbnail: bool) -> int:
    n = grid[0] * grid[1]
    return n + 1 if use_thumbnail and n != 1 else n


def plan_tiles(
    size: tuple[int, int],
    *,
    dynamic: bool,
    min_num: int,
    max_num: int,
    image_size: int,
    use_thumbnail: bool,
) -> tuple[tuple[int, int], int]:
    """(grid, tile count) for an image of ``size`` (width, height) under these settings."""
    if not dynamic:
        return (1, 1), 1
    grid = find_grid(size[0], size[1], min_num, max_num, image_size)
    return grid, num_tiles(grid, use_thumbnail)


def tile_image(
    image: Image.Image, grid: tuple[int, int], image_size: int, use_thumbnail: bool
) -> list[Image.Image]:
    """Resize to the grid (PIL's default resampling, bicubic for RGB), crop row-major, and
    append the whole image as a thumbnail last when there is more than one tile."""
    cols, rows = grid
    resized = image.resize((image_size * cols, image_size * rows))
    tiles = []
    for k in range(cols * rows):
        x, y = (k % cols) * image_size, (k // cols) * image_size
        tiles.append(resized.crop((x, y, x + image_size, y + image_size)))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles


def num_image_token(image_size: int, patch_size: int, downsample_ratio: float) -> int:
    """Tokens per tile after pixel shuffle: (image_size // patch)^2 * ratio^2 (256 at 448/14/0.5)."""
    return int((image_size // patch_size) ** 2 * downsample_ratio**2)
