
import pytest
import torch

from edgeseg.distillation.losses import match_size, pixel_kl


def test_pixel_kl_matches_hand_computation():
    student = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    teacher = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    t = 2.0
    p = torch.softmax(teacher.flatten() / t, 0)
    q = torch.softmax(student.flatten() / t, 0)
    expected = float((p * (p / q).log()).sum()) * t * t
    assert float(pixel_kl(student, teacher, t)) == pytest.approx(expected, rel=1e-6)


def test_pixel_kl_is_zero_for_identical_logits_and_averaged_over_pixels():
    logits = torch.randn(2, 5, 4, 4)
    assert float(pixel_kl(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    one = pixel_kl(logits[:, :, :1, :1], logits[:, :, :1, :1].roll(1, 1), 1.0)
    tiled = pixel_kl(logits[:, :, :1, :1].expand(2, 5, 3, 3), logits[:, :, :1, :1].roll(1, 1).expand(2, 5, 3, 3), 1.0)
    assert float(one) == pytest.approx(float(tiled), rel=1e-5)


def test_teacher_logits_resized_to_student():
    teacher = torch.randn(1, 3, 8, 8)
    student = torch.randn(1, 3, 4, 4)
    resized = match_size(teacher, student)
    # 8x8 -> 4x4 bilinear without corner alignment averages each 2x2 block
    assert torch.allclose(resized, teacher.reshape(1, 3, 4, 2, 4, 2).mean(dim=(3, 5)), atol=1e-6)
    assert match_size(student, student) is student


def test_channel_wise_matches_hand_computation():
    from edgeseg.distillation.losses import channel_wise

    student = torch.tensor([[[[0.0, 1.0]], [[2.0, 0.0]]]])  # N=1, C=2, H=1, W=2
    teacher = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    t = 2.0
    total = 0.0
    for c in range(2):
        p = torch.softmax(teacher[0, c].flatten() / t, 0)
        q = torch.softmax(student[0, c].flatten() / t, 0)
        total += float((p * (p / q).log()).sum())
    assert float(channel_wise(student, teacher, t)) == pytest.approx(total / 2 * t * t, rel=1e-6)


def test_channel_wise_ignores_a_per_channel_offset_but_not_a_spatial_shift():
    from edgeseg.distillation.losses import channel_wise

    teacher = torch.randn(2, 3, 5, 5)
    assert float(channel_wise(teacher + 7.0, teacher)) == pytest.approx(0.0, abs=1e-5)
    assert float(channel_wise(teacher.roll(1, dims=-1), teacher)) > 0.01


def test_feature_loss_with_connector_and_resize():
    from edgeseg.distillation.losses import FeatureConnector, feature_loss

    connector = FeatureConnector(4, 6)
    student, teacher = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 16, 16)
    loss = feature_loss(connector(student), teacher, "mse")
    loss.backward()
    assert connector.project.weight.grad is not None and loss.item() > 0
    assert float(feature_loss(teacher, teacher, "mse")) == 0.0
    assert float(feature_loss(teacher, teacher, "cwd")) == pytest.approx(0.0, abs=1e-5)
