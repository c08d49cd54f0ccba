"""Presto: the port against the upstream reference's embeddings, per-pixel masks, loading checks, AMP."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelError
from models import presto
from models.presto_heads import WEIGHTS_DIR

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "presto" / "reference_embeddings.npz"
CHECKPOINTS = ("presto_default_model", "presto_worldcereal_finetuned")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


def run(encoder: presto.PrestoEncoder, ref: dict[str, np.ndarray], **kwargs: object) -> np.ndarray:
    months = presto.months_from(ref["start_month"], ref["x"].shape[1])
    return presto.embed(encoder, ref["x"], ref["missing"], ref["latlon_deg"], months, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_the_port_matches_the_reference_embeddings_of_real_samples(checkpoint, reference):
    encoder = presto.load_encoder(WEIGHTS_DIR / "presto" / f"{checkpoint}.pt")
    embeddings = run(encoder, reference, batch_size=64)
    difference = np.abs(embeddings - reference[f"embedding_{checkpoint}"])
    assert difference.mean() <= 1e-5, difference.mean()
    assert difference.max() <= 1e-4, difference.max()


def test_each_pixel_keeps_its_own_gaps_in_a_batch(reference):
    """Upstream needs equal masks across a batch; here a batch of pixels with different gaps (fixture rows 0-19
    have S1, a month of S2 or the weather masked) gives each pixel the embedding it gets alone."""
    encoder = presto.load_encoder(WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt")
    assert len({m.tobytes() for m in reference["missing"]}) > 10
    together = run(encoder, reference, batch_size=64)
    alone = np.concatenate(
        [run(encoder, {k: v[i : i + 1] for k, v in reference.items()}, batch_size=1) for i in range(24)]
    )
    assert np.abs(together[:24] - alone).max() <= 1e-5


def test_a_masked_value_does_not_change_the_embedding(reference):
    encoder = presto.load_encoder(WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt")
    garbled = dict(reference)
    garbled["x"] = np.where(reference["missing"], 1e3, reference["x"]).astype(np.float32)
    assert np.abs(run(encoder, garbled) - run(encoder, reference)).max() <= 1e-5


def test_a_file_that_does_not_fit_is_refused_with_the_keys_it_lacks(tmp_path):
    state = torch.load(WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt", weights_only=True)
    broken = {k: v for k, v in state.items() if "blocks.1" not in k}
    broken["encoder.norm.weight"] = torch.zeros(64)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ModelError, match=r"missing 12 keys \(blocks\.1\..*shapes differ \(norm\.weight"):
        presto.load_encoder(tmp_path / "broken.pt")
    (tmp_path / "text.pt").write_text("not a state dict")
    with pytest.raises(ModelError, match="not a PyTorch state dict"):
        presto.load_encoder(tmp_path / "text.pt")
    torch.save({"head.weight": torch.zeros(2, 128)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="keys Presto does not know: head.weight"):
        presto.load_encoder(tmp_path / "other.pt")


def test_a_changed_weights_file_is_caught_by_its_sha256(tmp_path):
    copy = tmp_path / "presto.pt"
    copy.write_bytes((WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        presto.load_encoder(copy, "0" * 64)


def test_bf16_autocast_gives_embeddings_close_to_fp32(reference):
    """AMP on the CPU (bf16): embeddings close to fp32 (bench/crop_presto.py measures the argmax agreement)."""
    encoder = presto.load_encoder(WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt")
    fp32 = run(encoder, reference)
    bf16 = run(encoder, reference, autocast_dtype=torch.bfloat16)
    assert bf16.dtype == np.float32
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99, cosine.min()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_port_runs_on_cuda_with_the_same_embeddings(reference):
    encoder = presto.load_encoder(WEIGHTS_DIR / "presto" / "presto_worldcereal_finetuned.pt")
    cpu = run(encoder, reference)
    cuda = run(encoder, reference, device="cuda")
    assert np.abs(cpu - cuda).mean() <= 1e-4
