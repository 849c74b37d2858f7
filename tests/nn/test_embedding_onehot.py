import torch

from cellvi.nn import Embedding, one_hot


def test_one_hot_from_vector_and_column():
    codes = torch.tensor([0, 2, 1])
    expected = torch.eye(3)[[0, 2, 1]]
    torch.testing.assert_close(one_hot(codes, 3), expected)
    torch.testing.assert_close(one_hot(codes[:, None].float(), 3), expected)


def test_embedding_accepts_vector_and_column_codes():
    torch.manual_seed(0)
    emb = Embedding(4, 5, padding_idx=0)
    codes = torch.tensor([3, 0, 1])
    out = emb(codes)
    assert out.shape == (3, 5)
    torch.testing.assert_close(emb(codes[:, None].float()), out)
    assert torch.equal(out[1], torch.zeros(5))
