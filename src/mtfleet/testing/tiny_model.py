"""The tests' name for `mtfleet.random_models`, the random-weight models of each family.

python -m mtfleet.testing.tiny_model DIR [--arch ...]
"""

from mtfleet.random_models import (
    ARCHITECTURES,
    build_tiny_indictrans2,
    build_tiny_m2m100,
    build_tiny_marian,
    build_tiny_marian_multi,
    build_tiny_mbart50,
    build_tiny_model,
    build_tiny_nllb,
    build_tiny_t5,
    main,
    sample_sentences,
    varied_segments,
)

__all__ = [
    "ARCHITECTURES",
    "build_tiny_indictrans2",
    "build_tiny_m2m100",
    "build_tiny_marian",
    "build_tiny_marian_multi",
    "build_tiny_mbart50",
    "build_tiny_model",
    "build_tiny_nllb",
    "build_tiny_t5",
    "main",
    "sample_sentences",
    "varied_segments",
]

if __name__ == "__main__":
    main()
