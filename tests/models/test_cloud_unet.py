"""The trainable cloud UNet: its soft F-beta loss and that it learns a cloud mask on synthetic scenes."""

import torch

from models.cloud_unet import IGNORE_INDEX, build_cloud_unet, soft_fbeta_loss, train_step


def synthetic_batch(seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark land with bright, spectrally flat blobs ("clouds"); labels from the blobs, a border unlabelled."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(8, 4, size, size, generator=generator) * 0.15
    target = torch.zeros(8, size, size, dtype=torch.int64)
    for index in range(8):
        row, col = torch.randint(0, size - 12, (2,), generator=generator).tolist()
        images[index, :, row : row + 12, col : col + 12] = 0.6 + 0.1 * torch.rand(1, generator=generator)
        target[index, row : row + 12, col : col + 12] = 1
    target[:, 0, :] = IGNORE_INDEX
    return images, target


def test_the_loss_is_zero_for_a_perfect_map_and_one_for_a_map_with_no_cloud():
    _, target = synthetic_batch(0)
    perfect = torch.stack([(target != 1).float(), (target == 1).float()], dim=1) * 40 - 20
    assert float(soft_fbeta_loss(perfect, target)) < 1e-3
    assert float(soft_fbeta_loss(-perfect, target)) > 0.99


def test_f2_punishes_missed_clouds_more_than_false_alarms():
    _, target = synthetic_batch(1)
    cloud = (target == 1).float()
    misses_half = cloud.clone()
    misses_half[:, :, :16] = 0  # half the clouds missed
    alarms = ((cloud + (torch.rand_like(cloud) < 0.05).float()) > 0).float()  # every cloud plus false alarms
    as_logits = lambda m: torch.stack([1 - m, m], dim=1) * 40 - 20  # noqa: E731
    f1_miss, f1_alarm = (
        soft_fbeta_loss(as_logits(misses_half), target, 1),
        soft_fbeta_loss(as_logits(alarms), target, 1),
    )
    f2_miss, f2_alarm = (
        soft_fbeta_loss(as_logits(misses_half), target, 2),
        soft_fbeta_loss(as_logits(alarms), target, 2),
    )
    assert f2_miss - f2_alarm > f1_miss - f1_alarm


def test_a_few_steps_learn_the_synthetic_clouds():
    torch.manual_seed(0)
    model = build_cloud_unet(base_width=8, levels=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, target = synthetic_batch(2)
    losses = [train_step(model, optimizer, images, target, beta=2.0) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    test_images, test_target = synthetic_batch(3)
    with torch.inference_mode():
        predicted = model(test_images).argmax(1)
    labelled = test_target != IGNORE_INDEX
    tp = ((predicted == 1) & (test_target == 1) & labelled).sum().item()
    f1 = 2 * tp / (((predicted == 1) & labelled).sum().item() + ((test_target == 1) & labelled).sum().item())
    assert f1 > 0.9, f1


def test_a_checkpoint_round_trip_gives_the_same_predictions(tmp_path):
    from models.weights import check_state_dict

    torch.manual_seed(1)
    model = build_cloud_unet(base_width=8, levels=2).eval()
    path = tmp_path / "cloud_unet.pt"
    torch.save(model.state_dict(), path)
    restored = build_cloud_unet(base_width=8, levels=2)
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_state_dict(restored, state, path.name)
    restored.load_state_dict(state)
    images, _ = synthetic_batch(4)
    with torch.inference_mode():
        torch.testing.assert_close(restored.eval()(images), model(images))
