"""dkdlib.notebook: what a learner reads in chapter 1 when the ImageNet weights are out of reach."""

import sys


def test_imagenet_weights_offline_is_one_plain_sentence(monkeypatch, capsys):
    import dkdlib.models as models
    from dkdlib import notebook

    def offline():
        sys.stderr.write('Downloading: "https://download.pytorch.org/models/resnet18.pth"\n')
        return "could not fetch (URLError: <urlopen error [Errno -2] Name or service not known>)"

    monkeypatch.delenv("DKDLIB_IMAGENET", raising=False)
    monkeypatch.setenv("DKDLIB_MODE", "fast")
    monkeypatch.setattr(models, "imagenet_weights_error", offline)
    ok, message = notebook.imagenet_weights()
    assert not ok
    assert message.count(".") == 1 and "URL" not in message and "http" not in message
    assert "CIFAR-stem teacher only" in message
    captured = capsys.readouterr()
    assert "Downloading" not in captured.err + captured.out, "the download attempt is not printed"
