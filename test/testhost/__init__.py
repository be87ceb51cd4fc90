"""Build, cache, boot and drive Debian test hosts for the webarch formula (systemd-nspawn).

from testhost import ensure_image, Host
image = ensure_image("bookworm")
with Host("wa-t1", image, formula_dir=Path("/work/main")) as host:
    host.run(["id"], check=True)
"""

from .host import Host, HostError
from .image import ensure_image, image_packages

__all__ = ["Host", "HostError", "ensure_image", "image_packages"]
