"""Backbones by timm name, with a clear error listing close names for an unknown one."""

from __future__ import annotations

from pathlib import Path

from ._errors import ConfigError


def create_model(
    backbone: str,
    *,
    num_classes: int,
    in_chans: int,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
    origin: str | None = None,
):
    """Create a timm classifier; ``pretrained_path`` loads a local weights file through timm.

    Example:
        >>> model = create_model("resnet18", num_classes=2, in_chans=1)
    """
    import timm

    check_backbone(backbone, origin=origin)
    kwargs = local_weights(pretrained_path, origin=origin)
    pretrained = pretrained or bool(kwargs)
    return timm.create_model(
        backbone, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs
    )


def local_weights(pretrained_path: str | None, *, origin: str | None = None) -> dict:
    """timm keyword arguments that load a local weights file (``{}`` when there is none).

    timm adapts the stem to ``in_chans`` and drops a head of another size, as for hub weights.
    """
    if not pretrained_path:
        return {}
    path = Path(pretrained_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"weights file {str(path)!r} does not exist; give the path of a .safetensors or .pth file",
            origin=origin,
            field="pretrained_path",
        )
    return {"pretrained_cfg_overlay": {"file": str(path)}}


def check_backbone(backbone: str, *, origin: str | None = None, field: str = "backbone") -> None:
    """Fail with close timm names when ``backbone`` is not one timm can build."""
    import difflib

    import timm

    if timm.is_model(backbone):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(backbone, names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else "see timm.list_models() for valid names"
    raise ConfigError(f"unknown timm backbone {backbone!r}; {hint}", origin=origin, field=field)
