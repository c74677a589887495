"""The banded full-size post-processing behind CDAM's predictions: labels and probabilities at the image
size equal those of upsampling the whole logit map at once, whatever the band size."""
import unittest

import torch
import torch.nn.functional as F


class TestFullSizePredictions(unittest.TestCase):
    def test_equals_whole_map_upsampling(self):
        from cdam_d2.cdam.modeling.full_size import full_size_predictions, upsample_rows
        from cdam_d2.cdam.modeling.postprocess import class_probabilities, encode_background

        generator = torch.Generator().manual_seed(0)
        query_to_class = (0, 1, 1, 2, 3, 3, 3)
        for low, high in [((56, 75), (375, 500)), ((67, 93), (50, 71)), ((5, 7), (11, 3)), ((40, 40), (40, 40))]:
            logits = 0.1 * torch.randn(len(query_to_class), *low, generator=generator)
            whole = F.interpolate(logits[None], size=high, mode="bilinear", align_corners=False)[0]
            self.assertLess((upsample_rows(logits, 0, high[0], high) - whole).abs().max().item(), 2e-6)
            probs = class_probabilities(whole, query_to_class, 4, 50.0)
            threshold = float(probs.amax(0).median())  # half of the pixels are thresholded to class 0
            expected = encode_background(probs, threshold).argmax(0)
            labels, probabilities = full_size_predictions(logits, high, query_to_class, 4, 50.0, threshold)
            self.assertEqual((labels.dtype, probabilities.dtype), (torch.int32, torch.float32))
            self.assertLess((probabilities - probs).abs().max().item(), 1e-5)
            # Labels agree except where rounding of the resize can flip a near-tie or the threshold test.
            top2 = probs.topk(min(2, probs.shape[0]), dim=0).values
            near_tie = ((top2[0] - top2[-1]) < 1e-5) | ((probs.amax(0) - threshold).abs() < 1e-5)
            self.assertTrue(torch.equal(labels.long()[~near_tie], expected[~near_tie]))
            self.assertLessEqual(int(near_tie.sum()), max(2, near_tie.numel() // 100))  # nearly every pixel compared

    def test_band_size_changes_only_rounding(self):
        from cdam_d2.cdam.modeling.full_size import full_size_predictions

        logits = 0.1 * torch.randn(5, 30, 41, generator=torch.Generator().manual_seed(1))
        labels, probabilities = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4)
        top2 = probabilities.topk(2, dim=0).values
        decided = ((top2[0] - top2[1]) > 1e-5) & ((probabilities.amax(0) - 0.4).abs() > 1e-5)
        for band_elements in (1, 5 * 131 * 7, 10 ** 9):  # one row, seven rows, one band
            banded = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4,
                                           band_elements=band_elements)
            self.assertTrue(torch.equal(banded[0][decided], labels[decided]))
            self.assertLess((banded[1] - probabilities).abs().max().item(), 1e-6)
        without = full_size_predictions(logits, (97, 131), (0, 1, 2, 2, 3), 4, 50.0, 0.4, False)
        self.assertIsNone(without[1])
        self.assertTrue(torch.equal(without[0], labels))


if __name__ == "__main__":
    unittest.main()
