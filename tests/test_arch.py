import pytest
import torch

from edgeseg.arch import canonical_name, create_model, list_models
from edgeseg.arch.profile import count_macs
from edgeseg.errors import ConfigError


@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_every_architecture_returns_logits_at_input_size(name):
    model = create_model(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 5, 64, 64)


def test_required_names_and_aliases():
    names = {e.name for e in list_models()}
    assert {"deeplabv3-resnet50", "lraspp-mobilenetv3-large", "lraspp-mobilenetv3-small", "unet"} <= names
    assert canonical_name("mobilenetv3") == "lraspp-mobilenetv3-large"
    assert canonical_name("mobilenetv3-small") == "lraspp-mobilenetv3-small"


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="Unknown architecture 'resnet9000'"):
        create_model("resnet9000", 3)


def test_macs_of_a_single_conv_by_hand():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    assert count_macs(conv, 8, 8) == 4 * 8 * 8 * 3 * 3 * 3
