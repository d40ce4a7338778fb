"""The admin console at ``/admin``: one module per page, assembled by ``blocks.build_admin``."""

from ui.admin.blocks import ADMIN_CSS, build_admin

__all__ = ["ADMIN_CSS", "build_admin"]
