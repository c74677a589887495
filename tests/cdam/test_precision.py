"""CDAM map precision: the fast fp32 path against a float64 evaluation of the released formulas is at least as
accurate as the released formulas evaluated in fp32, on peaked and on flat class distributions.

Flat distributions (nearly equal cosines, e.g. a uniform region) are the hard case: JS values ~1e-3, and the
row min-max of the map divides their differences by a small range.
"""
import unittest

import torch

from cdam_d2.cdam.modeling.cdam_attention import cdam_attention, class_distributions, js_divergence
from tests.cdam.test_reference import released_cdam_map, released_js

QUERIES, GRID = 101, (16, 14)
KINDS = {"peaked": 0.3, "flat": 0.01}  # spread of the cosine logits (T = 0.1)


def cosine_logits(spread: float, seed: int) -> torch.Tensor:
    """(1, Q, g_h, g_w) fp32 cosine-like logits around 0.2."""
    generator = torch.Generator().manual_seed(seed)
    return 0.2 + spread * torch.randn(1, QUERIES, *GRID, generator=generator)


def max_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return (value.double() - reference).abs().max().item()


class TestPrecisionAgainstFloat64(unittest.TestCase):
    def test_js_divergence(self):
        for kind, spread in KINDS.items():
            logits = cosine_logits(spread, seed=1).flatten(2)
            reference = released_js(torch.softmax(logits.double() / 0.1, dim=1)[0])
            released_fp32 = max_error(released_js(torch.softmax(logits / 0.1, dim=1)[0]), reference)
            fast = max_error(js_divergence(class_distributions(logits, 0.1))[0], reference)
            self.assertLessEqual(fast, released_fp32, kind)
            self.assertLess(fast, 1e-6, kind)

    def test_cdam_map(self):
        for kind, spread in KINDS.items():
            logits = cosine_logits(spread, seed=2)
            reference = released_cdam_map(logits[0].double())
            released_fp32 = max_error(released_cdam_map(logits[0], dtype=torch.float32), reference)
            fast = max_error(cdam_attention(logits)[0], reference)
            self.assertLessEqual(fast, released_fp32, kind)
            # the fast formulation is the released one exactly (eps terms included), not an approximation
            self.assertLess(max_error(cdam_attention(logits.double())[0], reference), 1e-9, kind)


if __name__ == "__main__":
    unittest.main()
