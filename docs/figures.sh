#!/usr/bin/env sh
# Regenerate the gallery (docs/gallery.md) in docs/images/ with convfilter itself, so the
# pictures always show what the code does. Run from anywhere, with convfilter
# installed (pip install -e .):  sh docs/figures.sh
#
# To keep the repository small the sample images are first shrunk to a third
# (213x142) by convfilter's own 3x3 average pooling.
set -eu
cd "$(dirname "$0")/.."
out=docs/images
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$out"

for name in china flower; do
    # average pooling with stride = size is a downscale; clip keeps the colours as they are
    convfilter pool --type avg --size 3 --normalize clip "sample_images/$name.jpg" -o "$work/$name.png"
done
china="$work/china.png"

# the book's figure: the 7x7 vertical and horizontal line filters
for name in china flower; do
    convfilter apply -k vertical -k horizontal "$work/$name.png" --montage --with-input \
        -o "$out/book_$name.png"
done

# stride 1 vs 2: the same filter, every second position only
for stride in 1 2; do
    convfilter apply -k vertical --stride "$stride" "$china" --montage -o "$out/stride_$stride.png"
done

# SAME vs VALID: a large box blur shows the zero padding (dark rim) or the smaller output
for padding in same valid; do
    convfilter apply -k box:25 --channels each --padding "$padding" --normalize clip "$china" \
        --montage -o "$out/padding_$padding.png"
done

# the same SAME blur with the padding filled from the image instead of zeros: no dark rim
for border in edge reflect; do
    convfilter apply -k box:25 --channels each --border "$border" --normalize clip "$china" \
        --montage -o "$out/border_$border.png"
done

# max vs average pooling, 3x3 windows over the full-size photo (the avg one is the shrunk input):
# max keeps the brightest pixel of each window, so thin bright details survive and grow
for type in max avg; do
    convfilter pool --type "$type" --size 3 --normalize clip sample_images/china.jpg --montage \
        -o "$out/pool_$type.png"
done

# signed edges: Sobel x and y on the diverging map (VALID: no false edge at the zero padding)
convfilter apply -k sobel-x -k sobel-y --channels gray --padding valid --colormap diverging "$china" \
    --montage -o "$out/sobel_diverging.png"

ls -l "$out"
