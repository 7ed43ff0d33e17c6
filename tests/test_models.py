import pytest
import torch

from rtseg.models import create_model, list_models
from rtseg.models.resunet import ResUNet3D


@pytest.mark.parametrize("name, downs", [("ResUnet_3D", 3), ("Deeper_ResUnet_3D", 4)])
def test_models_shapes_and_depth(name, downs):
    m = create_model(name, in_channels=1, n_classes=6, base_filters=4)
    assert len(m.down) == downs
    assert m.down[-1].body[3].out_channels == 4 * 2**downs  # widths double per level
    x = torch.randn(2, 1, 32, 32, 32)
    assert m(x).shape == (2, 6, 32, 32, 32)


def test_non_multiple_input_is_padded_and_cropped():
    m = create_model("Deeper_ResUnet_3D", base_filters=2, n_classes=3).eval()
    x = torch.randn(1, 1, 21, 30, 17)
    assert m(x).shape == (1, 3, 21, 30, 17)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = create_model("ResUnet_3D", base_filters=4, dropout=0.5)
    x = torch.randn(1, 1, 16, 16, 16)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.allclose(m(x), m(x))


def test_registry_errors():
    assert {"ResUnet_3D", "Deeper_ResUnet_3D", "ARPM_net"} <= set(list_models())
    with pytest.raises(ValueError, match="valid names: .*ResUnet_3D"):
        create_model("UNet3D")
    with pytest.raises(ValueError, match="unexpected keyword"):
        create_model("ResUnet_3D", base_filter=8)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        ResUNet3D(n_classes=1)
    with pytest.raises(ValueError, match="dropout"):
        ResUNet3D(dropout=1.5)
